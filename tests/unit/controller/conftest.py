from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _no_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests save a run record on nearly every pass of the controller; flushing each one to
    disk made fsync most of their time (and of every mutant's, under `make mutation`). What a
    write survives is the store's property, tested in tests/unit/store; here only what the
    controller writes and reads back matters, which the page cache serves the same."""
    monkeypatch.setattr(os, "fsync", lambda fd: None)
