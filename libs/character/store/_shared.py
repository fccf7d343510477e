"""Artifact and record logic shared by every backend, written over a few object operations.

Backends only move bytes (`_put_bytes`, `_put_file`, `_get_bytes`, `_get_file`, `_exists`,
`_list`, `_delete`) under string keys relative to the store root; the layout, the commit
protocol (files first, manifest last), key validation and verification live here once,
so the local and S3 backends cannot drift apart.

Layout under the store root:
    artifacts/<kind>/<key>/files/<relpath>
    artifacts/<kind>/<key>/manifest.json      (written last: the commit marker)
    records/<key>.json

Two writers of one (kind, key) (a retried stage racing the attempt it replaces) cannot mix
their files: each uploads into a folder of its own (`files-<id>`) and commits with a
conditional create of the manifest (If-None-Match on S3, an exclusive link locally); the
first commit wins, the loser removes its folder and returns the winner's artifact. Records
can be written with optimistic concurrency (`put_record(..., if_version=...)`).
"""

from __future__ import annotations

import builtins
import hashlib
import json
import re
import uuid
from abc import abstractmethod
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from character.errors import InvalidInput, NotFound
from character.store.base import ABSENT, ArtifactRef, Conflict, FileEntry, Manifest, Store
from character.store.digest import content_digest, file_sha256

ARTIFACTS = "artifacts"
RECORDS = "records"
MANIFEST = "manifest.json"
FILES = "files"
TMP_PREFIX = ".oct-tmp-"
"""Names of temp files and folders; never a stored name, so listings skip them."""

FILES_ROOT = re.compile(r"files(-[0-9a-f]{8,32})?")
"""Names of the folder holding an artifact's files ("files": written before per-writer folders)."""

SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
"""kind, key and record path segments: start alphanumeric (so never '.', '..' or a dotfile
that backends use for temp files), then a conservative set that is safe on every filesystem
and in S3 object names."""


def check_name(value: str, what: str) -> str:
    """A single safe path segment (artifact kind or key)."""
    if not isinstance(value, str) or not SAFE_NAME.fullmatch(value):
        raise InvalidInput(
            f"invalid {what} {value!r}: use letters, digits, '.', '_' or '-', "
            "starting with a letter or digit",
            where=what,
        )
    return value


def check_record_key(key: str, *, prefix: bool = False) -> str:
    """A record key like "runs/<id>": '/'-separated safe segments, no '..', no leading '/'.
    With `prefix`, the key may be empty, end with '/' or stop mid-segment."""
    what = "record prefix" if prefix else "record key"
    if not isinstance(key, str):
        raise InvalidInput(f"invalid {what} {key!r}", where=what)
    if prefix and key == "":
        return key
    parts = key.split("/")
    if prefix and parts[-1] == "":
        parts = parts[:-1]
    for part in parts:
        # A prefix's last segment may stop anywhere inside a name, so it is held to the same rule.
        if not SAFE_NAME.fullmatch(part):
            raise InvalidInput(
                f"invalid {what} {key!r}: '/'-separated names of letters, digits, '.', '_' or '-', "
                "each starting with a letter or digit (no '..', no leading '/')",
                where=what,
            )
    return key


def check_relpath(path: str, where: str) -> str:
    """A file path inside an artifact, as stored in a manifest. Dotfiles are allowed (model
    folders carry `.gitattributes`); traversal, absolute paths and control characters are not,
    since a manifest read back from S3 decides where files are written."""
    parts = path.split("/")
    bad = (
        not path
        or path.startswith("/")
        or "\\" in path
        or any(p in ("", ".", "..") for p in parts)
        or any(ord(c) < 32 for c in path)
        or any(p.startswith(TMP_PREFIX) for p in parts)
    )
    if bad:
        raise InvalidInput(f"invalid file path {path!r} in artifact", where=where)
    return path


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def verify_dir(folder: Path, manifest: Manifest) -> list[str]:
    """What is wrong with `folder` against `manifest`, as "relpath: problem" lines (missing,
    extra or altered files); empty when it matches exactly. Sizes are compared before
    hashing to fail fast."""
    problems: list[str] = []
    for rel, entry in sorted(manifest.files.items()):
        path = folder / rel
        if not path.is_file():
            problems.append(f"{rel}: missing")
        elif (size := path.stat().st_size) != entry.size:
            problems.append(f"{rel}: {size} bytes, the manifest says {entry.size}")
        elif file_sha256(path) != entry.sha256:
            problems.append(f"{rel}: sha256 differs from the manifest")
    if folder.is_dir():
        for path in sorted(folder.rglob("*")):
            rel = path.relative_to(folder).as_posix()
            if path.is_file() and rel not in manifest.files:
                problems.append(f"{rel}: not in the manifest")
    return problems


