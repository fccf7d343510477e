"""The Store contract, run against every backend (a local folder and SeaweedFS S3)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from character.errors import InvalidInput, NotFound, StoreUnavailable
from character.store import LocalStore, S3Store, Store
from character.store._shared import ABSENT, TMP_PREFIX, Conflict, SharedStore, check_record_key
from character.store.base import Manifest
from character.store.datasets import read_dataset, write_dataset


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> SharedStore:
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    return request.getfixturevalue("s3_store")  # type: ignore[no-any-return]


def make_tree(root: Path, seed: int = 0) -> Path:
    """A nested folder with binary files, an empty file and a dotfile."""
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "weights.bin").write_bytes(os.urandom(300_000) + bytes([seed]))
    (root / "sub" / "all_bytes.bin").write_bytes(bytes(range(256)) * 4)
    (root / "sub" / "deeper" / "empty").write_bytes(b"")
    (root / ".gitattributes").write_text("*.bin binary\n")
    return root


def read_tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def fail_on_manifest(store: SharedStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulate a crash just before the commit marker goes up."""
    original: Callable[[str, bytes], bool] = store._create_bytes  # the manifest's conditional create

    def create_bytes(key: str, data: bytes) -> bool:
        if key.endswith("manifest.json"):
            raise StoreUnavailable("simulated failure writing the manifest")
        return original(key, data)

    monkeypatch.setattr(store, "_create_bytes", create_bytes)


