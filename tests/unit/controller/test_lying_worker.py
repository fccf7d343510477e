"""A worker that reports success without storing the stage's result is not believed: the
attempt fails with that reason and is retried, and the run succeeds only once the result is
really in the store."""

from __future__ import annotations

import pytest
from character.controller.executor import StageState, StageStatus
from character.controller.runs import load_run
from character.controller.scheduler import Controller, ControllerConfig
from character.pipeline.runner import stored_result
from character.store.local import LocalStore

from tests.unit.controller.helpers import Clock, ScriptedExecutor, make_record

CONFIG = ControllerConfig(max_attempts=3, backoff_base_s=1, backoff_factor=2, backoff_max_s=4,
                          unreachable_timeout_s=30)


class LyingExecutor(ScriptedExecutor):
    """Outcome "lie": the stage reports SUCCEEDED but stores nothing."""

    def poll(self, handle: str) -> StageStatus:
        _, outcome = self.jobs.get(handle, (None, ""))
        if outcome == "lie" and self.polls.get(handle, 0) >= 1:
            self.polls[handle] += 1
            return StageStatus(state=StageState.SUCCEEDED, message="done, honestly")
        return super().poll(handle)


def _run(store: LocalStore, script: dict[str, list[str]]) -> tuple[Controller, LyingExecutor, Clock]:
    clock = Clock()
    executor = LyingExecutor(store, script)
    controller = Controller(store, executor, CONFIG, clock=clock)
    controller.submit_record(make_record())
    for _ in range(60):
        controller.step()
        clock.advance(5)
        if controller.get("run-test").state in (StageState.SUCCEEDED, StageState.FAILED):
            break
    return controller, executor, clock


@pytest.fixture
def store(tmp_path):
    return LocalStore(tmp_path / "store")


def test_success_without_a_result_is_retried_with_that_reason(store: LocalStore) -> None:
    _, executor, _ = _run(store, {"b": ["lie", "ok"]})
    record = load_run(store, "run-test")
    assert record.state is StageState.SUCCEEDED
    b = record.stages["b"]
    assert b.attempts == 2
    assert b.last_failure is not None and "reported success but left no result" in b.last_failure
    assert b.last_failure.startswith("attempt 1:")
    assert stored_result(store, b.key) is not None
    assert [j.attempt for j in executor.started if j.stage == "b"] == [1, 2]
    # c ran only after b's result was really there
    starts = [j.stage for j in executor.started]
    assert starts.index("c") > len(starts) - 2


def test_a_worker_that_always_lies_fails_the_run_and_nothing_downstream_runs(store: LocalStore) -> None:
    _, executor, _ = _run(store, {"b": ["lie"]})
    record = load_run(store, "run-test")
    assert record.state is StageState.FAILED
    assert record.stages["b"].state is StageState.FAILED
    assert "reported success but left no result" in record.stages["b"].message
    assert "gave up after 3 attempts" in record.stages["b"].message
    assert record.stages["c"].state is not StageState.SUCCEEDED
    assert not [j for j in executor.started if j.stage == "c"]
    assert [j.attempt for j in executor.started if j.stage == "b"] == [1, 2, 3]


def test_the_failed_attempt_names_the_worker_and_the_missing_artifact(store: LocalStore) -> None:
    executor = LyingExecutor(store, {"a": ["lie", "ok"]})
    controller = Controller(store, executor, CONFIG, clock=Clock())
    controller.submit_record(make_record())
    controller.step()
    controller.step()
    watch = controller.watch("run-test", alive=lambda: False, tick=0.001)
    snapshot = [next(watch) for _ in range(4)]
    controller.step()
    assert [(e.stage, e.state, e.message) for e in watch] == [
        ("a", StageState.PENDING, "attempt 1 failed: a-a1 reported success but left no result "
                                  "(stage artifact key-run-test); retrying in 1 s")]
    assert snapshot[0].state is StageState.RUNNING
