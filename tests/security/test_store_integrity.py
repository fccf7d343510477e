"""Integrity under retries: a retried stage racing the attempt it replaces leaves one consistent
artifact, and run records are written with optimistic concurrency (both backends: a local
folder and S3 on the SeaweedFS server)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from character.store._shared import SharedStore
from character.store.base import ABSENT, ArtifactRef, Conflict
from character.store.local import LocalStore


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> SharedStore:
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    return request.getfixturevalue("s3_store")  # type: ignore[no-any-return]


def tree(root: Path, text: str) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text(text * 1000)
    (root / "sub" / "b.txt").write_text(text)
    return root


@pytest.mark.attack("a stage retried while its first attempt still writes mixes two attempts' files")
def test_racing_attempts_leave_one_consistent_artifact(store: SharedStore, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The first attempt uploads one file, stalls (a slow or partitioned worker), and resumes
    after the retry has committed: its late files must not land in the committed artifact."""
    first, second = tree(tmp_path / "first", "old"), tree(tmp_path / "second", "new")
    stalled, resume = threading.Event(), threading.Event()
    original = store._put_file

    def put_file(key: str, path: Path) -> None:
        if str(path).startswith(str(first)) and not stalled.is_set():
            original(key, path)
            stalled.set()
            assert resume.wait(30)
            return
        original(key, path)

    monkeypatch.setattr(store, "_put_file", put_file)
    results: dict[str, ArtifactRef] = {}
    slow = threading.Thread(target=lambda: results.setdefault("first", store.put_dir("dataset", "k", first)))
    slow.start()
    assert stalled.wait(30)
    results["second"] = store.put_dir("dataset", "k", second)
    resume.set()
    slow.join(30)

    assert results["first"] == results["second"]  # the late attempt gets the committed artifact
    folder = store.materialize("dataset", "k")  # verified against the manifest: no mixed files
    assert (folder / "a.txt").read_text() == "new" * 1000
    assert (folder / "sub" / "b.txt").read_text() == "new"


@pytest.mark.attack("a stale writer overwrites a run record another writer changed")
def test_record_written_with_a_stale_version_is_refused(store: SharedStore) -> None:
    store.put_record("runs/r1", {"state": "running"}, if_version=ABSENT)
    found = store.get_record_versioned("runs/r1")
    assert found is not None
    record, version = found
    assert record == {"state": "running"}
    store.put_record("runs/r1", {"state": "cancelled"}, if_version=version)  # the controller that read it last
    with pytest.raises(Conflict):
        store.put_record("runs/r1", {"state": "succeeded"}, if_version=version)  # a stale one
    with pytest.raises(Conflict):
        store.put_record("runs/r1", {"state": "pending"}, if_version=ABSENT)
    assert store.get_record("runs/r1") == {"state": "cancelled"}
