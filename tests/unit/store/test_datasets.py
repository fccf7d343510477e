"""JSONL datasets as artifacts (on the local backend; the helpers only use the Store API)."""

from __future__ import annotations

from pathlib import Path

import pytest
from character.errors import InvalidInput
from character.store import LocalStore
from character.store.datasets import read_dataset, write_dataset


def test_round_trip_with_row_count(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    rows = [{"prompt": "héllo", "n": i} for i in range(5)]
    ref = write_dataset(store, "dataset", "d1", iter(rows), meta={"stage": "prompts"})
    assert read_dataset(store, "dataset", "d1") == rows
    assert store.manifest("dataset", "d1").meta == {"stage": "prompts", "rows": 5, "format": "jsonl"}
    assert ref.content_digest == store.manifest("dataset", "d1").content_digest


def test_empty_dataset(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    write_dataset(store, "dataset", "empty", [], meta=None)
    assert read_dataset(store, "dataset", "empty") == []
    assert store.manifest("dataset", "empty").meta["rows"] == 0


def test_non_object_rows_are_refused(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    with pytest.raises(InvalidInput, match="row 2"):
        write_dataset(store, "dataset", "bad", [{"a": 1}, ["not", "a", "dict"]], meta={})  # type: ignore[list-item]
    assert not store.has("dataset", "bad")
