"""The backend-independent store logic (store/_shared.py), on the local backend: which names
and file paths are accepted, what a manifest read back must satisfy, how corruption and
missing artifacts are reported, and the form records are stored in. The same contract on
S3 is in tests/integration/store/test_backends.py."""

from __future__ import annotations

import hashlib
import json
import re
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from character.errors import InvalidInput, NotFound
from character.store import LocalStore
from character.store._shared import check_name, check_record_key, check_relpath, corrupted
from character.store.base import Manifest

KEY_RULE = ("'/'-separated names of letters, digits, '.', '_' or '-', each starting with a letter or digit "
            "(no '..', no leading '/')")


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def one_file(root: Path, name: str = "f.txt", text: str = "x") -> Path:
    root.mkdir(parents=True)
    (root / name).write_text(text)
    return root


@pytest.mark.parametrize("name", ["a", "A.b_c-1", "0", "x" * 200])
def test_safe_names_are_accepted(name: str) -> None:
    assert check_name(name, "artifact key") == name


@pytest.mark.parametrize("name", ["", ".", "..", ".hidden", "-x", "a b", "a/b", "é", "x" * 201, 3, None])
def test_unsafe_names_are_refused_naming_what_and_the_value(name: object) -> None:
    with pytest.raises(InvalidInput) as err:
        check_name(name, "artifact kind")  # type: ignore[arg-type]
    assert err.value.where == "artifact kind"
    assert str(err.value) == (f"artifact kind: invalid artifact kind {name!r}: use letters, digits, '.', '_' or '-', "
                              "starting with a letter or digit")


def test_artifact_calls_name_the_part_that_is_wrong(store: LocalStore) -> None:
    for call in (lambda: store.has("bad kind", "k"), lambda: store.list("bad kind"),
                 lambda: store.manifest("bad kind", "k")):
        with pytest.raises(InvalidInput, match=r"^artifact kind: invalid artifact kind 'bad kind'") as err:
            call()
        assert err.value.where == "artifact kind"
    with pytest.raises(InvalidInput, match=r"^artifact key: invalid artifact key 'bad key'") as err:
        store.has("dataset", "bad key")
    assert err.value.where == "artifact key"


@pytest.mark.parametrize("key", ["runs/r1", "other", "runs/r1/stages/sft", "a.b/c_d-e"])
def test_record_keys_are_accepted(key: str) -> None:
    assert check_record_key(key) == key


@pytest.mark.parametrize("key", ["", "runs/", "/runs/a", "runs//a", "runs/../a", "runs/a b", "runs/.a", "..", "r1/"])
def test_record_keys_are_refused_with_the_rule(key: str) -> None:
    """Without prefix=True (the default), a key is whole: no empty, trailing or unsafe segment."""
    with pytest.raises(InvalidInput) as err:
        check_record_key(key)
    assert str(err.value) == f"record key: invalid record key {key!r}: {KEY_RULE}"
    assert err.value.where == "record key"


@pytest.mark.parametrize("prefix", ["", "r", "runs", "runs/", "runs/r1/", "runs/r1/st", "a/b/c/"])
def test_record_prefixes_may_be_empty_end_with_a_slash_or_stop_mid_name(prefix: str) -> None:
    assert check_record_key(prefix, prefix=True) == prefix


@pytest.mark.parametrize("prefix", ["/", "../", "/runs", "runs//", "a//", "runs/../", "runs/a b/", "runs/a b",
                                    "runs/../x", "a/b c/d/"])
def test_record_prefixes_are_refused_with_the_rule(prefix: str) -> None:
    with pytest.raises(InvalidInput) as err:
        check_record_key(prefix, prefix=True)
    assert str(err.value) == f"record prefix: invalid record prefix {prefix!r}: {KEY_RULE}"
    assert err.value.where == "record prefix"


@pytest.mark.parametrize(("key", "prefix"), [(3, False), (None, True)])
def test_a_record_key_that_is_not_text_is_refused_naming_it(key: object, prefix: bool) -> None:
    what = "record prefix" if prefix else "record key"
    with pytest.raises(InvalidInput) as err:
        check_record_key(key, prefix=prefix)  # type: ignore[arg-type]
    assert (str(err.value), err.value.where) == (f"{what}: invalid {what} {key!r}", what)


