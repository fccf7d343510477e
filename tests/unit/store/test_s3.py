"""S3Store without a server: what an unreachable store's errors say, and where the download
cache lives. Behaviour against a real S3 server is in tests/integration/store/."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from character.errors import StoreUnavailable
from character.store import S3Store
from character.store.base import FileEntry, Manifest

from tests.fixtures.network import closed_port


@pytest.fixture
def unreachable(tmp_path: Path) -> S3Store:
    """A store whose endpoint refuses connections at once, tried once, with its bucket taken as
    checked so that each call fails in its own operation."""
    store = S3Store("oct-down", "runs/a", f"127.0.0.1:{closed_port()}", "k", "s", cache_dir=tmp_path, tries=1)
    store._bucket_ready = True
    return store


def _calls(store: S3Store, tmp_path: Path) -> list[tuple[str, Callable[[], object]]]:
    src = tmp_path / "src.bin"
    src.write_bytes(b"x")
    manifest = Manifest(kind="model", key="k", content_digest="d", files={"w.bin": FileEntry(sha256="0", size=1)},
                        created_at="t", files_root="files-0123456789abcdef")
    return [
        ("put s3://oct-down/runs/a/records/r.json", lambda: store._put_bytes("records/r.json", b"{}")),
        ("upload s3://oct-down/runs/a/artifacts/m/k/f.bin", lambda: store._put_file("artifacts/m/k/f.bin", src)),
        ("conditional put s3://oct-down/runs/a/records/r.json", lambda: store._create_bytes("records/r.json", b"{}")),
        ("conditional put s3://oct-down/runs/a/records/r.json",
         lambda: store._replace_bytes_if("records/r.json", b"{}", "v")),
        ("get s3://oct-down/runs/a/records/r.json", lambda: store._get_bytes("records/r.json")),
        ("get s3://oct-down/runs/a/records/r.json", lambda: store._get_versioned("records/r.json")),
        ("download s3://oct-down/runs/a/records/r.json", lambda: store._get_file("records/r.json", tmp_path / "d")),
        ("stat s3://oct-down/runs/a/records/r.json", lambda: store._exists("records/r.json")),
        ("list s3://oct-down/runs/a/records/ru*", lambda: store._list("records/ru")),
        ("delete s3://oct-down/runs/a/records/r.json", lambda: store._delete("records/r.json")),
        ("download s3://oct-down/runs/a/artifacts/model/k/files-0123456789abcdef/w.bin",
         lambda: store._files_for(manifest)),
    ]


def test_an_unreachable_store_names_the_operation_and_the_object(unreachable: S3Store, tmp_path: Path) -> None:
    """Which call failed, on which object, is what a user needs to find the cause."""
    endpoint = unreachable.endpoint
    for what, call in _calls(unreachable, tmp_path):
        with pytest.raises(StoreUnavailable) as err:
            call()
        assert str(err.value).startswith(f"S3 endpoint {endpoint}, {what}: failed after 1 tries: "), what


def test_the_download_cache_is_per_bucket_and_prefix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCT_HOME", str(tmp_path / "home"))
    cache = tmp_path / "home" / "cache" / "s3"
    assert S3Store("oct-b", "", "h:1", "k", "s").cache_root() == cache / "oct-b"
    assert S3Store("oct-b", "/runs/a/", "h:1", "k", "s").cache_root() == cache / "oct-b" / "runs" / "a"
    given = S3Store("oct-b", "p", "h:1", "k", "s", cache_dir=tmp_path / "c")
    assert given.cache_root() == tmp_path / "c" / "oct-b" / "p"
