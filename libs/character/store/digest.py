"""Content addressing: stable digests of configs and of file sets.

An artifact's key is `digest_of(...)` over everything that produced it, so the same
inputs and config always name the same artifact (and a finished stage can be skipped).
The digest must not depend on dict order, whitespace or Python object identity, hence
one canonical JSON form.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

from pydantic import BaseModel

from character.errors import InvalidInput
from character.store.base import FileEntry

_CHUNK = 1 << 20


def _jsonable(obj: Any) -> Any:
    """`json.dumps` fallback: the non-JSON types that configs are made of."""
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    if isinstance(obj, PurePath):
        return obj.as_posix()
    if isinstance(obj, set | frozenset):
        # Sets have no order; sort by each element's canonical form so the digest is stable.
        return sorted(obj, key=canonical_json)
    raise TypeError(f"cannot digest a {type(obj).__name__}")


def canonical_json(obj: Any) -> str:
    """Sorted keys, no whitespace, no NaN: equal values give equal strings."""
    try:
        return json.dumps(
            obj, default=_jsonable, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"value cannot be digested: {exc}") from exc


def digest_of(obj: Any) -> str:
    """sha256 hex of the canonical JSON of `obj` (pydantic models, Paths, dicts, lists, scalars)."""
    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()


def file_sha256(path: PurePath | str) -> str:
    """sha256 hex of a file's bytes, read in chunks so big weights do not fill memory."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def content_digest(files: Mapping[str, FileEntry]) -> str:
    """sha256 over the sorted "path<TAB>sha256<LF>" lines: same content, same digest, any backend."""
    h = hashlib.sha256()
    for path in sorted(files):
        h.update(f"{path}\t{files[path].sha256}\n".encode())
    return h.hexdigest()