@pytest.mark.parametrize("path", ["f", ".gitattributes", "a/b.txt", "a/.hidden", "with space.txt", "ü/ß.bin",
                                  "a/b/c/d"])
def test_file_paths_in_an_artifact_are_accepted(path: str) -> None:
    assert check_relpath(path, where="w") == path


@pytest.mark.parametrize("path", ["", "/abs", "a/", "a//b", "./a", "a/./b", "..", "a/../b", "a\\b", "a\x01b",
                                  "a\x1fb", "\n", ".oct-tmp-x", "a/.oct-tmp-y/b"])
def test_file_paths_that_escape_or_hide_are_refused(path: str) -> None:
    """Manifests read back from S3 decide where files are written: no traversal, no absolute
    or backslash paths, no control characters, no names the backends use for temp files."""
    with pytest.raises(InvalidInput) as err:
        check_relpath(path, where="the manifest")
    assert (str(err.value), err.value.where) == (f"the manifest: invalid file path {path!r} in artifact",
                                                 "the manifest")


def test_a_source_file_with_a_reserved_name_is_refused_naming_it(store: LocalStore, tmp_path: Path) -> None:
    src = one_file(tmp_path / "src", ".oct-tmp-half")
    with pytest.raises(InvalidInput) as err:
        store.put_dir("dataset", "k", src)
    assert err.value.where == str(src / ".oct-tmp-half")
    assert not store.has("dataset", "k")


def test_a_source_that_is_not_a_folder_is_refused(store: LocalStore, tmp_path: Path) -> None:
    src = tmp_path / "file.txt"
    src.write_text("x")
    with pytest.raises(InvalidInput) as err:
        store.put_dir("dataset", "k", src)
    assert (str(err.value), err.value.where) == (f"{src}: {src} is not a folder", str(src))
    with pytest.raises(InvalidInput, match="is not a folder"):
        store.put_dir("dataset", "k", tmp_path / "missing")


def test_the_manifest_lists_every_file_with_its_hash_and_size(store: LocalStore, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "a" / "b").mkdir(parents=True)
    (src / "a" / "b" / "deep.bin").write_bytes(b"\x00" * 10)
    (src / "top.txt").write_text("hello")
    (src / "empty").write_bytes(b"")
    files = store.manifest("model", store.put_dir("model", "k", src).key).files
    assert {rel: (e.sha256, e.size) for rel, e in files.items()} == {
        "a/b/deep.bin": (hashlib.sha256(b"\x00" * 10).hexdigest(), 10),
        "top.txt": (hashlib.sha256(b"hello").hexdigest(), 5),
        "empty": (hashlib.sha256(b"").hexdigest(), 0),
    }


def test_a_manifest_records_its_creation_time_in_utc(store: LocalStore, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "JST-9")  # a machine clock nine hours ahead of UTC (POSIX form: no tzdata needed)
    time.tzset()
    try:
        store.put_dir("dataset", "k", one_file(tmp_path / "src"))
    finally:
        monkeypatch.undo()
        time.tzset()
    created = store.manifest("dataset", "k").created_at
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", created)
    age = datetime.now(UTC) - datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert 0 <= age.total_seconds() < 120


def _manifest_object(store: LocalStore, kind: str, key: str) -> tuple[str, dict[str, object]]:
    obj = f"artifacts/{kind}/{key}/manifest.json"
    data = store._get_bytes(obj)
    assert data is not None
    return obj, json.loads(data)


