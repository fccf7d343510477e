"""The local-folder backend: the embedded default of `oct run`.

Every object write goes to a temp file in the same folder, is fsynced and then
`os.replace`d into place, so a crash leaves either the old object or the new one,
never half a file; temp files start with `.oct-tmp-` and are invisible to listings.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from character.errors import NotFound
from character.store._shared import TMP_PREFIX as _TMP
from character.store._shared import SharedStore, corrupted, verify_dir, version_of
from character.store.base import Manifest


class LocalStore(SharedStore):
    """Artifacts and records under one local folder (created on first write)."""

    def __init__(self, root: Path | str):
        self.root = Path(root).expanduser().absolute()
        self.uri = str(self.root)

    def __repr__(self) -> str:
        return f"LocalStore({self.uri!r})"

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*key.split("/"))

    def _write_atomic(self, key: str, fill: Callable[[BinaryIO], None], exclusive: bool = False) -> bool:
        """Write via a temp file; `exclusive`: only if `key` does not exist (a hard link, which
        fails on an existing name, where a rename would replace it). False when it existed."""
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f"{_TMP}{uuid.uuid4().hex}-{dest.name}")
        try:
            with open(tmp, "wb") as f:
                fill(f)
                f.flush()
                os.fsync(f.fileno())
            if exclusive:
                try:
                    os.link(tmp, dest)
                except FileExistsError:
                    return False
            else:
                os.replace(tmp, dest)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        # Make the rename itself durable (the manifest is the commit marker).
        fd = os.open(dest.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return True

    @contextlib.contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        """An exclusive lock on one object among the processes sharing this folder."""
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(dest.with_name(f"{_TMP}lock-{dest.name}"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    # --- primitives -----------------------------------------------------------------------
    def _put_bytes(self, key: str, data: bytes) -> None:
        def write(f: BinaryIO) -> None:
            f.write(data)

        self._write_atomic(key, write)

    def _put_file(self, key: str, path: Path) -> None:
        def copy(f: BinaryIO) -> None:
            with open(path, "rb") as src:
                shutil.copyfileobj(src, f, 1 << 20)

        self._write_atomic(key, copy)

    def _create_bytes(self, key: str, data: bytes) -> bool:
        def write(f: BinaryIO) -> None:
            f.write(data)

        return self._write_atomic(key, write, exclusive=True)

    def _replace_bytes_if(self, key: str, data: bytes, version: str) -> bool:
        with self._locked(key):
            current = self._get_bytes(key)
            if current is None or version_of(current) != version:
                return False
            self._put_bytes(key, data)
            return True

    def _get_versioned(self, key: str) -> tuple[bytes, str] | None:
        data = self._get_bytes(key)
        return None if data is None else (data, version_of(data))

    def _get_bytes(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None

    def _get_file(self, key: str, dest: Path) -> None:
        try:
            shutil.copyfile(self._path(key), dest)
        except FileNotFoundError as exc:
            raise NotFound(f"no object {key} in {self.uri}") from exc

    def _exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def _list(self, prefix: str) -> list[str]:
        # The prefix may end mid-name ("records/runs/ab"): walk its folder and filter.
        head, _, _ = prefix.rpartition("/")
        start = self._path(head) if head else self.root
        if not start.is_dir():
            return []
        keys = []
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames[:] = [d for d in dirnames if not d.startswith(_TMP)]
            rel_dir = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                if name.startswith(_TMP):
                    continue
                key = name if rel_dir == "." else f"{rel_dir}/{name}"
                if key.startswith(prefix):
                    keys.append(key)
        return keys

    def _delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()

    def _files_for(self, manifest: Manifest) -> Path:
        """The stored folder itself, after checking every file against the manifest."""
        folder = self._path(self._files_prefix(manifest).rstrip("/"))
        if not manifest.files:
            folder.mkdir(parents=True, exist_ok=True)
        problems = verify_dir(folder, manifest)
        if problems:
            raise corrupted(manifest, str(folder), problems)
        return folder
