"""The artifact store interface.

Artifacts are immutable folders addressed by `(kind, key)`, where `key` is the digest
of everything that produced them (inputs + config; see `character.store.digest`).
A write is atomic: files go up first, the manifest (file list with sha256 of each)
last, and an artifact without its manifest does not exist for readers. Re-writing
an unfinished artifact simply overwrites it.

Records are small mutable JSON documents (run records, stage states), overwritten
atomically as a whole.

Backends implement the handful of object operations at the bottom; everything
above them is shared so the two backends cannot drift apart.
"""

from __future__ import annotations

import builtins
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from character.errors import CharacterError

ABSENT = "absent"
"""`put_record(..., if_version=ABSENT)`: write only if the record does not exist yet."""


class Conflict(CharacterError):
    """A conditional write lost: someone else changed the record since it was read."""


class FileEntry(BaseModel):
    sha256: str
    size: int


class Manifest(BaseModel):
    """Written last; its presence is the commit marker of an artifact."""

    kind: str
    """"dataset", "adapter", "model", "report", "eval", ..."""
    key: str
    """The inputs+config digest the artifact is addressed by."""
    content_digest: str
    """sha256 over the sorted (path, sha256) list: identical content gives identical digests
    on every backend."""
    files: dict[str, FileEntry]
    """Relative POSIX path -> hash and size."""
    meta: dict[str, Any] = {}
    """Free-form facts about the artifact (row counts, config, timings)."""
    created_at: str
    """ISO-8601 UTC."""
    files_root: str = "files"
    """The folder under the artifact that holds its files: each writer uploads into a folder
    of its own ("files-<id>"), so a retried stage racing the attempt it replaces never mixes
    files with it; the first manifest committed names the folder readers use."""


class ArtifactRef(BaseModel):
    """How other parts of the system name an artifact."""

    kind: str
    key: str
    content_digest: str


class Store(ABC):
    """One artifact store (a local folder or an S3 bucket/prefix)."""

    uri: str
    """Where it lives: a local path or s3://bucket/prefix."""

    # --- artifacts -----------------------------------------------------------------
    @abstractmethod
    def has(self, kind: str, key: str) -> bool:
        """True when the artifact is committed (its manifest exists)."""

    @abstractmethod
    def put_dir(self, kind: str, key: str, src: Path, meta: dict[str, Any] | None = None) -> ArtifactRef:
        """Store every file under `src` as artifact (kind, key), atomically."""

    @abstractmethod
    def manifest(self, kind: str, key: str) -> Manifest:
        """The committed artifact's manifest; NotFound when absent."""

    @abstractmethod
    def materialize(self, kind: str, key: str) -> Path:
        """A local folder holding the artifact's files (verified against the manifest).
        Local backend: the stored folder itself (read-only by convention). S3: a cache."""

    @abstractmethod
    def list(self, kind: str) -> list[Manifest]:
        """Committed artifacts of one kind."""

    # --- records -------------------------------------------------------------------
    @abstractmethod
    def put_record(self, key: str, value: dict[str, Any], if_version: str | None = None) -> str:
        """Atomically write a JSON record (e.g. "runs/<id>"); returns its new version. With
        `if_version` (from `get_record_versioned`, or "absent"), only if nobody changed it since:
        `Conflict` otherwise (optimistic concurrency)."""

    @abstractmethod
    def get_record_versioned(self, key: str) -> tuple[dict[str, Any], str] | None:
        """The record and its version, or None when absent."""

    @abstractmethod
    def get_record(self, key: str) -> dict[str, Any] | None:
        """The record, or None when absent."""

    @abstractmethod
    def list_records(self, prefix: str) -> builtins.list[str]:  # `list` is the method above
        """Record keys that start with `prefix`."""
