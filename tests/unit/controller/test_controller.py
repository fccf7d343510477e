from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from character.controller.executor import StageState, StageStatus
from character.controller.runs import RunRecord, load_run, save_run
from character.controller.scheduler import Controller, ControllerConfig, RunEvent
from character.errors import InvalidInput, NotFound
from character.pipeline.dag import stage_keys
from character.pipeline.runner import save_result
from character.pipeline.spec import parse_spec
from character.pipeline.stage import StageResult
from character.progress import ProgressEvent
from character.store.local import LocalStore
from pydantic import ValidationError

from tests.unit.controller.helpers import Caller, Clock, ScriptedExecutor, make_record

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


def _saved_as_seen(controller: Controller) -> None:
    """Every state change is in the store by the end of the pass that made it."""
    for seen in controller.list():
        stored = load_run(controller.store, seen.run_id)
        assert stored.model_dump(exclude=_PROGRESS) == seen.model_dump(exclude=_PROGRESS)


_PROGRESS = {"stages": {"__all__": {"progress"}}}


def _steps(controller: Controller, n: int, clock: Clock | None = None, advance: float = 0.0) -> None:
    for _ in range(n):
        controller.step()
        _saved_as_seen(controller)
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
        _saved_as_seen(controller)
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
    events: list[RunEvent] = []
    caller = Caller(5)
    watcher = threading.Thread(target=lambda: events.extend(controller.watch("run-test", caller, tick=0.01)))
    watcher.start()
    controller.start()
    watcher.join(timeout=10)
    controller.stop()
    assert not watcher.is_alive() and not caller.gave_up
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


# ---------------------------------------------------------------- the state machine, step by step
# The pass below is driven by hand on a fake clock: each step() is one pass of the loop.


def _at(clock: Clock, later: float = 0.0) -> datetime:
    return datetime.fromtimestamp(clock.now + later, UTC)


def _watching(controller: Controller, run_id: str = "run-test") -> tuple[Iterator[RunEvent], list[RunEvent]]:
    """A watcher of the run, registered now (it has taken its first event), to be read once with
    `_drain`: its caller counts as gone, so it ends, unregistered, when its inbox is empty."""
    watch = controller.watch(run_id, alive=lambda: False, tick=0.001)
    return watch, [next(watch)]


def _drain(watch: Iterator[RunEvent], events: list[RunEvent]) -> list[RunEvent]:
    return events + list(watch)


def _changes(controller: Controller, passes: int = 1) -> list[tuple[str | None, StageState | None, str]]:
    """(stage, state, message) of the events a watcher of run-test gets from the next `passes`
    passes (after its snapshot: each stage's state, then the run's; no progress here)."""
    watch, events = _watching(controller)
    _steps(controller, passes)
    snapshot = len(controller.get("run-test").stages) + 1
    return [(e.stage, e.state, e.message) for e in _drain(watch, events)[snapshot:]]


def test_backoff_grows_by_the_factor_from_the_base_up_to_the_cap() -> None:
    config = ControllerConfig(backoff_base_s=3, backoff_factor=2, backoff_max_s=20)
    assert [config.backoff(n) for n in (1, 2, 3, 4)] == [3, 6, 12, 20]
    assert ControllerConfig(backoff_base_s=5, backoff_max_s=5).backoff(3) == 5  # a cap equal to the base is fine


def test_a_retry_waits_exactly_its_backoff_and_fences_the_failed_attempt(store) -> None:
    clock = Clock()
    controller, executor = _controller(store, {"b": ["fail", "ok"]}, clock)
    controller.submit_record(make_record())
    watch, events = _watching(controller)
    _until(controller, lambda r: r.stages["b"].state is P and r.stages["b"].attempts == 1)
    assert [(e.stage, e.state, e.message, e.attempt) for e in _drain(watch, events)][-1] == (
        "b", P, "attempt 1 failed: out of memory; retrying in 2 s", 1)
    failed_at = clock.now
    b = controller.get("run-test").stages["b"]
    assert b.message == "attempt 1 failed: out of memory; retrying in 2 s"
    assert b.last_failure == "attempt 1: out of memory"
    assert b.next_attempt_at == _at(clock, 2) and b.handle is None
    assert executor.cancelled == ["b-a1"]  # the given-up attempt is told to stop writing
    clock.advance(1.999)
    _steps(controller, 2)
    assert controller.get("run-test").stages["b"].attempts == 1
    clock.now = failed_at + 2
    _steps(controller, 1)
    b = controller.get("run-test").stages["b"]
    assert b.state is R and b.attempts == 2 and b.handle == "b-a2" and b.next_attempt_at is None
    assert b.started_at == _at(clock) and b.message == "attempt 2 running"
    assert b.last_failure == "attempt 1: out of memory"  # kept while the retry runs
    job = executor.started[-1]
    assert (job.run_id, job.stage, job.attempt, job.key, job.store_uri) == (
        "run-test", "b", 2, "key-run-test-b", store.uri)


