"""S3Store specifics against a real SeaweedFS: errors people can act on, the download
cache, and identical digests across backends."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from character.errors import InvalidInput, StoreUnavailable
from character.store import LocalStore, S3Store, open_store
from character.store._shared import TMP_PREFIX
from minio import Minio

from tests.fixtures.network import closed_port
from tests.fixtures.s3 import S3Server

pytestmark = pytest.mark.s3


def tree(root: Path) -> Path:
    (root / "a" / "b").mkdir(parents=True)
    (root / "big.bin").write_bytes(os.urandom(6 * 1024 * 1024 + 17))  # > 5 MiB: a multipart upload
    (root / "a" / "b" / "c.bin").write_bytes(bytes(range(256)))
    (root / "a" / "note.txt").write_text("ünïcode\n")
    return root


def unique_bucket(stem: str) -> str:
    """A bucket no earlier session on the same server has touched."""
    return f"{stem}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def own_bucket(s3_server: S3Server) -> Iterator[str]:
    """A fresh bucket name, the bucket removed afterwards: the server may outlive this session
    (CI, mutation runs) and SeaweedFS fails writes once about a hundred buckets are left over."""
    bucket = unique_bucket("oct-own")
    yield bucket
    client = Minio(s3_server.endpoint.split("://")[1], s3_server.access_key, s3_server.secret_key,
                   secure=s3_server.endpoint.startswith("https"))
    with contextlib.suppress(Exception):
        for obj in client.list_objects(bucket, recursive=True):
            client.remove_object(bucket, obj.object_name)
        client.remove_bucket(bucket)


def test_same_content_digest_as_local(s3_store: S3Store, tmp_path: Path) -> None:
    src = tree(tmp_path / "src")
    local = LocalStore(tmp_path / "local")
    assert s3_store.put_dir("model", "m", src) == local.put_dir("model", "m", src)
    s3_folder = s3_store.materialize("model", "m")
    assert s3_folder.is_relative_to(tmp_path / "s3-cache" / s3_store.bucket / "t")
    for path in src.rglob("*"):
        if path.is_file():
            rel = path.relative_to(src)
            assert (s3_folder / rel).read_bytes() == path.read_bytes()
    assert s3_store.manifest("model", "m").files == local.manifest("model", "m").files


def test_cache_is_reused_and_repaired(
    s3_store: S3Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3_store.put_dir("adapter", "k", tree(tmp_path / "src"))
    folder = s3_store.materialize("adapter", "k")
    leftovers = [p.name for p in folder.parent.iterdir() if p.name != "k"]
    assert leftovers == []  # the temp download folder was renamed into place

    def no_download(key: str, dest: Path) -> None:
        raise AssertionError(f"downloaded {key} although the cache is sound")

    monkeypatch.setattr(s3_store, "_get_file", no_download)
    assert s3_store.materialize("adapter", "k") == folder
    monkeypatch.undo()

    (folder / "a" / "b" / "c.bin").write_bytes(b"bit rot")
    assert s3_store.materialize("adapter", "k") == folder
    assert (folder / "a" / "b" / "c.bin").read_bytes() == bytes(range(256))
    assert [p.name for p in folder.parent.iterdir()] == ["k"]  # neither the old copy nor the download is left


def test_open_store_from_env(s3_env: S3Server, own_bucket: str, tmp_path: Path,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCT_HOME", str(tmp_path / "home"))
    bucket = own_bucket
    store = open_store(f"s3://{bucket}/some/prefix")
    assert isinstance(store, S3Store)
    store.put_record("runs/x", {"ok": True})
    assert open_store(f"s3://{bucket}/some/prefix").get_record("runs/x") == {"ok": True}
    assert open_store(f"s3://{bucket}/other").get_record("runs/x") is None
    store.put_dir("dataset", "d", tree(tmp_path / "src"))
    cache = tmp_path / "home" / "cache" / "s3" / bucket / "some" / "prefix"
    assert store.materialize("dataset", "d").is_relative_to(cache)


def test_unreachable_endpoint_fails_fast(tmp_path: Path) -> None:
    port = closed_port()
    store = S3Store("oct-nowhere", "", f"127.0.0.1:{port}", "k", "s", cache_dir=tmp_path)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as err:
        store.has("dataset", "k")
    assert time.monotonic() - started < 15
    message = str(err.value)
    assert f"http://127.0.0.1:{port}" in message and "oct-nowhere" in message and "3 tries" in message


def test_wrong_credentials(s3_server: S3Server, s3_store: S3Store, tmp_path: Path) -> None:
    s3_store.put_record("runs/r", {"v": 1})
    wrong = S3Store(
        s3_store.bucket, "t", s3_server.endpoint, s3_server.access_key, "not-the-secret", cache_dir=tmp_path
    )
    with pytest.raises(StoreUnavailable, match="refused the credentials") as err:
        wrong.put_record("runs/r", {"v": 2})
    assert s3_server.endpoint in str(err.value) and s3_store.bucket in str(err.value)
    unknown = S3Store(s3_store.bucket, "t", s3_server.endpoint, "nobody", "x", cache_dir=tmp_path)
    with pytest.raises(StoreUnavailable, match="refused the credentials"):
        unknown.get_record("runs/r")
    assert s3_store.get_record("runs/r") == {"v": 1}


def test_missing_bucket_without_create(s3_server: S3Server, tmp_path: Path) -> None:
    store = S3Store(
        unique_bucket("oct-never-created"),
        "",
        s3_server.endpoint,
        s3_server.access_key,
        s3_server.secret_key,
        create_bucket=False,
        cache_dir=tmp_path,
    )
    with pytest.raises(StoreUnavailable, match="does not exist"):
        store.list("dataset")


def test_bad_manifest_paths_are_refused(s3_store: S3Store, tmp_path: Path) -> None:
    """A manifest read back from S3 decides where files land in the cache: no traversal."""
    s3_store.put_dir("dataset", "k", tree(tmp_path / "src"))
    raw = s3_store._get_bytes("artifacts/dataset/k/manifest.json")
    assert raw is not None
    s3_store._put_bytes("artifacts/dataset/k/manifest.json", raw.replace(b'"a/note.txt"', b'"../../evil"'))
    with pytest.raises(InvalidInput, match="evil"):
        s3_store.materialize("dataset", "k")


@pytest.mark.parametrize(
    ("endpoint", "bucket", "prefix"),
    [
        ("ftp://h:1", "okbucket", ""),
        ("h:1/path", "okbucket", ""),
        ("h:1", "x", ""),
        ("h:1", "okbucket", "../p"),
    ],
)
def test_bad_settings_are_refused(endpoint: str, bucket: str, prefix: str) -> None:
    with pytest.raises(InvalidInput):
        S3Store(bucket, prefix, endpoint, "k", "s")


def test_a_same_size_corruption_of_the_cache_is_downloaded_again(s3_store: S3Store, tmp_path: Path) -> None:
    """A cached file whose size still matches but whose bytes do not is caught by its sha256:
    the cache is fetched again rather than handed to a stage."""
    s3_store.put_dir("adapter", "k", tree(tmp_path / "src"))
    folder = s3_store.materialize("adapter", "k")
    cached = folder / "a" / "b" / "c.bin"
    cached.write_bytes(bytes(reversed(range(256))))  # same 256 bytes, other order
    assert s3_store.materialize("adapter", "k") == folder
    assert cached.read_bytes() == bytes(range(256))


def test_a_store_at_the_bucket_root_lists_what_it_wrote(s3_server: S3Server, own_bucket: str,
                                                        tmp_path: Path) -> None:
    store = S3Store(own_bucket, "", s3_server.endpoint, s3_server.access_key,
                    s3_server.secret_key, cache_dir=tmp_path / "cache")
    store.put_record("runs/r1", {"v": 1})
    store.put_record("runs/r1/stages/sft", {"v": 2})
    ref = store.put_dir("model", "k", tree(tmp_path / "src"))
    assert store.list_records("runs/") == ["runs/r1", "runs/r1/stages/sft"]
    assert [m.key for m in store.list("model")] == ["k"]
    assert store.manifest("model", "k").content_digest == ref.content_digest
    assert (store.materialize("model", "k") / "a" / "note.txt").read_text() == "ünïcode\n"


def test_stores_under_two_prefixes_of_one_bucket_do_not_see_each_other(s3_store: S3Store, s3_server: S3Server,
                                                                        tmp_path: Path) -> None:
    other = S3Store(s3_store.bucket, "u", s3_server.endpoint, s3_server.access_key, s3_server.secret_key,
                    cache_dir=tmp_path / "other-cache")
    s3_store.put_record("runs/r", {"in": "t"})
    s3_store.put_dir("dataset", "d", tree(tmp_path / "src"))
    assert other.get_record("runs/r") is None and other.list_records("") == [] and other.list("dataset") == []
    assert s3_store.list_records("") == ["runs/r"]


def test_a_cache_removed_by_another_reader_while_it_is_replaced_is_downloaded(
    s3_store: S3Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3_store.put_dir("adapter", "k", tree(tmp_path / "src"))
    folder = s3_store.materialize("adapter", "k")
    (folder / "a" / "note.txt").write_text("edited")
    rename = Path.rename

    def removed_first(self: Path, target: Path) -> Path:
        if self == folder:  # another reader cleared the stale copy first
            shutil.rmtree(folder)
            raise FileNotFoundError(folder)
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", removed_first)
    assert s3_store.materialize("adapter", "k") == folder
    assert (folder / "a" / "note.txt").read_text() == "ünïcode\n"


@pytest.mark.parametrize("sound", [True, False])
def test_a_copy_another_reader_put_in_place_is_used_only_if_sound(
    s3_store: S3Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sound: bool
) -> None:
    src = tree(tmp_path / "src")
    s3_store.put_dir("adapter", "k", src)
    cache = s3_store.cache_root() / "artifacts" / "adapter" / "k"
    rename = Path.rename

    def raced(self: Path, target: Path) -> Path:
        if target == cache:  # another reader's download lands first
            shutil.copytree(src, cache)
            if not sound:
                (cache / "a" / "note.txt").write_text("damaged")
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", raced)
    if sound:
        assert s3_store.materialize("adapter", "k") == cache
    else:
        with pytest.raises(OSError):
            s3_store.materialize("adapter", "k")
    assert [p.name for p in cache.parent.iterdir() if p.name.startswith(TMP_PREFIX)] == []


def test_a_retried_create_that_finds_its_own_bytes_succeeds(s3_store: S3Store) -> None:
    """A conditional create whose answer was lost is retried and finds the object it wrote: that
    is its own success, not another writer's (whose bytes differ)."""
    assert s3_store._create_bytes("artifacts/m/k/manifest.json", b"mine")
    assert s3_store._create_bytes("artifacts/m/k/manifest.json", b"mine")
    assert not s3_store._create_bytes("artifacts/m/k/manifest.json", b"theirs")
    assert s3_store._get_bytes("artifacts/m/k/manifest.json") == b"mine"