def test_round_trip_nested_binary(store: SharedStore, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    assert not store.has("adapter", "k1")
    ref = store.put_dir("adapter", "k1", src, meta={"rows": 3})
    assert store.has("adapter", "k1")
    folder = store.materialize("adapter", "k1")
    assert read_tree(folder) == read_tree(src)
    manifest = store.manifest("adapter", "k1")
    assert (manifest.kind, manifest.key, manifest.meta) == ("adapter", "k1", {"rows": 3})
    assert ref.content_digest == manifest.content_digest
    assert set(manifest.files) == {"weights.bin", "sub/all_bytes.bin", "sub/deeper/empty", ".gitattributes"}
    # Materializing again gives the same verified folder.
    assert store.materialize("adapter", "k1") == folder


def test_interrupted_write_is_invisible(
    store: SharedStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = make_tree(tmp_path / "first", seed=1)
    ref1 = store.put_dir("dataset", "done", first)
    fail_on_manifest(store, monkeypatch)
    with pytest.raises(StoreUnavailable):
        store.put_dir("dataset", "half", make_tree(tmp_path / "second", seed=2))
    # A committed artifact is never rewritten, even when asked with other content.
    assert store.put_dir("dataset", "done", tmp_path / "second") == ref1
    monkeypatch.undo()

    assert not store.has("dataset", "half")
    assert [m.key for m in store.list("dataset")] == ["done"]
    with pytest.raises(NotFound, match="done"):
        store.manifest("dataset", "half")
    with pytest.raises(NotFound):
        store.materialize("dataset", "half")
    assert store.manifest("dataset", "done").content_digest == ref1.content_digest
    assert read_tree(store.materialize("dataset", "done")) == read_tree(first)

    # Writing the unfinished artifact again simply completes it.
    store.put_dir("dataset", "half", tmp_path / "second")
    assert read_tree(store.materialize("dataset", "half")) == read_tree(tmp_path / "second")
    assert [m.key for m in store.list("dataset")] == ["done", "half"]


def test_list_is_per_kind(store: SharedStore, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    store.put_dir("dataset", "a", src)
    store.put_dir("report", "b", src)
    assert [m.key for m in store.list("dataset")] == ["a"]
    assert [m.key for m in store.list("report")] == ["b"]
    assert store.list("model") == []


def test_records_overwrite_and_list_by_prefix(store: SharedStore) -> None:
    assert store.get_record("runs/r1") is None
    store.put_record("runs/r1", {"state": "pending", "n": 1})
    store.put_record("runs/r1", {"state": "running"})
    assert store.get_record("runs/r1") == {"state": "running"}
    store.put_record("runs/r2", {"state": "pending"})
    store.put_record("runs/r1/stages/sft", {"state": "succeeded"})
    store.put_record("other", {})
    assert store.list_records("runs/") == ["runs/r1", "runs/r1/stages/sft", "runs/r2"]
    assert store.list_records("runs/r2") == ["runs/r2"]
    assert store.list_records("") == ["other", "runs/r1", "runs/r1/stages/sft", "runs/r2"]
    assert store.list_records("nothing/") == []


def test_failed_record_write_keeps_old_value(store: SharedStore, monkeypatch: pytest.MonkeyPatch) -> None:
    store.put_record("runs/r1", {"v": 1})

    def put_bytes(key: str, data: bytes) -> None:
        raise StoreUnavailable("simulated")

    monkeypatch.setattr(store, "_put_bytes", put_bytes)
    with pytest.raises(StoreUnavailable):
        store.put_record("runs/r1", {"v": 2})
    monkeypatch.undo()
    assert store.get_record("runs/r1") == {"v": 1}


def test_corrupted_file_is_detected(store: SharedStore, tmp_path: Path) -> None:
    store.put_dir("model", "k1", make_tree(tmp_path / "src"))
    store._put_bytes(store._files_prefix(store.manifest("model", "k1")) + "sub/all_bytes.bin", b"tampered")
    with pytest.raises(InvalidInput, match=r"sub/all_bytes\.bin") as err:
        store.materialize("model", "k1")
    assert "corrupted" in str(err.value) and err.value.where


@pytest.mark.parametrize(
    ("kind", "key"),
    [("..", "k"), ("dataset", ".."), ("dataset", "../x"), ("dataset", "/abs"), ("data set", "k"),
     ("dataset", ""), ("dataset", "a/b"), ("dataset", ".hidden")],
)  # fmt: skip
def test_invalid_artifact_names_are_refused(store: Store, tmp_path: Path, kind: str, key: str) -> None:
    src = make_tree(tmp_path / "src")
    with pytest.raises(InvalidInput):
        store.put_dir(kind, key, src)
    with pytest.raises(InvalidInput):
        store.has(kind, key)


@pytest.mark.parametrize("key", ["../x", "/runs/a", "runs//a", "runs/../a", "runs/a b", "", "runs/"])
def test_invalid_record_keys_are_refused(store: Store, key: str) -> None:
    with pytest.raises(InvalidInput):
        store.put_record(key, {})
    with pytest.raises(InvalidInput):
        store.get_record(key)


@pytest.mark.parametrize("prefix", ["../", "/runs", "runs/../x"])
def test_invalid_record_prefixes_are_refused(store: Store, prefix: str) -> None:
    with pytest.raises(InvalidInput):
        store.list_records(prefix)


def test_dataset_helpers(store: Store) -> None:
    rows = [{"prompt": f"p{i}", "chosen": "a", "rejected": "b"} for i in range(3)]
    write_dataset(store, "dataset", "pairs", rows, meta={"stage": "distill"})
    assert read_dataset(store, "dataset", "pairs") == rows
    assert store.manifest("dataset", "pairs").meta["rows"] == 3


TREE_FILES = 4  # make_tree's files


@pytest.mark.parametrize("fail_at", [*range(TREE_FILES), "manifest"])
def test_a_write_interrupted_at_any_file_is_invisible(
    store: SharedStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail_at: int | str
) -> None:
    """Whichever upload fails (any file, or the manifest), readers see no artifact, and writing
    it again gives exactly the new content."""
    src = make_tree(tmp_path / "src")
    put_file, create_bytes = store._put_file, store._create_bytes
    uploads: list[str] = []

    def failing_put_file(key: str, path: Path) -> None:
        if len(uploads) == fail_at:
            raise StoreUnavailable(f"simulated crash uploading {key}")
        uploads.append(key)
        put_file(key, path)

    def failing_create_bytes(key: str, data: bytes) -> bool:
        if fail_at == "manifest":
            raise StoreUnavailable(f"simulated crash writing {key}")
        return create_bytes(key, data)

    monkeypatch.setattr(store, "_put_file", failing_put_file)
    monkeypatch.setattr(store, "_create_bytes", failing_create_bytes)
    with pytest.raises(StoreUnavailable):
        store.put_dir("model", "k", src)
    monkeypatch.undo()

    assert not store.has("model", "k")
    assert store.list("model") == []
    with pytest.raises(NotFound):
        store.materialize("model", "k")
    store.put_dir("model", "k", src)
    assert read_tree(store.materialize("model", "k")) == read_tree(src)


def test_files_are_uploaded_before_the_manifest(store: SharedStore, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The manifest is the commit marker: when it appears, every file it lists is there."""
    seen: list[bool] = []
    create_bytes = store._create_bytes

    def check_then_create(key: str, data: bytes) -> bool:
        manifest = Manifest.model_validate_json(data)
        prefix = store._files_prefix(manifest)
        seen.extend(store._exists(prefix + rel) for rel in manifest.files)
        return create_bytes(key, data)

    monkeypatch.setattr(store, "_create_bytes", check_then_create)
    store.put_dir("model", "k", make_tree(tmp_path / "src"))
    assert seen == [True] * TREE_FILES


def test_a_same_size_corruption_is_refused_on_read(store: SharedStore, tmp_path: Path) -> None:
    """Sizes match, so only the sha256 check can tell: the read is refused, naming the file."""
    src = make_tree(tmp_path / "src")
    store.put_dir("model", "k1", src)
    original = (src / "sub" / "all_bytes.bin").read_bytes()
    flipped = bytes([original[0] ^ 0xFF]) + original[1:]
    assert len(flipped) == len(original)
    store._put_bytes(store._files_prefix(store.manifest("model", "k1")) + "sub/all_bytes.bin", flipped)
    if isinstance(store, S3Store):  # the download cache would otherwise not be refetched
        shutil.rmtree(store.cache_root(), ignore_errors=True)
    with pytest.raises(InvalidInput, match=r"sub/all_bytes\.bin: sha256 differs") as err:
        store.materialize("model", "k1")
    assert "corrupted" in str(err.value) and err.value.where
    if isinstance(store, S3Store):  # the refused download is not left behind
        assert list((store.cache_root() / "artifacts" / "model").iterdir()) == []


def test_a_missing_or_extra_file_is_refused_on_read(store: SharedStore, tmp_path: Path) -> None:
    store.put_dir("model", "k1", make_tree(tmp_path / "src"))
    files = store._files_prefix(store.manifest("model", "k1"))
    store._delete(files + "sub/deeper/empty")
    if isinstance(store, S3Store):
        shutil.rmtree(store.cache_root(), ignore_errors=True)
    with pytest.raises((InvalidInput, NotFound), match=r"sub/deeper/empty"):
        store.materialize("model", "k1")


def test_object_primitives_keep_their_contract(store: SharedStore, tmp_path: Path) -> None:
    """What the shared logic relies on from every backend: absent objects read as None (or
    NotFound for a copy), deleting one is fine, a create never replaces, a conditional replace
    needs the current version (the MD5 of the bytes, as S3's ETag)."""
    obj, absent = "records/a.json", "records/none.json"
    assert store._get_bytes(absent) is None and store._get_versioned(absent) is None
    assert not store._exists(absent)
    store._delete(absent)
    assert store._create_bytes(obj, b"one")
    assert not store._create_bytes(obj, b"two")
    assert store._get_versioned(obj) == (b"one", hashlib.md5(b"one").hexdigest())
    assert not store._replace_bytes_if(obj, b"x", hashlib.md5(b"other").hexdigest())
    assert store._replace_bytes_if(obj, b"three", hashlib.md5(b"one").hexdigest())
    assert store._get_bytes(obj) == b"three"
    assert not store._replace_bytes_if(absent, b"x", hashlib.md5(b"three").hexdigest())
    assert store._get_bytes(absent) is None
    store._get_file(obj, tmp_path / "copy")
    assert (tmp_path / "copy").read_bytes() == b"three"
    with pytest.raises(NotFound, match=r"records/none\.json"):
        store._get_file(absent, tmp_path / "nothing")
    store._delete(obj)
    assert not store._exists(obj) and store._get_bytes(obj) is None


def test_conditional_record_writes(store: SharedStore) -> None:
    first = store.put_record("runs/r", {"n": 1}, if_version=ABSENT)
    with pytest.raises(Conflict, match="record runs/r was changed by another writer"):
        store.put_record("runs/r", {"n": 9}, if_version=ABSENT)
    assert store.get_record_versioned("runs/r") == ({"n": 1}, first)
    second = store.put_record("runs/r", {"n": 2}, if_version=first)
    assert second != first
    with pytest.raises(Conflict):
        store.put_record("runs/r", {"n": 3}, if_version=first)  # a stale version loses
    assert store.get_record_versioned("runs/r") == ({"n": 2}, second)
    assert store.put_record("runs/r", {"n": 4}) == store.get_record_versioned("runs/r")[1]  # type: ignore[index]
    assert store.get_record_versioned("runs/none") is None


@pytest.mark.parametrize(("data", "problem"), [(b"{not json", "record is not JSON"),
                                                (b"[1, 2]", "record is not a JSON object")])
def test_unreadable_records_are_refused_naming_them(store: SharedStore, data: bytes, problem: str) -> None:
    store._put_bytes("records/runs/bad.json", data)
    where = f"{store.uri}/records/runs/bad.json"
    for read in (store.get_record, store.get_record_versioned):
        with pytest.raises(InvalidInput, match=f"^{re.escape(where)}: {problem}") as err:
            read("runs/bad")
        assert err.value.where == where


def test_unwritable_records_are_refused() -> None:
    with pytest.raises(InvalidInput, match="record is not JSON") as err:
        LocalStore("/nonexistent-never-written").put_record("runs/r", {"x": float("nan")})
    assert err.value.where == "record runs/r"


@pytest.mark.parametrize(("key", "prefix", "what"), [(3, False, "record key"), ("../x", False, "record key"),
                                                     (None, True, "record prefix"), ("a//", True, "record prefix")])
def test_bad_record_keys_are_named_in_the_error(key: object, prefix: bool, what: str) -> None:
    with pytest.raises(InvalidInput, match=f"^{what}: invalid {re.escape(what)} {re.escape(repr(key))}") as err:
        check_record_key(key, prefix=prefix)  # type: ignore[arg-type]
    assert err.value.where == what


def test_listing_skips_temp_files_and_stops_prefixes_mid_name(store: SharedStore) -> None:
    for key in ("top", "runs/r1", "runs/r12", "runs/r1/stages/sft", "runs/r2"):
        store.put_record(key, {})
    store._put_bytes(f"records/runs/{TMP_PREFIX}half.json", b"{}")  # a write in progress
    assert store.list_records("runs/r1") == ["runs/r1", "runs/r1/stages/sft", "runs/r12"]
    assert store.list_records("runs/r1/stages/s") == ["runs/r1/stages/sft"]
    assert store.list_records("t") == ["top"]
    assert store.list_records("") == ["runs/r1", "runs/r1/stages/sft", "runs/r12", "runs/r2", "top"]


def test_an_empty_artifact_round_trips(store: SharedStore, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    ref = store.put_dir("report", "nothing", tmp_path / "empty")
    folder = store.materialize("report", "nothing")
    assert folder.is_dir() and list(folder.iterdir()) == []
    assert store.materialize("report", "nothing") == folder
    assert ref.content_digest == hashlib.sha256(b"").hexdigest()


def test_a_missing_artifact_names_the_store_and_what_is_there(store: SharedStore, tmp_path: Path) -> None:
    with pytest.raises(NotFound, match=f"no artifact model/k in {re.escape(store.uri)}; no model artifacts"):
        store.manifest("model", "k")
    for i in range(12):
        store.put_dir("model", f"k{i:02d}", make_tree(tmp_path / f"src{i}", seed=i))
    with pytest.raises(NotFound, match=r"stored model artifacts: k00, k01, .*, k09 \.\.\.$"):
        store.manifest("model", "k")