def test_one_attempt_allowed_fails_at_the_first_failure_and_cancels_downstream(store) -> None:
    clock = Clock()
    config = CONFIG.model_copy(update={"max_attempts": 1})
    controller, executor = _controller(store, {"b": ["fail"]}, clock, config)
    controller.submit_record(make_record())
    watch, events = _watching(controller)
    _steps(controller, 8)
    events = _drain(watch, events)
    assert [(e.stage, e.state, e.message) for e in events if e.state in (F, C)] == [
        ("b", F, "out of memory (gave up after 1 attempts)"), ("c", C, "not run: stage b failed"),
        (None, F, "stage b failed: out of memory (gave up after 1 attempts)")]
    record = load_run(store, "run-test")
    assert record.stages["b"].message == "out of memory (gave up after 1 attempts)"
    assert record.stages["b"].finished_at == _at(clock)
    assert record.stages["c"].state is C and record.stages["c"].message == "not run: stage b failed"
    assert record.state is F and record.message == "stage b failed: out of memory (gave up after 1 attempts)"
    assert [j.stage for j in executor.started] == ["a", "b"]


def test_a_non_retryable_failure_says_so(store) -> None:
    controller, _ = _controller(store, {"a": ["invalid"]})
    controller.submit_record(make_record())
    _steps(controller, 4)
    record = load_run(store, "run-test")
    assert record.stages["a"].message == "bad config (not retryable)"
    assert [record.stages[n].message for n in "bc"] == ["not run: stage a failed", "not run: stage b cancelled"]
    snapshot = list(controller.watch("run-test", alive=lambda: False, tick=0.001))
    assert (snapshot[-1].stage, snapshot[-1].state, snapshot[-1].message) == (
        None, F, "stage a failed: bad config (not retryable)")


def test_a_start_refused_for_good_fails_the_stage_at_once(store) -> None:
    controller, executor = _controller(store, {"a": ["refuse"]})
    controller.submit_record(make_record())
    _steps(controller, 2)
    a = load_run(store, "run-test").stages["a"]
    assert a.state is F and a.attempts == 1 and executor.started == []
    assert a.message == "could not start: no such run on this worker (not retryable)"


def test_a_start_that_may_pass_later_is_retried(store) -> None:
    clock = Clock()
    controller, _ = _controller(store, {"a": ["crash", "ok"]}, clock)
    controller.submit_record(make_record())
    clock.advance(3)
    assert _changes(controller) == [
        ("a", R, "attempt 1 starting"),
        ("a", P, "attempt 1 failed: could not start: RuntimeError: worker refused; retrying in 2 s"),
        (None, R, "")]
    assert load_run(store, "run-test").updated_at == _at(clock)
    a = controller.get("run-test").stages["a"]
    assert a.message == "attempt 1 failed: could not start: RuntimeError: worker refused; retrying in 2 s"
    assert a.next_attempt_at == _at(clock, 2)


def test_a_stage_is_saved_as_running_before_it_is_launched(store) -> None:
    seen: list[tuple[StageState, int, str | None, bool]] = []
    clock = Clock()

    class Spy(ScriptedExecutor):
        def start(self, job):
            record = load_run(self.store, job.run_id)
            stage = record.stages[job.stage]
            seen.append((stage.state, stage.attempts, stage.handle, record.updated_at == _at(clock)))
            return super().start(job)

    controller = Controller(store, Spy(store), CONFIG, clock=clock)
    controller.submit_record(make_record())
    _steps(controller, 8, clock, advance=1)
    assert seen == [(R, 1, None, True)] * 3
    assert load_run(store, "run-test").state is S


