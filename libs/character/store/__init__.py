"""The artifact store: immutable, content-addressed artifacts and small mutable records,
in a local folder or an S3 bucket (see `base.py` for the contract)."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

from character.errors import InvalidInput
from character.store.base import ArtifactRef, FileEntry, Manifest, Store
from character.store.digest import content_digest, digest_of, file_sha256
from character.store.local import LocalStore
from character.store.s3 import S3Store

__all__ = [
    "ArtifactRef",
    "FileEntry",
    "LocalStore",
    "Manifest",
    "S3Store",
    "Store",
    "content_digest",
    "digest_of",
    "file_sha256",
    "open_store",
]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _env(*names: str) -> str | None:
    """The first of `names` set to a non-empty value."""
    for name in names:
        if os.environ.get(name):
            return os.environ[name]
    return None


def _require(*names: str) -> str:
    value = _env(*names)
    if value is None:
        alt = f" (or {', '.join(names[1:])})" if len(names) > 1 else ""
        raise InvalidInput(f"{names[0]}{alt} is not set; an s3:// store needs it", where=names[0])
    return value


def open_store(uri: str) -> Store:
    """A store from a URI: a local path or file:// URI, or s3://bucket/prefix with the endpoint
    and credentials taken from the environment (OCT_S3_ENDPOINT, OCT_S3_ACCESS_KEY,
    OCT_S3_SECRET_KEY, OCT_S3_SECURE, OCT_S3_REGION; the AWS_* names as fallbacks), so that
    secrets never appear in run specs or command lines."""
    if not uri:
        raise InvalidInput("empty store URI: give a folder or s3://bucket/prefix", where="store")
    parts = urlsplit(uri)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise InvalidInput(f"file:// URI with a host is not supported: {uri}", where="store")
        return LocalStore(Path(unquote(parts.path)))
    if parts.scheme == "s3":
        if not parts.netloc:
            raise InvalidInput(f"no bucket in {uri!r}: use s3://bucket/prefix", where="store")
        endpoint = _require("OCT_S3_ENDPOINT", "AWS_ENDPOINT_URL")
        access_key = _require("OCT_S3_ACCESS_KEY", "AWS_ACCESS_KEY_ID")
        secret_key = _require("OCT_S3_SECRET_KEY", "AWS_SECRET_ACCESS_KEY")
        secure_env = _env("OCT_S3_SECURE")
        secure: bool | None = None
        if secure_env is not None:
            if secure_env.lower() not in _TRUE | _FALSE:
                raise InvalidInput(f"OCT_S3_SECURE={secure_env!r}: use true or false", where="OCT_S3_SECURE")
            secure = secure_env.lower() in _TRUE
        return S3Store(
            bucket=parts.netloc,
            prefix=parts.path.strip("/"),
            endpoint=endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            region=_env("OCT_S3_REGION"),
        )
    if parts.scheme and len(parts.scheme) > 1:  # "C:\..." is a path, not a scheme
        raise InvalidInput(f"unsupported store URI {uri!r}: use a folder, file:// or s3://", where="store")
    return LocalStore(Path(uri))
