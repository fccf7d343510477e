"""JSONL datasets stored as artifacts: one `data.jsonl` file plus its row count in the
manifest's meta, so readers can size work without downloading the data."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from character.errors import InvalidInput
from character.store.base import ArtifactRef, Store

DATA_FILE = "data.jsonl"


def write_dataset(
    store: Store, kind: str, key: str, rows: Iterable[dict[str, Any]], meta: dict[str, Any] | None = None
) -> ArtifactRef:
    """Write `rows` as artifact (kind, key) with meta {"rows": n, "format": "jsonl", ...meta}."""
    with tempfile.TemporaryDirectory(prefix="oct-dataset-") as tmp:
        path = Path(tmp) / DATA_FILE
        n = 0
        with open(path, "w", encoding="utf-8") as f:
            for n, row in enumerate(rows, start=1):
                if not isinstance(row, dict):
                    what = type(row).__name__
                    raise InvalidInput(f"dataset rows must be JSON objects, got {what}", where=f"row {n}")
                try:
                    f.write(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n")
                except (TypeError, ValueError) as exc:
                    raise InvalidInput(f"row is not JSON: {exc}", where=f"row {n}") from exc
        return store.put_dir(kind, key, Path(tmp), meta={**(meta or {}), "rows": n, "format": "jsonl"})


def read_dataset(store: Store, kind: str, key: str) -> list[dict[str, Any]]:
    """The rows of a dataset artifact written by `write_dataset`."""
    path = store.materialize(kind, key) / DATA_FILE
    if not path.is_file():
        raise InvalidInput(f"artifact {kind}/{key} has no {DATA_FILE}: not a JSONL dataset", where=str(path))
    rows: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise InvalidInput(f"not JSON: {exc}", where=f"{path}:{lineno}") from exc
            if not isinstance(row, dict):
                raise InvalidInput("a row is not a JSON object", where=f"{path}:{lineno}")
            rows.append(row)
    return rows