def test_watchers_see_every_change_with_its_stage_attempt_and_message(store) -> None:
    clock = Clock()
    controller, _ = _controller(store, clock=clock)
    record = make_record()
    save_result(store, StageResult(stage="a", key=record.stages["a"].key))
    controller.submit_record(record)
    watch, events = _watching(controller)
    clock.advance(5)
    _steps(controller, 1)
    assert load_run(store, "run-test").stages["a"].finished_at == _at(clock)
    _steps(controller, 5)
    got = [(e.run_id, e.stage, e.state, e.message, e.attempt) for e in _drain(watch, events)]
    assert got == [("run-test", "a", P, "", 0), ("run-test", "b", P, "", 0), ("run-test", "c", P, "", 0),
             ("run-test", None, P, "", 0),
             ("run-test", "a", S, "cached", 0),
             ("run-test", "b", R, "attempt 1 starting", 1),
             ("run-test", None, R, "", 0),
             ("run-test", "b", S, "done", 1),
             ("run-test", "c", R, "attempt 1 starting", 1),
             ("run-test", "c", S, "done", 1),
             ("run-test", None, S, "", 0)]
    final = load_run(store, "run-test")
    assert final.stages["a"].cached and final.stages["a"].message == "cached"
    assert not final.stages["b"].cached and final.stages["b"].message == ""
    assert controller._watchers == {}  # type: ignore[attr-defined]


def test_events_go_only_to_the_watchers_of_their_run(store) -> None:
    controller, _ = _controller(store)
    controller.submit_record(make_record("run-1"))
    controller.submit_record(make_record("run-2", dag={"x": (), "y": ("x",)}))
    watch, events = _watching(controller, "run-1")
    _steps(controller, 8)
    events = _drain(watch, events)
    assert {e.run_id for e in events} == {"run-1"}
    assert events[-1].stage is None and events[-1].state is S


def test_a_stage_stopped_by_its_worker_is_retried(store) -> None:
    controller, _ = _controller(store, {"a": ["stopped", "ok"]})
    controller.submit_record(make_record())
    _steps(controller, 2)
    assert _changes(controller) == [
        ("a", P, "attempt 1 failed: stopped by its worker: worker shutting down; retrying in 2 s")]
    a = controller.get("run-test").stages["a"]
    assert a.state is P
    assert a.message == "attempt 1 failed: stopped by its worker: worker shutting down; retrying in 2 s"


def test_without_a_stage_timeout_a_long_stage_is_left_running(store) -> None:
    clock = Clock()
    controller, executor = _controller(store, {"a": ["hang"]}, clock)
    controller.submit_record(make_record())
    _steps(controller, 3, clock, advance=1e6)
    assert controller.get("run-test").stages["a"].state is R and executor.cancelled == []


def test_the_stage_timeout_counts_from_the_attempt_start(store) -> None:
    clock = Clock()
    config = CONFIG.model_copy(update={"stage_timeout_s": 60.0})
    controller, executor = _controller(store, {"a": ["hang"]}, clock, config)
    controller.submit_record(make_record())
    _steps(controller, 1)
    clock.advance(60)
    _steps(controller, 1)
    assert controller.get("run-test").stages["a"].state is R  # exactly the limit: not over it
    clock.advance(0.5)
    assert _changes(controller) == [("a", P, "attempt 1 failed: ran longer than stage_timeout_s=60; retrying in 2 s")]
    a = controller.get("run-test").stages["a"]
    assert a.message == "attempt 1 failed: ran longer than stage_timeout_s=60; retrying in 2 s"
    assert executor.cancelled == ["a-a1"]


class _Unreachable(ScriptedExecutor):
    """A worker that cannot be polled while `down` is set."""

    down = False

    def poll(self, handle: str) -> StageStatus:
        if self.down:
            raise ConnectionError("no route to host")
        return super().poll(handle)


