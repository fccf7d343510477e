"""Model references to s3://bucket/prefix, against a real S3 server (SeaweedFS)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from character.errors import NotFound
from character.models.refs import resolve_model
from minio import Minio

from tests.fixtures.s3 import S3Server

pytestmark = pytest.mark.s3


def test_s3_model_is_downloaded_once(
    s3_env: S3Server, tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OCT_HOME", str(tmp_path / "home"))
    client = Minio(s3_env.endpoint.split("://")[1], s3_env.access_key, s3_env.secret_key, secure=False)
    bucket = f"oct-models-{uuid.uuid4().hex[:12]}"
    client.make_bucket(bucket)
    files = sorted(p for p in tiny_model.iterdir() if p.is_file())
    for f in files:
        client.fput_object(bucket, f"models/tiny/{f.name}", str(f))

    folder = resolve_model(f"s3://{bucket}/models/tiny")
    assert folder == tmp_path / "home" / "cache" / "models" / "s3" / bucket / "models" / "tiny"
    for f in files:
        assert (folder / f.name).read_bytes() == f.read_bytes()

    # reused from the cache, with no server needed
    monkeypatch.setenv("OCT_S3_ENDPOINT", "http://127.0.0.1:9")
    assert resolve_model(f"s3://{bucket}/models/tiny/") == folder


def test_s3_prefix_without_a_model(s3_env: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCT_HOME", str(tmp_path))
    client = Minio(s3_env.endpoint.split("://")[1], s3_env.access_key, s3_env.secret_key, secure=False)
    bucket = f"oct-models-{uuid.uuid4().hex[:12]}"
    client.make_bucket(bucket)
    with pytest.raises(NotFound, match=r"no config\.json"):
        resolve_model(f"s3://{bucket}/nothing/here")
