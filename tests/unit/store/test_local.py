"""LocalStore specifics: atomic object writes, the stored folder as the materialized one,
and open_store's URI handling. Behaviour shared with S3 is in tests/integration/store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from character.errors import InvalidInput, NotFound
from character.store import LocalStore, S3Store, open_store
from character.store._shared import TMP_PREFIX


def _tree(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "a.bin").write_bytes(b"\x00\x01\xff" * 100)
    (root / "sub" / "b.txt").write_text("hello")
    return root


def test_materialize_is_the_stored_folder(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    store.put_dir("dataset", "k1", _tree(tmp_path / "src"))
    folder = store.materialize("dataset", "k1")
    assert folder.parent == tmp_path / "store" / "artifacts" / "dataset" / "k1"
    assert folder.name == store.manifest("dataset", "k1").files_root
    assert (folder / "sub" / "b.txt").read_text() == "hello"
    manifest = tmp_path / "store" / "artifacts" / "dataset" / "k1" / "manifest.json"
    assert manifest.is_file()


def test_failed_replace_keeps_old_record_and_leaves_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalStore(tmp_path)
    store.put_record("runs/r1", {"v": 1})

    def boom(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        store.put_record("runs/r1", {"v": 2})
    monkeypatch.undo()
    assert store.get_record("runs/r1") == {"v": 1}
    assert [p.name for p in (tmp_path / "records" / "runs").iterdir()] == ["r1.json"]


def test_extra_file_in_stored_folder_is_reported(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    store.put_dir("adapter", "k1", _tree(tmp_path / "src"))
    folder = store.materialize("adapter", "k1")
    (folder / "intruder.txt").write_text("x")
    with pytest.raises(InvalidInput, match=r"intruder\.txt: not in the manifest") as err:
        store.materialize("adapter", "k1")
    assert err.value.where == str(folder)


def test_rewrite_of_unfinished_artifact_drops_stale_files(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    stale = tmp_path / "store" / "artifacts" / "dataset" / "k1" / "files" / "old.txt"
    stale.parent.mkdir(parents=True)
    stale.write_text("from a crashed write")
    src = tmp_path / "src"
    src.mkdir()
    (src / "new.txt").write_text("new")
    store.put_dir("dataset", "k1", src)
    assert sorted(p.name for p in store.materialize("dataset", "k1").iterdir()) == ["new.txt"]


def test_open_store_local_paths(tmp_path: Path) -> None:
    assert isinstance(open_store(str(tmp_path)), LocalStore)
    store = open_store(f"file://{tmp_path}/x")
    assert isinstance(store, LocalStore) and store.root == tmp_path / "x"
    with pytest.raises(InvalidInput, match="unsupported store URI"):
        open_store("gs://bucket/x")
    with pytest.raises(InvalidInput):
        open_store("")


def test_open_store_s3_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "OCT_S3_ENDPOINT",
        "AWS_ENDPOINT_URL",
        "OCT_S3_ACCESS_KEY",
        "AWS_ACCESS_KEY_ID",
        "OCT_S3_SECRET_KEY",
        "AWS_SECRET_ACCESS_KEY",
        "OCT_S3_SECURE",
        "OCT_S3_REGION",
    ):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(InvalidInput, match="OCT_S3_ENDPOINT"):
        open_store("s3://bucket/p")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "https://s3.example.org")
    with pytest.raises(InvalidInput, match="OCT_S3_ACCESS_KEY"):
        open_store("s3://bucket/p")
    monkeypatch.setenv("OCT_S3_ACCESS_KEY", "ak")
    with pytest.raises(InvalidInput, match="OCT_S3_SECRET_KEY"):
        open_store("s3://bucket/p")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "sk")
    store = open_store("s3://bucket/runs/a/")
    assert isinstance(store, S3Store)
    assert (store.uri, store.endpoint, store.secure) == ("s3://bucket/runs/a", "https://s3.example.org", True)
    monkeypatch.setenv("OCT_S3_ENDPOINT", "127.0.0.1:8333")
    monkeypatch.setenv("OCT_S3_SECURE", "maybe")
    with pytest.raises(InvalidInput, match="OCT_S3_SECURE"):
        open_store("s3://bucket")
    monkeypatch.setenv("OCT_S3_SECURE", "false")
    assert open_store("s3://bucket").endpoint == "http://127.0.0.1:8333"  # type: ignore[attr-defined]
    with pytest.raises(InvalidInput, match="bucket"):
        open_store("s3://UPPER_case")


def test_the_store_folder_is_absolute_and_named_in_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert LocalStore("~/store").root == tmp_path / "home" / "store"
    store = LocalStore("rel")
    assert (store.root, store.uri) == (tmp_path / "rel", str(tmp_path / "rel"))
    with pytest.raises(NotFound, match=f"^no artifact model/k in {tmp_path / 'rel'}; "):
        store.manifest("model", "k")
    with pytest.raises(NotFound, match=f"^no object records/none.json in {tmp_path / 'rel'}$"):
        store._get_file("records/none.json", tmp_path / "copy")


def test_writes_in_progress_hide_no_committed_record(tmp_path: Path) -> None:
    """Temp files of unfinished writes sit beside committed records in one folder; listing
    skips each of them and nothing else, whatever order the folder lists them in."""
    store = LocalStore(tmp_path)
    keys = [f"runs/r{i:02d}" for i in range(20)]
    for key in keys:
        store.put_record(key, {})
    for i in range(5):
        (tmp_path / "records" / "runs" / f"{TMP_PREFIX}{i}-r.json").write_text("{")
    (tmp_path / "records" / "runs" / f"{TMP_PREFIX}dir").mkdir()
    (tmp_path / "records" / "runs" / f"{TMP_PREFIX}dir" / "x.json").write_text("{}")
    assert store.list_records("runs/") == keys


def test_file_names_with_spaces_round_trip(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "a dir").mkdir(parents=True)
    (src / "a dir" / "my file.txt").write_text("spaced")
    store = LocalStore(tmp_path / "store")
    store.put_dir("dataset", "k", src)
    assert (store.materialize("dataset", "k") / "a dir" / "my file.txt").read_text() == "spaced"
