"""A stored run record of a real spec (tiny model, one override) and edits of it made outside
the record's model, as a hand or an older version of the code would make them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from character.controller.runs import RUNS_PREFIX, new_run, save_run
from character.pipeline.spec import RunSpec, parse_spec
from character.store import open_store
from character.store.base import Store


def recorded_spec(tmp_path: Path) -> RunSpec:
    return parse_spec(
        {
            "constitution": "sarcasm",
            "model": "tiny",
            "store": str(tmp_path / "store"),
            "stages": {"dpo": {"lr": 5.0e-5}},
        }
    )


def saved_run(tmp_path: Path) -> tuple[RunSpec, Store, str]:
    spec = recorded_spec(tmp_path)
    store = open_store(spec.store)
    record = new_run(spec, executor="inline")
    save_run(store, record)
    return spec, store, record.run_id


def edit_record(store: Store, run_id: str, edit: Callable[[dict[str, Any]], object]) -> None:
    doc = store.get_record(RUNS_PREFIX + run_id)
    assert doc is not None
    edit(doc)
    store.put_record(RUNS_PREFIX + run_id, doc)


def strip_configs(doc: dict[str, Any], stages: tuple[str, ...] | None = None) -> None:
    """The record as code from before configs were recorded wrote it (for `stages`, default all)."""
    for name, stage in doc["stages"].items():
        if stages is None or name in stages:
            del stage["config"]
