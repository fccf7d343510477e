"""A retried stage never races the attempt it replaces: the controller cancels the attempt it
gave up on (its worker unreachable, or past the deadline) before the retry starts."""

from __future__ import annotations

from pathlib import Path

import pytest
from character.controller.executor import StageState, StageStatus
from character.controller.runs import load_run
from character.controller.scheduler import Controller, ControllerConfig
from character.store.local import LocalStore

from tests.unit.controller.helpers import Clock, ScriptedExecutor, make_record


class Partitioned(ScriptedExecutor):
    """The first attempt's worker stops answering polls (a network partition): it may still
    be running and writing."""

    def poll(self, handle: str) -> StageStatus:
        if handle.endswith("-a1"):
            raise ConnectionError("worker unreachable")
        return super().poll(handle)


@pytest.mark.attack("retry a stage while its unreachable first attempt still runs")
def test_an_unreachable_attempt_is_cancelled_before_its_retry_starts(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    clock = Clock()
    executor = Partitioned(store)
    config = ControllerConfig(max_attempts=3, backoff_base_s=1, backoff_max_s=1, unreachable_timeout_s=30)
    controller = Controller(store, executor, config, clock=clock)
    controller.submit_record(make_record(dag={"a": ()}))
    for _ in range(10):
        controller.step()
        clock.advance(20)
    assert [job.attempt for job in executor.started][:2] == [1, 2]
    assert "a-a1" in executor.cancelled  # fenced before attempt 2 was started


@pytest.mark.attack("a stage past its deadline keeps running beside its retry")
def test_a_timed_out_attempt_is_cancelled(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    clock = Clock()
    executor = ScriptedExecutor(store, {"a": ["hang", "ok"]})
    config = ControllerConfig(max_attempts=3, backoff_base_s=1, backoff_max_s=1, stage_timeout_s=60)
    controller = Controller(store, executor, config, clock=clock)
    controller.submit_record(make_record(dag={"a": ()}))
    for _ in range(10):
        controller.step()
        clock.advance(40)
    assert executor.cancelled == ["a-a1"]
    assert [job.attempt for job in executor.started] == [1, 2]


@pytest.mark.attack("two controllers drive one run and overwrite each other's record")
def test_a_controller_that_lost_its_run_stops_writing_it(tmp_path: Path) -> None:
    """An old controller still running after a new one adopted its runs: the new one's change
    (a cancel) survives, and the old one lets go of the run instead of overwriting it."""
    store = LocalStore(tmp_path / "store")
    clock = Clock()
    old = Controller(store, ScriptedExecutor(store), ControllerConfig(), clock=clock)
    old.submit_record(make_record(dag={"a": ()}))
    old.step()  # stage a starts
    new = Controller(store, ScriptedExecutor(store), ControllerConfig(), clock=clock)
    assert new.recover() == ["run-test"]
    new.cancel("run-test")
    for _ in range(3):
        old.step()  # a succeeds on the old controller's executor: its write must not land
    record = load_run(store, "run-test")
    assert record.cancel_requested and record.stages["a"].state is not StageState.SUCCEEDED
    assert old.get("run-test").cancel_requested  # the old controller reads the run again from the store
