from __future__ import annotations

import threading

import pytest
from character.controller.executor import StageState
from character.controller.runs import load_run
from character.controller.scheduler import Controller, ControllerConfig
from character.errors import InvalidInput
from character.pipeline.runner import save_result
from character.pipeline.stage import StageResult
from character.store.local import LocalStore
from pydantic import ValidationError

from tests.unit.controller.helpers import Clock, ScriptedExecutor, make_record

P, R, S, F, C = (StageState.PENDING, StageState.RUNNING, StageState.SUCCEEDED, StageState.FAILED,
                 StageState.CANCELLED)
CONFIG = ControllerConfig(max_attempts=3, backoff_base_s=2, backoff_factor=2, backoff_max_s=5,
                          unreachable_timeout_s=30)


@pytest.fixture
def store(tmp_path):
    return LocalStore(tmp_path / "store")


def _controller(store, script=None, clock=None, config=CONFIG):
    executor = ScriptedExecutor(store, script)
    return Controller(store, executor, config, clock=clock or Clock()), executor


def _steps(controller: Controller, n: int, clock: Clock | None = None, advance: float = 0.0) -> None:
    for _ in range(n):
        controller.step()
        if clock is not None:
            clock.advance(advance)


def test_backoff_doubles_up_to_its_cap() -> None:
    assert [CONFIG.backoff(n) for n in (1, 2, 3, 4)] == [2, 4, 5, 5]


def test_config_refuses_a_cap_below_the_base() -> None:
    with pytest.raises(ValidationError, match="backoff_max_s"):
        ControllerConfig(backoff_base_s=10, backoff_max_s=5)


def test_stages_run_once_each_in_dag_order(store) -> None:
    controller, executor = _controller(store)
    controller.submit_record(make_record())
    _steps(controller, 10)
    record = load_run(store, "run-test")
    assert record.state is S
    assert [j.stage for j in executor.started] == ["a", "b", "c"]
    assert all(s.attempts == 1 and s.state is S for s in record.stages.values())
    # b started only after a had succeeded: a's finish is not after b's start
    assert record.stages["a"].finished_at <= record.stages["b"].started_at


def _until(controller: Controller, check, steps: int = 20) -> None:
    for _ in range(steps):
        controller.step()
        if check(controller.get("run-test")):
            return
    raise AssertionError(f"not reached in {steps} steps: {controller.get('run-test')}")


def test_retryable_failures_are_retried_after_the_backoff(store) -> None:
    clock = Clock()
    controller, executor = _controller(store, {"b": ["fail", "fail", "ok"]}, clock)
    controller.submit_record(make_record())
    _until(controller, lambda r: r.stages["b"].attempts == 1 and r.stages["b"].state is P)
    message = controller.get("run-test").stages["b"].message
    assert "attempt 1 failed: out of memory; retrying in 2 s" in message
    _steps(controller, 3)
    assert controller.get("run-test").stages["b"].attempts == 1  # the backoff has not passed
    clock.advance(2.01)
    _until(controller, lambda r: r.stages["b"].attempts == 2 and r.stages["b"].state is P)
    assert "retrying in 4 s" in controller.get("run-test").stages["b"].message
    clock.advance(3.9)
    _steps(controller, 3)
    assert controller.get("run-test").stages["b"].attempts == 2
    clock.advance(0.2)
    _steps(controller, 8)
    record = load_run(store, "run-test")
    assert record.state is S and record.stages["b"].attempts == 3
    assert record.stages["b"].last_failure == "attempt 2: out of memory"
    assert [j.attempt for j in executor.started if j.stage == "b"] == [1, 2, 3]


def test_non_retryable_failure_fails_at_once_and_downstream_never_runs(store) -> None:
    controller, executor = _controller(store, {"b": ["invalid"]})
    controller.submit_record(make_record())
    _steps(controller, 6)
    record = load_run(store, "run-test")
    assert record.state is F
    assert record.stages["b"].state is F and record.stages["b"].attempts == 1
    assert "not retryable" in record.stages["b"].message
    assert record.stages["c"].state is C and record.stages["c"].attempts == 0
    assert "c" not in [j.stage for j in executor.started]


def test_gives_up_after_max_attempts(store) -> None:
    clock = Clock()
    controller, executor = _controller(store, {"a": ["fail"]}, clock)
    controller.submit_record(make_record())
    _steps(controller, 20, clock, advance=10)
    assert [j.attempt for j in executor.started] == [1, 2, 3]
    record = load_run(store, "run-test")
    assert record.state is F and record.stages["a"].attempts == 3
    assert "gave up after 3 attempts" in record.stages["a"].message


def test_a_failing_start_counts_as_a_failed_attempt(store) -> None:
    clock = Clock()
    controller, executor = _controller(store, {"a": ["crash", "ok"]}, clock)
    controller.submit_record(make_record())
    controller.step()
    assert executor.started == []
    stage = controller.get("run-test").stages["a"]
    assert stage.state is P and "could not start: RuntimeError: worker refused" in stage.message
    _steps(controller, 10, clock, advance=3)
    assert load_run(store, "run-test").state is S


def test_a_stage_whose_result_is_stored_is_not_run(store) -> None:
    record = make_record()
    save_result(store, StageResult(stage="a", key=record.stages["a"].key))
    controller, executor = _controller(store)
    controller.submit_record(record)
    _steps(controller, 8)
    record = load_run(store, "run-test")
    assert record.state is S
    assert record.stages["a"].cached and record.stages["a"].attempts == 0
    assert [j.stage for j in executor.started] == ["b", "c"]