@pytest.mark.parametrize(("edit", "problem"), [
    (lambda m: {**m, "files": "not a mapping"}, r"unreadable manifest: "),
    (lambda m: {**m, "key": "other"}, r"manifest names dataset/other$"),
    (lambda m: {**m, "kind": "model"}, r"manifest names model/k$"),
    (lambda m: {**m, "files_root": "../elsewhere"}, r"invalid files_root '\.\./elsewhere'$"),
    (lambda m: {**m, "files_root": "files-xyz"}, r"invalid files_root 'files-xyz'$"),
    (lambda m: {**m, "files": {"../up.txt": m["files"]["f.txt"]}}, r"invalid file path '\.\./up\.txt' in artifact$"),
    (lambda m: {**m, "content_digest": "0" * 64}, r"content_digest does not match the file list$"),
])  # fmt: skip
def test_a_manifest_that_does_not_hold_is_refused_naming_it(store: LocalStore, tmp_path: Path, edit: object,
                                                            problem: str) -> None:
    """A manifest read back is checked before anything trusts it: it names its own artifact,
    its files folder and paths are safe, and its digest is that of its file list."""
    store.put_dir("dataset", "k", one_file(tmp_path / "src"))
    obj, manifest = _manifest_object(store, "dataset", "k")
    store._put_bytes(obj, json.dumps(edit(manifest)).encode())  # type: ignore[operator]
    where = f"{store.uri}/{obj}"
    for read in (lambda: store.manifest("dataset", "k"), lambda: store.materialize("dataset", "k"),
                 lambda: store.list("dataset")):
        with pytest.raises(InvalidInput, match=f"^{re.escape(where)}: {problem}") as err:
            read()
        assert err.value.where == where


def test_a_legacy_files_folder_is_still_read(store: LocalStore, tmp_path: Path) -> None:
    """Artifacts written before per-writer folders keep their files under `files`."""
    store.put_dir("dataset", "k", one_file(tmp_path / "src", text="legacy"))
    obj, manifest = _manifest_object(store, "dataset", "k")
    base = store.root / "artifacts" / "dataset" / "k"
    (base / str(manifest["files_root"])).rename(base / "files")
    store._put_bytes(obj, json.dumps({**manifest, "files_root": "files"}).encode())
    assert (store.materialize("dataset", "k") / "f.txt").read_text() == "legacy"


@pytest.mark.parametrize(("count", "shown"), [
    (1, "p0"),
    (5, "p0; p1; p2; p3; p4"),
    (6, "p0; p1; p2; p3; p4; and 1 more"),
    (8, "p0; p1; p2; p3; p4; and 3 more"),
])  # fmt: skip
def test_a_corruption_report_shows_five_problems_and_counts_the_rest(count: int, shown: str) -> None:
    manifest = Manifest(kind="model", key="k", content_digest="d", files={}, created_at="t")
    err = corrupted(manifest, "somewhere", [f"p{i}" for i in range(count)])
    assert str(err) == f"somewhere: artifact model/k is corrupted ({shown}); delete it and run the stage again"
    assert err.where == "somewhere"