def test_a_stage_is_given_up_exactly_when_unreachable_for_the_timeout(store) -> None:
    clock = Clock()
    executor = _Unreachable(store, {"a": ["hang"]})
    controller = Controller(store, executor, CONFIG, clock=clock)
    controller.submit_record(make_record())
    _steps(controller, 1)
    executor.down = True
    saved = load_run(store, "run-test")
    _steps(controller, 1)  # first failed poll: the 30 s start now
    clock.advance(20)
    _steps(controller, 1)
    assert load_run(store, "run-test") == saved  # passes that change nothing write nothing
    executor.down = False
    _steps(controller, 1)  # reachable again: the count starts afresh
    executor.down = True
    clock.advance(20)
    _steps(controller, 1)
    clock.advance(29)
    _steps(controller, 1)
    assert controller.get("run-test").stages["a"].state is R
    clock.advance(1)
    assert [c[:2] for c in _changes(controller)] == [("a", P)]
    a = controller.get("run-test").stages["a"]
    assert a.state is P and a.attempts == 1 and executor.cancelled == ["a-a1"]
    assert a.message == ("attempt 1 failed: cannot poll a-a1 for 30 s: ConnectionError: no route to host; "
                         "retrying in 2 s")


class _Progressing(ScriptedExecutor):
    """Reports one progress event per poll while a stage runs."""

    def __init__(self, store, script=None):
        super().__init__(store, script)
        self.queued: dict[str, list[ProgressEvent]] = {}

    def poll(self, handle: str) -> StageStatus:
        done = self.polls.get(handle, 0) + 1
        self.queued.setdefault(handle, []).append(ProgressEvent(task=handle, done=done, total=None))
        return super().poll(handle)

    def take_progress(self, handle: str) -> list[ProgressEvent]:
        return self.queued.pop(handle, [])


def test_progress_reaches_watchers_and_the_running_stage(store) -> None:
    executor = _Progressing(store, {"a": ["hang"]})
    controller = Controller(store, executor, CONFIG, clock=Clock())
    controller.submit_record(make_record())
    controller.step()
    watch, events = _watching(controller)
    controller.step()
    progress = [e for e in _drain(watch, events) if e.progress is not None]
    assert [(e.run_id, e.stage, e.progress.done, e.attempt) for e in progress] == [("run-test", "a", 1, 1)]
    assert controller.get("run-test").stages["a"].progress == ProgressEvent(task="a-a1", done=1, total=None)
    assert controller.list()[0].stages["a"].progress == ProgressEvent(task="a-a1", done=1, total=None)
    # a new watcher gets the running stage's latest progress in its snapshot, right after its state
    snapshot = list(controller.watch("run-test", alive=lambda: False, tick=0.001))
    assert [(e.stage, e.state, e.progress) for e in snapshot] == [
        ("a", R, None), ("a", None, ProgressEvent(task="a-a1", done=1, total=None)), ("b", P, None), ("c", P, None),
        (None, R, None)]
    assert snapshot[1].run_id == "run-test" and snapshot[1].attempt == 1


def test_a_running_stage_without_progress_has_only_its_state_in_a_snapshot(store) -> None:
    controller, _ = _controller(store, {"a": ["hang"]})
    controller.submit_record(make_record())
    _steps(controller, 2)
    snapshot = list(controller.watch("run-test", alive=lambda: False, tick=0.001))
    assert [(e.run_id, e.stage, e.state, e.message, e.attempt) for e in snapshot] == [
        ("run-test", "a", R, "attempt 1 running", 1), ("run-test", "b", P, "", 0), ("run-test", "c", P, "", 0),
        ("run-test", None, R, "", 0)]


def test_cancelling_a_run_whose_last_stage_runs_ends_it_cancelled(store) -> None:
    clock = Clock()
    controller, executor = _controller(store, {"c": ["hang"]}, clock)
    controller.submit_record(make_record())
    _until(controller, lambda r: r.stages["c"].state is R)
    clock.advance(7)
    watch, events = _watching(controller)
    cancelled = controller.cancel("run-test")
    assert cancelled.cancel_requested and cancelled.message == "cancelling" and cancelled.state is R
    stored = load_run(store, "run-test")
    assert stored.cancel_requested and stored.updated_at == _at(clock)
    _steps(controller, 1)
    record = load_run(store, "run-test")
    assert record.state is C and record.message == "cancelled"
    assert record.stages["c"].state is C and record.stages["c"].message == "cancelled by request"
    assert executor.cancelled == ["c-a1"]
    changes = [(e.stage, e.state, e.message) for e in _drain(watch, events)][4:]
    assert changes == [("c", C, "cancelled by request"), (None, C, "cancelled")]
    assert controller.cancel("run-test") == record  # finished: nothing more to cancel