def test_a_restarted_controller_adopts_running_stages_and_skips_finished_ones(store) -> None:
    first, executor = _controller(store, {"b": ["hang"]})
    first.submit_record(make_record())
    _steps(first, 5)
    before = load_run(store, "run-test")
    assert before.stages["a"].state is S and before.stages["b"].state is R
    # The first controller dies; the worker (the same executor) still runs b.
    executor.script["b"] = ["ok"]
    executor.jobs["b-a1"] = (executor.jobs["b-a1"][0], "ok")
    second = Controller(store, executor, CONFIG, clock=Clock())
    assert second.recover() == ["run-test"]
    _steps(second, 6)
    after = load_run(store, "run-test")
    assert after.state is S
    assert after.stages["a"].attempts == 1 and after.stages["a"].finished_at == before.stages["a"].finished_at
    assert after.stages["b"].attempts == 1  # adopted, not started again
    assert [j.stage for j in executor.started] == ["a", "b", "c"]


def test_a_lost_attempt_is_retried_after_a_restart(store) -> None:
    clock = Clock()
    first, _ = _controller(store, {"b": ["hang"]}, clock)
    first.submit_record(make_record())
    _steps(first, 5)
    # A new executor that never heard of the handle (the worker restarted too).
    second, executor = _controller(store, None, clock)
    second.recover()
    _steps(second, 10, clock, advance=3)
    record = load_run(store, "run-test")
    assert record.state is S and record.stages["b"].attempts == 2 and record.stages["a"].attempts == 1
    assert [j.stage for j in executor.started] == ["b", "c"]


def test_a_stage_marked_running_without_handle_is_started_again_with_the_same_attempt(store) -> None:
    record = make_record()
    record.stages["a"].transition(R)  # the controller died between saving and starting
    controller, executor = _controller(store)
    controller.submit_record(record)
    _steps(controller, 8)
    assert load_run(store, "run-test").state is S
    assert executor.started[0].stage == "a" and executor.started[0].attempt == 1


def test_an_unpollable_stage_fails_its_attempt_after_the_timeout(store) -> None:
    clock = Clock()
    controller, executor = _controller(store, {"a": ["hang"]}, clock)
    controller.submit_record(make_record())
    controller.step()

    def broken(handle: str):
        raise ConnectionError("no route to host")

    executor.poll = broken  # type: ignore[method-assign]
    _steps(controller, 3, clock, advance=10)
    assert controller.get("run-test").stages["a"].state is R
    clock.advance(30)
    controller.step()
    stage = controller.get("run-test").stages["a"]
    assert stage.state is P and "cannot poll" in stage.message and "no route to host" in stage.message


def test_stage_timeout_cancels_and_retries(store) -> None:
    clock = Clock()
    config = CONFIG.model_copy(update={"stage_timeout_s": 60.0})
    controller, executor = _controller(store, {"a": ["hang", "ok"]}, clock, config)
    controller.submit_record(make_record())
    _steps(controller, 4, clock, advance=30)
    assert executor.cancelled == ["a-a1"]
    assert "stage_timeout_s=60" in controller.get("run-test").stages["a"].message


def test_cancel_stops_running_stages_and_resubmit_resumes(store) -> None:
    controller, executor = _controller(store, {"b": ["hang"]})
    controller.submit_record(make_record())
    _steps(controller, 4)
    controller.cancel("run-test")
    controller.step()
    record = load_run(store, "run-test")
    assert record.state is C and executor.cancelled == ["b-a1"]
    assert record.stages["a"].state is S and record.stages["b"].state is C and record.stages["c"].state is C
    executor.script["b"] = ["ok"]
    _, created = controller.submit_record(make_record())
    assert not created
    _steps(controller, 8)
    record = load_run(store, "run-test")
    assert record.state is S and record.stages["a"].attempts == 1 and record.stages["b"].attempts == 2
    assert [j.stage for j in executor.started].count("a") == 1


def test_submitting_an_active_or_finished_run_returns_it(store) -> None:
    controller, executor = _controller(store)
    _, created = controller.submit_record(make_record())
    assert created
    _, created = controller.submit_record(make_record())
    assert not created
    _steps(controller, 8)
    record, created = controller.submit_record(make_record())
    assert not created and record.state is S
    assert len(executor.started) == 3


def test_watch_streams_events_until_the_run_ends(store) -> None:
    controller, _ = _controller(store, config=CONFIG.model_copy(update={"poll_interval_s": 0.01}))
    controller.submit_record(make_record())
    events = []
    watcher = threading.Thread(target=lambda: events.extend(controller.watch("run-test", tick=0.05)))
    watcher.start()
    controller.start()
    watcher.join(timeout=10)
    controller.stop()
    assert not watcher.is_alive()
    transitions = [(e.stage, e.state) for e in events if e.progress is None]
    assert transitions[-1] == (None, S)
    for name in "abc":
        assert transitions.index((name, R)) < transitions.index((name, S))
    assert transitions.index(("a", S)) < transitions.index(("b", R))


def test_the_same_store_check_names_both_stores(tmp_path) -> None:
    from character.controller.submission import check_same_store

    check_same_store(str(tmp_path) + "/", str(tmp_path))
    with pytest.raises(InvalidInput, match="keeps runs in s3://a/b"):
        check_same_store("s3://other/b", "s3://a/b")
