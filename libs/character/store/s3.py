"""The S3 backend, through the `minio` client (MinIO in the chart; any S3 server works).

Failures people can act on are reported as `StoreUnavailable` naming the endpoint, the
bucket and the operation: an unreachable endpoint after a few quick tries (short connect
timeouts, so it takes seconds, not the client's default minutes), refused credentials at
once. A single object PUT is atomic in S3, and the manifest goes up last, so a failing
call never changes what readers see.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import certifi
import urllib3
from minio import Minio
from minio.error import InvalidResponseError, S3Error, ServerError

from character.errors import InvalidInput, NotFound, StoreUnavailable
from character.home import oct_home
from character.store._shared import SAFE_NAME, TMP_PREFIX, SharedStore, corrupted, verify_dir
from character.store.base import Manifest

log = logging.getLogger(__name__)

T = TypeVar("T")

_ABSENT_CODES = {"NoSuchKey", "ResourceNotFound"}
_AUTH_CODES = {
    "SignatureDoesNotMatch",
    "InvalidAccessKeyId",
    "AccessDenied",
    "InvalidToken",
    "ExpiredToken",
    "InvalidSecurity",
    "InvalidClientTokenId",
}
_RETRY_CODES = {"InternalError", "SlowDown", "ServiceUnavailable", "RequestTimeout", "OperationAborted"}
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


class _Absent(Exception):
    """The object does not exist (internal; primitives turn it into None/False/NotFound)."""


def parse_endpoint(endpoint: str, secure: bool | None) -> tuple[str, bool]:
    """ "host:port" or "http(s)://host:port" -> (host:port, secure). A scheme decides `secure`
    unless given; a bare host is plain HTTP unless on port 443 (test and in-cluster servers)."""
    endpoint = endpoint.strip()
    if "://" in endpoint:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
            raise InvalidInput(
                f"invalid S3 endpoint {endpoint!r}: use host:port or http(s)://host:port", where="endpoint"
            )
        return parts.netloc, (parts.scheme == "https") if secure is None else secure
    if not endpoint or "/" in endpoint:
        raise InvalidInput(
            f"invalid S3 endpoint {endpoint!r}: use host:port or http(s)://host:port", where="endpoint"
        )
    return endpoint, endpoint.endswith(":443") if secure is None else secure


class S3Store(SharedStore):
    """Artifacts and records under `s3://bucket/prefix`; materialized files are cached under
    `$OCT_HOME/cache/s3/<bucket>/<prefix>/` (or `cache_dir`)."""

    def __init__(
        self,
        bucket: str,
        prefix: str,
        endpoint: str,
        access_key: str,
        secret_key: str,
        secure: bool | None = None,
        region: str | None = None,
        *,
        create_bucket: bool = True,
        cache_dir: Path | None = None,
        tries: int = 3,
        connect_timeout: float = 3.0,
        read_timeout: float = 120.0,
    ):
        if not _BUCKET.fullmatch(bucket) or ".." in bucket:
            raise InvalidInput(
                f"invalid S3 bucket name {bucket!r}: 3-63 lowercase letters, digits, '.' or '-'",
                where="bucket",
            )
        self.prefix = prefix.strip("/")
        if self.prefix and not all(SAFE_NAME.fullmatch(p) for p in self.prefix.split("/")):
            raise InvalidInput(
                f"invalid S3 prefix {prefix!r}: '/'-separated names of letters, digits, '.', '_' or '-'",
                where="prefix",
            )
        host, self.secure = parse_endpoint(endpoint, secure)
        self.bucket = bucket
        self.endpoint = f"{'https' if self.secure else 'http'}://{host}"
        self.uri = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self.access_key = access_key
        self.create_bucket = create_bucket
        self.tries = max(1, tries)
        self._cache_dir = cache_dir
        self._bucket_ready = False
        # minio's default pool waits 5 min to connect and retries 5 times inside; we want an
        # unreachable store reported in seconds, and our own retries that know the operation.
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
            maxsize=10,
            retries=False,
            cert_reqs="CERT_REQUIRED",
            # OCT_S3_CA_FILE: a private CA for S3 alone (the chart's MinIO over TLS), leaving the
            # trust store of HTTPS endpoints as it is.
            ca_certs=os.environ.get("OCT_S3_CA_FILE") or os.environ.get("SSL_CERT_FILE") or certifi.where(),
        )
        self._client = Minio(
            host,
            access_key=access_key,
            secret_key=secret_key,
            secure=self.secure,
            region=region,
            http_client=http,
        )

    def __repr__(self) -> str:
        return f"S3Store({self.uri!r}, endpoint={self.endpoint!r})"

    # --- error handling -------------------------------------------------------------------
    def _where(self, op: str, obj: str | None) -> str:
        target = f"s3://{self.bucket}/{obj}" if obj else f"bucket {self.bucket!r}"
        return f"S3 endpoint {self.endpoint}, {op} {target}"

    def _retry(self, op: str, obj: str | None, fn: Callable[[], T]) -> T:
        """Run one client call with bounded retries; every failure becomes StoreUnavailable
        (or _Absent for a missing object)."""
        last: Exception | None = None
        for attempt in range(self.tries):
            if attempt:
                time.sleep(0.5 * 2 ** (attempt - 1))
            try:
                return fn()
            except S3Error as exc:
                if exc.code in _ABSENT_CODES:
                    raise _Absent(obj) from exc
                if exc.code in _AUTH_CODES:
                    raise StoreUnavailable(
                        f"{self._where(op, obj)}: the server refused the credentials (access key "
                        f"{self.access_key!r}: {exc.code}); check OCT_S3_ACCESS_KEY / OCT_S3_SECRET_KEY "
                        "and the key's permissions on the bucket"
                    ) from exc
                if exc.code == "NoSuchBucket":
                    raise StoreUnavailable(f"{self._where(op, obj)}: the bucket does not exist") from exc
                if exc.code not in _RETRY_CODES:
                    where = self._where(op, obj)
                    raise StoreUnavailable(f"{where}: refused: {exc.code}: {exc.message}") from exc
                last = exc
            except (ServerError, InvalidResponseError, urllib3.exceptions.HTTPError, OSError) as exc:
                last = exc
            log.debug("%s failed (try %d of %d): %s", self._where(op, obj), attempt + 1, self.tries, last)
        raise StoreUnavailable(
            f"{self._where(op, obj)}: failed after {self.tries} tries: {type(last).__name__}: {last}. "
            "Is the S3 server running and OCT_S3_ENDPOINT right?"
        ) from last

    def _call(self, op: str, obj: str | None, fn: Callable[[], T]) -> T:
        self._ensure_bucket()
        return self._retry(op, obj, fn)

    def _ensure_bucket(self) -> None:
        """Check (and create, when allowed) the bucket once, on first use rather than in the
        constructor, so building a store never needs the network."""
        if self._bucket_ready:
            return
        if not self._retry("check", None, lambda: self._client.bucket_exists(self.bucket)):
            if not self.create_bucket:
                raise StoreUnavailable(f"{self._where('check', None)}: the bucket does not exist; create it")
            try:
                self._retry("create", None, lambda: self._client.make_bucket(self.bucket))
            except StoreUnavailable as exc:
                if "BucketAlreadyOwnedByYou" not in str(exc) and "BucketAlreadyExists" not in str(exc):
                    raise
        self._bucket_ready = True

    def _name(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    # --- primitives -----------------------------------------------------------------------
    def _put_bytes(self, key: str, data: bytes) -> None:
        name = self._name(key)
        self._call(
            "put", name, lambda: self._client.put_object(self.bucket, name, io.BytesIO(data), len(data))
        )

    def _put_if(self, key: str, data: bytes, header: tuple[str, str]) -> bool:
        """A conditional PUT (If-None-Match / If-Match); False on 412 Precondition Failed or
        when the object vanished. minio's public put_object cannot send these headers."""
        name = self._name(key)

        def put() -> bool:
            try:
                self._client._put_object(self.bucket, name, data, headers=dict([header]))
            except S3Error as exc:
                if exc.code in ("PreconditionFailed", *_ABSENT_CODES):
                    return False
                raise
            return True

        return self._call("conditional put", name, put)

    def _create_bytes(self, key: str, data: bytes) -> bool:
        # A retry after a lost answer finds its own object: that is a success, not a conflict.
        return self._put_if(key, data, ("If-None-Match", "*")) or self._get_bytes(key) == data

    def _replace_bytes_if(self, key: str, data: bytes, version: str) -> bool:
        return self._put_if(key, data, ("If-Match", f'"{version}"'))

    def _get_versioned(self, key: str) -> tuple[bytes, str] | None:
        name = self._name(key)

        def get() -> tuple[bytes, str]:
            resp = self._client.get_object(self.bucket, name)
            try:
                return resp.read(), str(resp.headers.get("ETag", "")).strip('"')
            finally:
                resp.close()
                resp.release_conn()

        try:
            return self._call("get", name, get)
        except _Absent:
            return None

    def _put_file(self, key: str, path: Path) -> None:
        name = self._name(key)
        self._call("upload", name, lambda: self._client.fput_object(self.bucket, name, str(path)))

    def _get_bytes(self, key: str) -> bytes | None:
        got = self._get_versioned(key)
        return None if got is None else got[0]

    def _get_file(self, key: str, dest: Path) -> None:
        name = self._name(key)

        def fetch() -> None:
            resp = self._client.get_object(self.bucket, name)
            try:
                with open(dest, "wb") as f:
                    for chunk in resp.stream(1 << 20):
                        f.write(chunk)
            finally:
                resp.close()
                resp.release_conn()

        try:
            self._call("download", name, fetch)
        except _Absent as exc:
            raise NotFound(f"no object s3://{self.bucket}/{name} at {self.endpoint}") from exc

    def _exists(self, key: str) -> bool:
        name = self._name(key)
        try:
            self._call("stat", name, lambda: self._client.stat_object(self.bucket, name))
        except _Absent:
            return False
        return True

    def _list(self, prefix: str) -> list[str]:
        name = self._name(prefix)
        objs = self._call(
            "list",
            name + "*",
            lambda: list(self._client.list_objects(self.bucket, prefix=name, recursive=True)),
        )
        cut = len(self.prefix) + 1 if self.prefix else 0
        return [o.object_name[cut:] for o in objs if o.object_name and not o.is_dir]

    def _delete(self, key: str) -> None:
        name = self._name(key)
        self._call("delete", name, lambda: self._client.remove_object(self.bucket, name))

    # --- cache ----------------------------------------------------------------------------
    def cache_root(self) -> Path:
        """Where materialized artifacts of this bucket/prefix are kept."""
        base = self._cache_dir or oct_home() / "cache" / "s3"
        return base.joinpath(self.bucket, *(self.prefix.split("/") if self.prefix else []))

    def _files_for(self, manifest: Manifest) -> Path:
        """A verified cached copy. A cache that does not match the manifest (bit rot, a partial
        copy from an older version, edits) is downloaded again; the download goes to a temp
        folder that is renamed into place only once verified, so readers never see half a copy."""
        cache = self.cache_root() / "artifacts" / manifest.kind / manifest.key
        if cache.is_dir():
            problems = verify_dir(cache, manifest)
            if not problems:
                return cache
            log.warning("cached %s does not match its manifest (%s); downloading again", cache, problems[0])
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.parent / f"{TMP_PREFIX}{uuid.uuid4().hex}-{manifest.key}"
        tmp.mkdir()
        try:
            prefix = self._files_prefix(manifest)
            for rel in manifest.files:
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                self._get_file(prefix + rel, tmp / rel)
            problems = verify_dir(tmp, manifest)
            if problems:
                raise corrupted(manifest, f"{self.uri}/{prefix}", problems)
            if cache.exists():
                old = cache.parent / f"{TMP_PREFIX}{uuid.uuid4().hex}-old-{manifest.key}"
                with contextlib.suppress(FileNotFoundError):
                    cache.rename(old)
                shutil.rmtree(old, ignore_errors=True)
            try:
                tmp.rename(cache)
            except OSError:
                # Another process put a copy in place meanwhile; use it if it is sound.
                if verify_dir(cache, manifest):
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return cache