def test_cancel_never_starts_pending_stages_and_survives_a_failing_executor_cancel(store) -> None:
    class Stubborn(ScriptedExecutor):
        def cancel(self, handle: str) -> None:
            super().cancel(handle)
            raise ConnectionError("worker gone")

    controller = Controller(store, Stubborn(store, {"a": ["hang"]}), CONFIG, clock=Clock())
    controller.submit_record(make_record())
    _steps(controller, 2)
    controller.cancel("run-test")
    watch, events = _watching(controller)
    _steps(controller, 2)
    assert [(e.stage, e.state, e.message) for e in _drain(watch, events)][4:] == [
        ("a", C, "cancelled by request"), ("b", C, "cancelled by request"), ("c", C, "cancelled by request"),
        (None, C, "cancelled")]
    record = load_run(store, "run-test")
    assert record.state is C
    assert [(s.state, s.message) for s in record.stages.values()] == [(C, "cancelled by request")] * 3
    assert record.stages["b"].attempts == 0 and controller.executor.cancelled == ["a-a1"]


def test_cancelling_an_unknown_run_is_not_found(store) -> None:
    controller, _ = _controller(store)
    with pytest.raises(NotFound, match="no run 'nope'"):
        controller.cancel("nope")
    with pytest.raises(NotFound, match="no run 'nope'"):
        controller.get("nope")


def test_a_run_changed_by_another_controller_is_left_to_it(store) -> None:
    old, executor = _controller(store, {"a": ["hang"]})
    old.submit_record(make_record())
    old.step()
    new = Controller(store, executor, CONFIG, clock=Clock())
    assert new.recover() == ["run-test"]
    executor.jobs["a-a1"] = (executor.jobs["a-a1"][0], "ok")
    _steps(new, 2)  # the new controller saves a newer version of the run
    old.step()  # the old one's save conflicts: it lets the run go
    old.step()
    _steps(new, 6)
    assert load_run(store, "run-test").state is S
    assert [j.stage for j in executor.started] == ["a", "b", "c"]
    assert old.list()[0] == load_run(store, "run-test")  # old no longer holds its own copy


def test_a_run_lost_to_another_controller_does_not_hold_up_the_others(store) -> None:
    old, executor = _controller(store, {"a": ["hang"]})
    old.submit_record(make_record())
    old.submit_record(make_record("run-2", dag={"x": (), "y": ("x",)}))
    _steps(old, 2)
    new, _ = _controller(store)
    new.submit_record(make_record())  # the new controller takes run-test over
    executor.jobs["a-a1"] = (executor.jobs["a-a1"][0], "ok")
    old.step()  # run-test's save conflicts; run-2 goes on in the same pass
    assert load_run(store, "run-2").stages["x"].state is S
    assert [j.stage for j in executor.started] == ["a", "x", "y"]


def test_a_result_that_appears_while_a_retry_waits_is_taken_without_running(store) -> None:
    clock = Clock()
    controller, executor = _controller(store, {"a": ["fail", "ok"]}, clock)
    controller.submit_record(make_record())
    _steps(controller, 3)
    assert controller.get("run-test").stages["a"].state is P
    save_result(store, StageResult(stage="a", key="key-run-test-a"))  # another run made it meanwhile
    clock.advance(2)
    watch, events = _watching(controller)
    _steps(controller, 1)
    cached = _drain(watch, events)[4]
    assert (cached.stage, cached.state, cached.message, cached.attempt) == ("a", S, "cached", 1)
    a = load_run(store, "run-test").stages["a"]
    assert a.cached and a.attempts == 1 and [j.stage for j in executor.started] == ["a", "b"]


def test_recover_takes_only_unfinished_runs(store) -> None:
    done, _ = _controller(store)
    done.submit_record(make_record("run-done"))
    _steps(done, 8)
    stalled = make_record("run-stalled")
    save_run(store, stalled)
    controller, _ = _controller(store)
    assert controller.recover() == ["run-stalled"]


def test_start_recovers_the_stored_runs_unless_told_not_to(store) -> None:
    save_run(store, make_record())
    own_only, executor = _controller(store)
    own_only.start(recover=False)
    own_only.stop()
    own_only.step()
    assert executor.started == []
    controller, executor = _controller(store)
    controller.start()
    controller.stop()
    controller.step()  # whether or not the loop made its first pass before it stopped
    assert [j.stage for j in executor.started] == ["a"]


