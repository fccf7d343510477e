"""The Store contract, run against every backend (a local folder and SeaweedFS S3)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from character.errors import InvalidInput, NotFound, StoreUnavailable
from character.store import LocalStore, Store
from character.store._shared import SharedStore
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
    original: Callable[[str, bytes], None] = store._put_bytes

    def put_bytes(key: str, data: bytes) -> None:
        if key.endswith("manifest.json"):
            raise StoreUnavailable("simulated failure writing the manifest")
        original(key, data)

    monkeypatch.setattr(store, "_put_bytes", put_bytes)


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
    store._put_bytes("artifacts/model/k1/files/sub/all_bytes.bin", b"tampered")
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
