from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from character.controller.runs import RunRecord
from character.store import LocalStore, open_store

from tests.unit.serving.helpers import trained_run


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> LocalStore:
    found = open_store(str(tmp_path_factory.mktemp("serving") / "store"))
    assert isinstance(found, LocalStore)
    return found


@pytest.fixture(scope="module")
def personas(store: LocalStore, tmp_path_factory: pytest.TempPathFactory,
             torch_one_thread: None) -> Iterator[tuple[RunRecord, RunRecord]]:
    """Two trained runs on the tiny model: alice's and bob's."""
    folder: Path = tmp_path_factory.mktemp("adapters")
    yield trained_run(store, folder, seed=1, owner="alice"), trained_run(store, folder, seed=2, owner="bob")