def test_the_loop_thread_does_not_keep_the_process_alive_and_stop_ends_it(store) -> None:
    controller, _ = _controller(store)
    controller.start(recover=False)
    loop = [t for t in threading.enumerate() if t.name == "controller"]
    assert len(loop) == 1 and loop[0].daemon
    controller.stop()
    assert not loop[0].is_alive()
    controller.stop()  # stopping twice is harmless


class _FlakyStore(LocalStore):
    """Its record writes fail `failures` times (an S3 outage), then work again."""

    failures = 0

    def put_record(self, key, value, if_version=None):
        if self.failures:
            self.failures -= 1
            raise OSError("store unreachable")
        return super().put_record(key, value, if_version)


def test_a_failing_pass_is_logged_and_the_loop_goes_on(tmp_path, caplog) -> None:
    store = _FlakyStore(tmp_path / "store")
    controller = Controller(store, ScriptedExecutor(store), CONFIG.model_copy(update={"poll_interval_s": 0.005}),
                            clock=Clock())
    controller.submit_record(make_record())
    store.failures = 1
    caller = Caller(5)
    with caplog.at_level(logging.ERROR, logger="character.controller.scheduler"):
        controller.start(recover=False)
        events = list(controller.watch("run-test", caller, tick=0.01))
        controller.stop()
    assert events[-1].stage is None and events[-1].state is S and not caller.gave_up
    assert [r.getMessage() for r in caplog.records] == ["controller pass failed"]
    assert caplog.records[0].exc_info is not None


def test_stop_after_an_unknown_stage_is_refused(store) -> None:
    controller, _ = _controller(store)
    with pytest.raises(NotFound, match=r"no stage 'x' in run run-test; its stages are: a, b, c"):
        controller.submit_record(make_record(), stop_after="x")


def test_a_run_stopped_after_a_stage_ends_cancelled_and_resumes_on_resubmit(store) -> None:
    controller, executor = _controller(store)
    controller.submit_record(make_record(), stop_after="a")
    ended = [c for c in _changes(controller, 6) if c[1] is C]
    assert sorted(ended[:2]) == [("b", C, "not run: the run stops after a"), ("c", C, "not run: the run stops after a")]
    assert ended[2:] == [(None, C, "cancelled")]
    record = load_run(store, "run-test")
    assert record.state is C and record.stages["a"].state is S
    assert [(record.stages[n].state, record.stages[n].message) for n in "bc"] == [
        (C, "not run: the run stops after a")] * 2
    assert [j.stage for j in executor.started] == ["a"]
    _, created = controller.submit_record(make_record())
    assert not created
    _steps(controller, 6)
    assert load_run(store, "run-test").state is S and [j.stage for j in executor.started] == ["a", "b", "c"]


def test_a_run_stopped_after_a_stage_waits_for_the_others_to_end(store) -> None:
    controller, _ = _controller(store, {"b": ["hang"]})
    controller.submit_record(make_record(dag={"a": (), "b": (), "c": ("a",)}), stop_after="b")
    _steps(controller, 4)
    record = controller.get("run-test")
    assert record.stages["a"].state is S and record.stages["b"].state is R
    assert record.stages["c"].state is P  # held, and not ended while b runs


def test_a_failed_run_resubmitted_gets_a_fresh_retry_budget(store) -> None:
    clock = Clock()
    controller, _ = _controller(store, {"a": ["fail", "fail", "fail", "ok"]}, clock)
    controller.submit_record(make_record())
    _steps(controller, 20, clock, advance=10)
    assert load_run(store, "run-test").state is F
    record, created = controller.submit_record(make_record())
    assert not created and record.state is R and record.stages["a"].message == "resumed"
    assert record.updated_at == _at(clock)
    _steps(controller, 10, clock, advance=10)
    final = load_run(store, "run-test")
    assert final.state is S and final.stages["a"].attempts == 4


def test_returned_records_are_snapshots(store) -> None:
    controller, _ = _controller(store)
    submitted, _ = controller.submit_record(make_record())
    again, _ = controller.submit_record(make_record())
    seen = controller.get("run-test")
    listed = controller.list()[0]
    _steps(controller, 2)
    for record in (submitted, again, seen, listed):
        assert record.stages["a"].state is P
    assert controller.list()[0].stages["a"].state is R