def test_every_kind_of_damage_is_named_in_the_report(store: LocalStore, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("gone.txt", "grown.txt", "same_size.txt"):
        (src / name).write_text("0123456789")
    folder = store.materialize("dataset", store.put_dir("dataset", "k", src).key)
    (folder / "gone.txt").unlink()
    (folder / "grown.txt").write_text("0123456789+")
    (folder / "same_size.txt").write_text("9876543210")
    (folder / "new.txt").write_text("x")
    with pytest.raises(InvalidInput) as err:
        store.materialize("dataset", "k")
    assert str(err.value) == (
        f"{folder}: artifact dataset/k is corrupted (gone.txt: missing; grown.txt: 11 bytes, the manifest says 10; "
        "same_size.txt: sha256 differs from the manifest; new.txt: not in the manifest); "
        "delete it and run the stage again")


def test_an_extra_file_in_a_subfolder_is_reported(store: LocalStore, tmp_path: Path) -> None:
    folder = store.materialize("dataset", store.put_dir("dataset", "k", one_file(tmp_path / "src")).key)
    (folder / "sub").mkdir()
    (folder / "sub" / "extra.bin").write_bytes(b"x")
    with pytest.raises(InvalidInput, match=r"\(sub/extra\.bin: not in the manifest\)"):
        store.materialize("dataset", "k")


@pytest.mark.parametrize(("stored", "shown"), [(10, "k00, k01, k02, k03, k04, k05, k06, k07, k08, k09"),
                                               (11, "k00, k01, k02, k03, k04, k05, k06, k07, k08, k09 ...")])
def test_a_missing_artifact_lists_up_to_ten_stored_keys(store: LocalStore, tmp_path: Path, stored: int,
                                                        shown: str) -> None:
    src = one_file(tmp_path / "src")
    for i in range(stored):
        store.put_dir("model", f"k{i:02d}", src)
    store.put_dir("dataset", "other-kind", src)
    with pytest.raises(NotFound) as err:
        store.manifest("model", "absent")
    assert str(err.value) == f"no artifact model/absent in {store.uri}; stored model artifacts: {shown}"


def test_only_committed_artifacts_with_safe_names_are_listed(store: LocalStore, tmp_path: Path) -> None:
    """Objects that are not a committed manifest (a stray file, an uncommitted upload, a folder
    another tool made under an unsafe name) are not artifacts."""
    store.put_dir("model", "real", one_file(tmp_path / "src"))
    store._put_bytes("artifacts/model/stray.bin", b"x")
    store._put_bytes("artifacts/model/half/files-0123456789abcdef/w.bin", b"x")
    store._put_bytes("artifacts/model/notes/readme.txt", b"x")
    store._put_bytes("artifacts/model/bad name/manifest.json", b"{}")
    assert [m.key for m in store.list("model")] == ["real"]
    with pytest.raises(NotFound, match=r"stored model artifacts: real$"):
        store.manifest("model", "half")


def test_a_loser_of_the_commit_race_gets_the_winners_artifact(store: LocalStore, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Two writers of one key: the one whose manifest lands second returns the first one's ref
    and removes its own files, keeping the winner's."""
    winner_src = one_file(tmp_path / "winner", text="first")
    create_bytes = store._create_bytes

    def another_writer_commits_first(key: str, data: bytes) -> bool:
        monkeypatch.setattr(store, "_create_bytes", create_bytes)
        store.put_dir("dataset", "k", winner_src)
        return create_bytes(key, data)

    monkeypatch.setattr(store, "_create_bytes", another_writer_commits_first)
    ref = store.put_dir("dataset", "k", one_file(tmp_path / "loser", text="second"))
    manifest = store.manifest("dataset", "k")
    assert ref == store.put_dir("dataset", "k", winner_src)
    assert ref.content_digest == manifest.content_digest
    folder = store.materialize("dataset", "k")
    assert (folder / "f.txt").read_text() == "first"
    base = "artifacts/dataset/k/"
    assert sorted(store._list(base)) == [f"{base}{manifest.files_root}/f.txt", f"{base}manifest.json"]


def test_meta_is_stored_as_given(store: LocalStore, tmp_path: Path) -> None:
    src = one_file(tmp_path / "src")
    store.put_dir("dataset", "with", src, meta={"rows": 3, "stage": "distill"})
    store.put_dir("dataset", "without", src)
    assert store.manifest("dataset", "with").meta == {"rows": 3, "stage": "distill"}
    assert store.manifest("dataset", "without").meta == {}


def test_records_are_stored_as_sorted_utf8_json(store: LocalStore) -> None:
    """Equal values give equal bytes (and versions) whatever their key order, and text is kept
    as UTF-8 (records are read by people with cat and kubectl too)."""
    first = store.put_record("runs/a", {"b": 1, "a": {"y": 2, "x": "Zoë"}})
    second = store.put_record("runs/b", {"a": {"x": "Zoë", "y": 2}, "b": 1})
    assert first == second
    assert store._get_bytes("records/runs/a.json") == store._get_bytes("records/runs/b.json")
    data = store._get_bytes("records/runs/a.json")
    assert data is not None and "Zoë".encode() in data
    assert json.loads(data) == {"a": {"x": "Zoë", "y": 2}, "b": 1}


def test_only_json_objects_are_listed_as_records(store: LocalStore) -> None:
    store.put_record("runs/r1", {})
    store._put_bytes("records/runs/notes.txt", b"x")
    store._put_bytes("records/runs/bad name.json", b"{}")
    assert store.list_records("runs/") == ["runs/r1"]
