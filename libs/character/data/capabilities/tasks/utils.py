"""Loads the shipped capability JSONL files (one folder up) for the task YAMLs beside this
file, so the tasks run wherever the package is installed, with no download."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent.parent


def load(file: str, **_metadata: Any) -> Any:
    """A datasets.DatasetDict with one "test" split holding the rows of `file`."""
    import datasets

    with open(DATA / file, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})
