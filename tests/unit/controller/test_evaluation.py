"""`evaluate_stored_run` (what `oct eval` calls): a part or classifier that does not exist is
refused before any work, naming what exists. (The evaluations themselves, on the tiny model,
are in tests/unit/evaluate/test_stage.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from character.controller.evaluation import evaluate_stored_run
from character.controller.runs import new_run, save_run
from character.errors import InvalidInput
from character.pipeline.spec import parse_spec
from character.stages.evaluate import PARTS
from character.store import open_store
from character.store.base import Store


@pytest.fixture()
def stored(tmp_path: Path) -> tuple[Store, str]:
    store = open_store(str(tmp_path / "store"))
    record = new_run(parse_spec({"constitution": "sarcasm", "model": "tiny", "store": store.uri}), executor="test")
    save_run(store, record)
    return store, record.run_id


def test_an_unknown_part_is_refused_listing_the_parts(stored: tuple[Store, str]) -> None:
    store, run_id = stored
    with pytest.raises(InvalidInput) as err:
        evaluate_stored_run(store, run_id, part="vibes")
    assert err.value.where == "part" and all(p in str(err.value) for p in (*PARTS, "all"))


def test_an_unknown_classifier_is_refused_naming_the_choices(stored: tuple[Store, str]) -> None:
    store, run_id = stored
    with pytest.raises(InvalidInput, match=r"unknown classifier 'svm'; choose frozen or finetune"):
        evaluate_stored_run(store, run_id, part="robustness", classifier="svm")