def corrupted(manifest: Manifest, where: str, problems: list[str]) -> InvalidInput:
    """The error for an artifact whose files do not match its manifest."""
    shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
    return InvalidInput(
        f"artifact {manifest.kind}/{manifest.key} is corrupted ({shown}); delete it and run the stage again",
        where=where,
    )


def scan_dir(src: Path) -> dict[str, FileEntry]:
    """Every regular file under `src` with its hash and size (symlinks are followed)."""
    if not src.is_dir():
        raise InvalidInput(f"{src} is not a folder", where=str(src))
    files: dict[str, FileEntry] = {}
    for path in sorted(src.rglob("*")):
        if path.is_file():
            rel = check_relpath(path.relative_to(src).as_posix(), where=str(path))
            files[rel] = FileEntry(sha256=file_sha256(path), size=path.stat().st_size)
    return files


class SharedStore(Store):
    """Everything in `Store`, written over the primitive object operations below."""

    # --- primitives (keys are '/'-separated, relative to the store root) -----------------
    @abstractmethod
    def _put_bytes(self, key: str, data: bytes) -> None:
        """Write (or atomically replace) one object."""

    @abstractmethod
    def _put_file(self, key: str, path: Path) -> None:
        """Write (or atomically replace) one object from a local file."""

    @abstractmethod
    def _create_bytes(self, key: str, data: bytes) -> bool:
        """Write one object only if it does not exist, atomically; False when it does."""

    @abstractmethod
    def _replace_bytes_if(self, key: str, data: bytes, version: str) -> bool:
        """Replace one object only if its current content has `version` (see `_version`);
        False when it changed or vanished."""

    @abstractmethod
    def _get_versioned(self, key: str) -> tuple[bytes, str] | None:
        """One object's bytes and version, or None when absent."""

    @abstractmethod
    def _get_bytes(self, key: str) -> bytes | None:
        """One object's bytes, or None when absent."""

    @abstractmethod
    def _get_file(self, key: str, dest: Path) -> None:
        """Copy one object into the local file `dest` (its folder exists); NotFound when absent."""

    @abstractmethod
    def _exists(self, key: str) -> bool:
        """Whether one object exists."""

    @abstractmethod
    def _list(self, prefix: str) -> list[str]:
        """Every object key starting with `prefix` (recursive, any order)."""

    @abstractmethod
    def _delete(self, key: str) -> None:
        """Remove one object; absent is fine."""

    @abstractmethod
    def _files_for(self, manifest: Manifest) -> Path:
        """A local folder holding exactly the manifest's files, verified (see `materialize`)."""

    # --- layout ---------------------------------------------------------------------------
    @staticmethod
    def _artifact_prefix(kind: str, key: str) -> str:
        return f"{ARTIFACTS}/{check_name(kind, 'artifact kind')}/{check_name(key, 'artifact key')}/"

    @staticmethod
    def _record_object(key: str) -> str:
        return f"{RECORDS}/{check_record_key(key)}.json"

    # --- artifacts ------------------------------------------------------------------------
    def has(self, kind: str, key: str) -> bool:
        return self._exists(self._artifact_prefix(kind, key) + MANIFEST)

    def put_dir(self, kind: str, key: str, src: Path, meta: dict[str, Any] | None = None) -> ArtifactRef:
        """Upload files into this writer's own folder, then commit the manifest if no other
        writer did first. An artifact already committed under this key is kept as is and its
        ref returned: the key names the inputs, so the stored artifact is a valid result for
        them, and committed artifacts are never modified."""
        base = self._artifact_prefix(kind, key)
        src = Path(src)
        files = scan_dir(src)
        existing = self._read_manifest(kind, key)
        if existing is not None:
            return self._ref(existing)
        root = f"{FILES}-{uuid.uuid4().hex[:16]}"
        for rel in files:
            self._put_file(f"{base}{root}/{rel}", src / rel)
        manifest = Manifest(
            kind=kind,
            key=key,
            content_digest=content_digest(files),
            files=files,
            meta=dict(meta or {}),
            created_at=_now(),
            files_root=root,
        )
        won = self._create_bytes(base + MANIFEST, manifest.model_dump_json(indent=1).encode())
        # Folders of writers that crashed or lost: nobody reads them.
        committed = manifest if won else self.manifest(kind, key)
        keep = (base + MANIFEST, self._files_prefix(committed))
        for obj in self._list(base):
            if not obj.startswith(keep):
                self._delete(obj)
        return self._ref(committed)

    def manifest(self, kind: str, key: str) -> Manifest:
        found = self._read_manifest(kind, key)
        if found is None:
            present = self._keys(kind)
            shown = ", ".join(present[:10]) + (" ..." if len(present) > 10 else "")
            raise NotFound(
                f"no artifact {kind}/{key} in {self.uri}; "
                + (f"stored {kind} artifacts: {shown}" if present else f"no {kind} artifacts are stored")
            )
        return found

    def materialize(self, kind: str, key: str) -> Path:
        return self._files_for(self.manifest(kind, key))

    def list(self, kind: str) -> list[Manifest]:
        found = (self._read_manifest(kind, key) for key in self._keys(kind))
        return [m for m in found if m is not None]

    def _keys(self, kind: str) -> builtins.list[str]:
        """Keys of the committed artifacts of one kind (those with a manifest), sorted."""
        base = f"{ARTIFACTS}/{check_name(kind, 'artifact kind')}/"
        keys = []
        for obj in self._list(base):
            rest = obj[len(base) :].split("/")
            if len(rest) == 2 and rest[1] == MANIFEST and SAFE_NAME.fullmatch(rest[0]):
                keys.append(rest[0])
        return sorted(keys)

    def _read_manifest(self, kind: str, key: str) -> Manifest | None:
        obj = self._artifact_prefix(kind, key) + MANIFEST
        data = self._get_bytes(obj)
        if data is None:
            return None
        where = f"{self.uri}/{obj}"
        try:
            manifest = Manifest.model_validate_json(data)
        except ValidationError as exc:
            raise InvalidInput(f"unreadable manifest: {exc}", where=where) from exc
        if (manifest.kind, manifest.key) != (kind, key):
            raise InvalidInput(f"manifest names {manifest.kind}/{manifest.key}", where=where)
        if not FILES_ROOT.fullmatch(manifest.files_root):
            raise InvalidInput(f"invalid files_root {manifest.files_root!r}", where=where)
        for rel in manifest.files:
            check_relpath(rel, where=where)
        if content_digest(manifest.files) != manifest.content_digest:
            raise InvalidInput("content_digest does not match the file list", where=where)
        return manifest

    @staticmethod
    def _ref(manifest: Manifest) -> ArtifactRef:
        return ArtifactRef(kind=manifest.kind, key=manifest.key, content_digest=manifest.content_digest)

    def _files_prefix(self, manifest: Manifest) -> str:
        return self._artifact_prefix(manifest.kind, manifest.key) + manifest.files_root + "/"

    # --- records --------------------------------------------------------------------------
    def put_record(self, key: str, value: dict[str, Any], if_version: str | None = None) -> str:
        """Write the record; returns its new version. With `if_version` (a version
        `get_record_versioned` returned, or ABSENT), only if nobody changed it meanwhile:
        Conflict otherwise."""
        obj = self._record_object(key)
        try:
            data = json.dumps(value, sort_keys=True, indent=1, ensure_ascii=False, allow_nan=False).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"record is not JSON: {exc}", where=f"record {key}") from exc
        if if_version is None:
            self._put_bytes(obj, data)
        elif not (self._create_bytes(obj, data) if if_version == ABSENT else
                  self._replace_bytes_if(obj, data, if_version)):
            raise Conflict(f"record {key} was changed by another writer since it was read; read it again")
        return version_of(data)

    def get_record_versioned(self, key: str) -> tuple[dict[str, Any], str] | None:
        """The record and its version (for `put_record(..., if_version=...)`), or None."""
        found = self._get_versioned(self._record_object(key))
        if found is None:
            return None
        return self._parse_record(key, found[0]), found[1]

    def get_record(self, key: str) -> dict[str, Any] | None:
        data = self._get_bytes(self._record_object(key))
        return None if data is None else self._parse_record(key, data)

    def _parse_record(self, key: str, data: bytes) -> dict[str, Any]:
        try:
            value = json.loads(data)
        except ValueError as exc:
            raise InvalidInput(f"record is not JSON: {exc}", where=f"{self.uri}/records/{key}.json") from exc
        if not isinstance(value, dict):
            raise InvalidInput("record is not a JSON object", where=f"{self.uri}/records/{key}.json")
        return value

    def list_records(self, prefix: str) -> builtins.list[str]:
        check_record_key(prefix, prefix=True)
        base = f"{RECORDS}/"
        keys = []
        for obj in self._list(base + prefix):
            rel = obj[len(base) :]
            if rel.endswith(".json") and rel.startswith(prefix):
                key = rel[: -len(".json")]
                if all(SAFE_NAME.fullmatch(p) for p in key.split("/")):
                    keys.append(key)
        return sorted(keys)


def version_of(data: bytes) -> str:
    """A record's version: the MD5 of its bytes, which is also the ETag S3 gives a single-part
    upload (records are small), so both backends compare the same thing."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()