def test_list_shows_active_runs_as_the_controller_sees_them_newest_first(store) -> None:
    executor = _Progressing(store, {"a": ["hang"]})
    controller = Controller(store, executor, CONFIG, clock=Clock())
    older = make_record("run-old")
    save_run(store, older)
    newer = make_record("run-new")
    newer.created_at = newer.created_at.replace(year=2026)
    controller.submit_record(newer)
    _steps(controller, 2)
    listed = controller.list()
    assert [r.run_id for r in listed] == ["run-new", "run-old"]
    assert listed[0].stages["a"].progress is not None  # in memory; the store has no progress yet
    assert load_run(store, "run-new").stages["a"].progress is None


def test_a_submitted_spec_runs_in_the_controllers_store_under_its_executor_name(store, tmp_path) -> None:
    spec = parse_spec({"constitution": "sarcasm", "model": "tiny", "store": str(tmp_path / "elsewhere")})
    controller = Controller(store, ScriptedExecutor(store), CONFIG, clock=Clock())
    record, created = controller.submit(spec, stop_after="prompts")
    assert created and record.executor == "ScriptedExecutor" and record.spec["store"] == store.uri
    assert record.stages["prompts"].key == stage_keys(spec.model_copy(update={"store": store.uri}))["prompts"]
    with pytest.raises(NotFound, match="no stage 'nope'"):
        controller.submit(spec, stop_after="nope")
    named = Controller(store, ScriptedExecutor(store), CONFIG, executor_name="services", clock=Clock())
    other = spec.model_copy(update={"seed": spec.seed + 1})
    assert named.submit(other)[0].executor == "services"


def test_a_resubmitted_run_is_announced_to_its_watchers(store) -> None:
    record = make_record()
    record.stages["a"].transition(R)
    save_run(store, record)  # a run another controller left running
    controller, _ = _controller(store)
    watch, events = _watching(controller)
    controller.submit_record(make_record())
    assert [(e.stage, e.state, e.message) for e in _drain(watch, events)][-1] == (None, R, "submitted")


def test_a_watcher_ends_when_the_controller_stops_and_others_keep_theirs(store) -> None:
    controller, _ = _controller(store)
    controller.submit_record(make_record())
    caller = Caller()
    staying = controller.watch("run-test", caller, tick=0.001)
    assert next(staying).stage == "a"
    leaving = controller.watch("run-test", alive=lambda: False, tick=0.001)
    assert len(list(leaving)) == 4  # it left while the other one stays
    _steps(controller, 8)
    rest = list(staying)
    assert rest[-1].stage is None and rest[-1].state is S and not caller.gave_up
    assert controller._watchers == {}  # type: ignore[attr-defined]
    controller.submit_record(make_record("run-2"))
    controller.stop()
    asked: list[bool] = []
    stays = Caller()
    events = list(controller.watch("run-2", lambda: asked.append(True) or stays(), tick=0.001))
    assert [e.stage for e in events] == ["a", "b", "c", None]
    assert asked == [True]  # it ended at its first idle tick, its caller still there


def test_the_after_success_hook_gets_each_succeeded_run_once_as_a_copy(store) -> None:
    received: list[RunRecord] = []

    def hook(record: RunRecord) -> None:
        received.append(record.model_copy(deep=True))
        record.stages["c"].message = "edited by the hook"  # a copy: the run does not change

    controller = Controller(store, ScriptedExecutor(store, {"x": ["invalid"]}), CONFIG, clock=Clock(),
                            on_succeeded=hook)
    controller.submit_record(make_record("run-ok"))
    controller.submit_record(make_record("run-failing", {"x": ()}))
    _steps(controller, 12)
    assert load_run(store, "run-failing").state is F
    assert [(r.run_id, r.state) for r in received] == [("run-ok", S)]
    assert received[0].stages["c"].state is S and load_run(store, "run-ok").stages["c"].message == ""


def test_a_failing_after_success_hook_leaves_the_run_succeeded(store) -> None:
    def hook(record: RunRecord) -> None:
        raise RuntimeError("the registry is down")

    controller = Controller(store, ScriptedExecutor(store), CONFIG, clock=Clock(), on_succeeded=hook)
    controller.submit_record(make_record())
    _steps(controller, 10)
    assert load_run(store, "run-test").state is S
