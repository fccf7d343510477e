from __future__ import annotations

import logging
import threading
import time

import pytest
from character.controller.executor import StageJob, StageState
from character.controller.runs import new_run, save_run
from character.controller.stage_tasks import ShuttingDown, StageJobs, TaskCancelled, TaskManager, TaskStatus
from character.errors import InvalidInput, NotFound
from character.pipeline.spec import parse_spec
from character.pipeline.stage import StageResult
from character.progress import Progress, ProgressEvent
from character.stages import prompts

from tests.unit.controller.helpers import Caller, wait_until


def job(stage: str = "prompts", attempt: int = 1) -> StageJob:
    return StageJob(run_id="run-1", stage=stage, store_uri="/tmp/store", attempt=attempt)


def wait_final(tasks: TaskManager, task_id: str, timeout: float = 3.0) -> TaskStatus:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = tasks.get(task_id)
        if status.state.final:
            return status
        time.sleep(0.005)
    raise AssertionError(f"task {task_id} did not finish: {tasks.get(task_id)}")


def steps(n: int, pause: float = 0.0, release: threading.Event | None = None):
    """Work that reports n progress steps (waiting for `release` first, if given)."""

    def prepare(j: StageJob):
        def work(progress: Progress) -> StageResult:
            if release is not None:
                release.wait(10)
            for i in range(n):
                progress(ProgressEvent(task=j.stage, done=i + 1, total=n))
                time.sleep(pause)
            return StageResult(stage=j.stage, key=f"key-{j.stage}")

        return work

    return prepare


def recording(ran: list[str], release: threading.Event):
    """A prepare whose tasks note their stage in `ran` when they start, then wait for `release`."""

    def prepare(j: StageJob):
        def work(progress: Progress) -> StageResult:
            ran.append(j.stage)
            release.wait(5)
            return StageResult(stage=j.stage, key="k")

        return work

    return prepare


def test_a_task_reports_progress_then_its_result() -> None:
    release = threading.Event()
    tasks = TaskManager(steps(3, release=release))
    status = tasks.start(job())
    caller = Caller()
    watch = tasks.watch(status.task_id, caller)
    events = [next(watch)]  # subscribed: now let the work run
    release.set()
    events += list(watch)
    assert not caller.gave_up  # the watch ended by itself with the task
    assert isinstance(events[0], TaskStatus)
    assert [e.done for e in events if isinstance(e, ProgressEvent)] == [1, 2, 3]
    final = events[-1]
    assert isinstance(final, TaskStatus) and final.state is StageState.SUCCEEDED
    assert final.result_key == "key-prompts"
    assert final.started_at is not None and final.finished_at >= final.started_at


def test_starting_the_same_job_twice_gives_the_same_task() -> None:
    checked: list[int] = []

    def prepare(j: StageJob):
        checked.append(j.attempt)
        return steps(1)(j)

    tasks = TaskManager(prepare)
    first = tasks.start(job())
    assert tasks.start(job()).task_id == first.task_id
    assert checked == [1]  # found, not checked again (the check reads the run record)
    assert tasks.start(job(attempt=2)).task_id != first.task_id


def test_a_job_that_fails_its_checks_is_refused_at_start() -> None:
    def prepare(j: StageJob):
        raise NotFound(f"no run {j.run_id!r}")

    tasks = TaskManager(prepare)
    with pytest.raises(NotFound, match="run-1"):
        tasks.start(job())
    assert tasks.running() == []


def test_unknown_task_ids_are_not_found() -> None:
    with pytest.raises(NotFound) as err:
        TaskManager(steps(1)).get("nope")
    assert str(err.value) == ("no task 'nope' here (finished tasks are kept for a while; a restarted worker "
                              "forgets the tasks of its previous life)")


def test_cancel_stops_the_task_at_its_next_progress_step() -> None:
    tasks = TaskManager(steps(1000, pause=0.01))
    status = tasks.start(job())
    wait_until(lambda: tasks.get(status.task_id).progress is not None)
    tasks.cancel(status.task_id)
    final = wait_final(tasks, status.task_id)
    assert final.state is StageState.CANCELLED
    assert final.progress is not None and final.progress.done < 1000


def test_failures_say_whether_a_retry_can_help(caplog: pytest.LogCaptureFixture) -> None:
    def prepare(j: StageJob):
        def work(progress: Progress) -> StageResult:
            if j.stage == "dpo":
                raise InvalidInput("lr must be > 0", where="stages.dpo.lr")
            raise RuntimeError("CUDA out of memory")

        return work

    tasks = TaskManager(prepare, max_running=2)
    with caplog.at_level(logging.ERROR, logger="character.controller.stage_tasks"):
        invalid = wait_final(tasks, tasks.start(job("dpo")).task_id)
        crash = wait_final(tasks, tasks.start(job("sft")).task_id)
    # only the crash, not the refused input, is logged with its traceback and task
    assert [(r.getMessage(), r.task_id, r.exc_info is not None) for r in caplog.records] == [  # type: ignore[attr-defined]
        ("task crashed", crash.task_id, True)]
    assert invalid.state is StageState.FAILED and not invalid.retryable and "stages.dpo.lr" in invalid.message
    assert crash.state is StageState.FAILED and crash.retryable
    assert crash.message == "RuntimeError: CUDA out of memory"


def test_tasks_beyond_max_running_wait_as_pending() -> None:
    release = threading.Event()
    tasks = TaskManager(steps(1, release=release), max_running=1)
    first = tasks.start(job("prompts"))
    second = tasks.start(job("distill"))
    wait_until(lambda: tasks.get(first.task_id).state is StageState.RUNNING)
    time.sleep(0.1)  # time enough for the second to start, were it allowed to
    assert tasks.get(second.task_id).state is StageState.PENDING
    release.set()
    assert wait_final(tasks, second.task_id).state is StageState.SUCCEEDED


def test_drain_refuses_new_tasks_and_cancels_what_outlives_the_grace() -> None:
    tasks = TaskManager(steps(10_000, pause=0.01))
    status = tasks.start(job())
    started = time.monotonic()
    tasks.drain(grace=0.1)
    assert 0.1 <= time.monotonic() - started < 5
    assert tasks.get(status.task_id).state is StageState.CANCELLED
    with pytest.raises(ShuttingDown, match=r"^shutting down: no new tasks are accepted here$"):
        tasks.start(job("distill"))


def test_drain_shares_one_grace_between_its_tasks() -> None:
    tasks = TaskManager(steps(10_000, pause=0.01), max_running=3)
    started = [tasks.start(job(stage)) for stage in ("prompts", "distill", "dpo")]
    began = time.monotonic()
    tasks.drain(grace=0.1)
    assert time.monotonic() - began < 1.5  # not a grace per task
    assert all(tasks.get(s.task_id).state is StageState.CANCELLED for s in started)


def test_a_watch_waits_through_idle_ticks_for_the_task_to_end() -> None:
    release = threading.Event()
    tasks = TaskManager(steps(1, release=release))
    status = tasks.start(job())
    caller = Caller()
    watch = tasks.watch(status.task_id, caller, tick=0.001)
    next(watch)
    threading.Timer(0.05, release.set).start()
    events = list(watch)
    assert isinstance(events[-1], TaskStatus) and events[-1].state is StageState.SUCCEEDED and not caller.gave_up


def test_drain_lets_short_tasks_finish() -> None:
    tasks = TaskManager(steps(3, pause=0.02))
    status = tasks.start(job())
    tasks.drain(grace=10)
    assert tasks.get(status.task_id).state is StageState.SUCCEEDED


def test_max_running_below_one_is_refused() -> None:
    with pytest.raises(InvalidInput) as err:
        TaskManager(steps(1), max_running=0)
    assert err.value.where == "max_running" and str(err.value) == "max_running: max_running must be >= 1, got 0"


def test_a_task_is_the_same_only_for_the_same_run_stage_attempt_and_store() -> None:
    tasks = TaskManager(steps(1), max_running=4)
    first = tasks.start(job())
    others = [job().model_copy(update=change) for change in
              ({"run_id": "run-2"}, {"stage": "distill"}, {"attempt": 2}, {"store_uri": "/tmp/other"})]
    ids = {tasks.start(j).task_id for j in others}
    assert first.task_id not in ids and len(ids) == 4
    for t in tasks.tasks():
        wait_final(tasks, t.task_id)


def test_two_concurrent_starts_of_one_job_get_one_task() -> None:
    both_checking = threading.Barrier(2, timeout=2)

    def prepare(j: StageJob):
        both_checking.wait()  # each start has checked the job before either registered a task
        return steps(1)(j)

    tasks = TaskManager(prepare)
    got: list[TaskStatus] = []
    racers = [threading.Thread(target=lambda: got.append(tasks.start(job()))) for _ in range(2)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(5)
    assert len(got) == 2 and got[0].task_id == got[1].task_id
    assert [t.task_id for t in tasks.tasks()] == [got[0].task_id]


def test_only_the_newest_finished_tasks_are_kept_and_a_forgotten_job_starts_afresh() -> None:
    release = threading.Event()
    tasks = TaskManager(steps(1, release=release), keep_finished=1, max_running=2)
    release.set()
    first = wait_final(tasks, tasks.start(job("prompts")).task_id)
    second = wait_final(tasks, tasks.start(job("distill")).task_id)
    assert [t.task_id for t in tasks.tasks()] == [first.task_id, second.task_id]  # one finished beyond: kept
    release.clear()
    running = tasks.start(job("dpo"))  # a new task: the oldest finished one beyond keep_finished goes
    assert [t.task_id for t in tasks.tasks()] == [second.task_id, running.task_id]
    with pytest.raises(NotFound, match=f"no task '{first.task_id}' here"):
        tasks.get(first.task_id)
    assert tasks.start(job("prompts")).task_id != first.task_id
    assert tasks.start(job("distill")).task_id == second.task_id
    release.set()
    for t in tasks.tasks():
        wait_final(tasks, t.task_id)


def test_tasks_of_one_run_and_the_unfinished_ones() -> None:
    release = threading.Event()
    tasks = TaskManager(steps(1), max_running=2)
    done = wait_final(tasks, tasks.start(job("prompts")).task_id)
    tasks._prepare = steps(1, release=release)  # type: ignore[attr-defined]
    other = tasks.start(job().model_copy(update={"run_id": "run-2"}))
    assert [t.task_id for t in tasks.tasks("run-1")] == [done.task_id]
    assert [t.task_id for t in tasks.tasks("run-2")] == [other.task_id]
    assert [t.task_id for t in tasks.tasks()] == [done.task_id, other.task_id]
    assert [t.task_id for t in tasks.running()] == [other.task_id]
    release.set()
    wait_final(tasks, other.task_id)
    assert tasks.running() == []


def test_cancelling_a_running_task_says_so_once() -> None:
    release = threading.Event()
    tasks = TaskManager(steps(1, release=release))
    status = tasks.start(job())
    wait_until(lambda: tasks.get(status.task_id).state is StageState.RUNNING)
    caller = Caller()
    watch = tasks.watch(status.task_id, caller)
    assert next(watch).state is StageState.RUNNING
    assert tasks.cancel(status.task_id).message == "cancelling: stops at the next progress step"
    assert tasks.cancel(status.task_id).message == "cancelling: stops at the next progress step"
    release.set()
    rest = list(watch)
    assert not caller.gave_up
    assert [(e.state, e.message) for e in rest] == [
        (StageState.RUNNING, "cancelling: stops at the next progress step"), (StageState.CANCELLED, "cancelled")]


def test_a_task_cancelled_while_waiting_for_a_slot_never_runs() -> None:
    ran: list[str] = []
    release = threading.Event()
    prepare = recording(ran, release)
    finished: list[TaskStatus] = []
    tasks = TaskManager(prepare, on_finish=finished.append)  # by default one task runs at a time
    first = tasks.start(job("prompts"))
    waiting = tasks.start(job("distill"))
    wait_until(lambda: ran)
    cancelled = tasks.cancel(waiting.task_id)
    assert cancelled.state is StageState.PENDING and cancelled.message == ""
    final = wait_final(tasks, waiting.task_id)
    assert (final.state, final.message, final.started_at) == (StageState.CANCELLED, "cancelled before it started", None)
    release.set()
    assert wait_final(tasks, first.task_id).state is StageState.SUCCEEDED and ran == ["prompts"]
    wait_until(lambda: len(finished) == 2)
    assert [(s.task_id, s.state) for s in finished] == [(waiting.task_id, StageState.CANCELLED),
                                                          (first.task_id, StageState.SUCCEEDED)]


def test_task_threads_never_die_with_the_process_even_when_started_from_a_daemon() -> None:
    release = threading.Event()
    tasks = TaskManager(steps(1, release=release))
    starter = threading.Thread(target=lambda: tasks.start(job("distill")), daemon=True)  # like the controller loop
    starter.start()
    starter.join(5)
    (thread,) = [t for t in threading.enumerate() if t.name == "task-distill"]
    assert not thread.daemon  # at exit the process waits for it instead of killing it inside native code
    release.set()
    thread.join(5)


def test_a_task_cancelled_as_a_slot_frees_never_runs() -> None:
    ran: list[str] = []
    release = threading.Event()
    prepare = recording(ran, release)
    tasks = TaskManager(prepare, max_running=1)
    first = tasks.start(job("prompts"))
    waiting = tasks.start(job("distill"))
    wait_until(lambda: ran)
    tasks.cancel(waiting.task_id)
    release.set()  # the waiting task gets the slot (mostly before its next look at its cancel flag)
    final = wait_final(tasks, waiting.task_id)
    assert (final.state, final.message) == (StageState.CANCELLED, "cancelled before it started")
    assert wait_final(tasks, first.task_id).state is StageState.SUCCEEDED and ran == ["prompts"]


def test_a_failed_task_frees_its_slot_and_reports_when_it_finished() -> None:
    finished: list[TaskStatus] = []

    def prepare(j: StageJob):
        def work(progress: Progress) -> StageResult:
            if j.stage == "prompts":
                raise NotFound("no prompts")
            return StageResult(stage=j.stage, key="key-" + j.stage)

        return work

    tasks = TaskManager(prepare, max_running=1, on_finish=finished.append)
    failed = wait_final(tasks, tasks.start(job("prompts")).task_id)
    ok = wait_final(tasks, tasks.start(job("distill")).task_id)
    assert (failed.state, failed.message, failed.retryable) == (StageState.FAILED, "no prompts", False)
    assert (ok.state, ok.result_key, ok.message) == (StageState.SUCCEEDED, "key-distill", "")
    assert failed.started_at <= failed.finished_at <= ok.started_at
    assert [(s.task_id, s.state) for s in finished] == [(failed.task_id, StageState.FAILED),
                                                          (ok.task_id, StageState.SUCCEEDED)]


def test_progress_after_a_cancel_stops_the_stage() -> None:
    seen: list[ProgressEvent] = []
    reported = threading.Event()
    stopped = threading.Event()

    def prepare(j: StageJob):
        def work(progress: Progress) -> StageResult:
            progress(ProgressEvent(task="t", done=1, total=2))
            reported.set()
            stopped.wait(5)
            try:
                progress(ProgressEvent(task="t", done=2, total=2))
            except TaskCancelled:
                seen.append(ProgressEvent(task="raised", done=0, total=None))
                raise
            return StageResult(stage=j.stage, key="k")

        return work

    tasks = TaskManager(prepare)
    status = tasks.start(job())
    reported.wait(5)
    assert tasks.get(status.task_id).progress == ProgressEvent(task="t", done=1, total=2)
    tasks.cancel(status.task_id)
    stopped.set()
    final = wait_final(tasks, status.task_id)
    assert final.state is StageState.CANCELLED and seen == [ProgressEvent(task="raised", done=0, total=None)]
    assert final.progress == ProgressEvent(task="t", done=1, total=2)  # the step after the cancel never counted


def test_a_watcher_whose_caller_went_away_stops_and_unregisters() -> None:
    release = threading.Event()
    tasks = TaskManager(steps(1, release=release))
    status = tasks.start(job())
    assert [e.task_id for e in tasks.watch(status.task_id, alive=lambda: False, tick=0.001)] == [status.task_id]
    release.set()
    assert wait_final(tasks, status.task_id).state is StageState.SUCCEEDED


def test_stage_jobs_prepare_the_stage_of_the_record_with_its_keys(tmp_path, monkeypatch) -> None:
    spec = parse_spec({"constitution": "sarcasm", "model": "tiny", "store": str(tmp_path / "store")})
    jobs_ = StageJobs(lambda store, s: ("engines", store, s), stages=("prompts", "distill"))
    store = jobs_.store(spec.store)
    assert jobs_.store(spec.store) is store  # kept open
    record = new_run(spec, executor="services")
    save_run(store, record)
    key = record.stages["prompts"].key
    seen: dict[str, object] = {}

    def fake_prompts(ctx, config):
        seen.update(key=ctx.key, engines=ctx.engines, run_id=ctx.run_id)
        ctx.progress(ProgressEvent(task="prompts", done=1, total=1))
        return StageResult(stage="prompts", key=ctx.key)

    monkeypatch.setattr(prompts, "run", fake_prompts)
    events: list[ProgressEvent] = []
    work = jobs_(StageJob(run_id=record.run_id, stage="prompts", store_uri=spec.store, key=key))
    result = work(events.append)
    assert result.key == key and seen == {"key": key, "engines": ("engines", store, spec), "run_id": record.run_id}
    assert events == [ProgressEvent(task="prompts", done=1, total=1)]
    assert store.has("stage", key)
    with pytest.raises(InvalidInput, match="the job was made for another version of the run"):
        jobs_(StageJob(run_id=record.run_id, stage="prompts", store_uri=spec.store, key="0" * 64))
    with pytest.raises(InvalidInput) as err:
        jobs_(StageJob(run_id=record.run_id, stage="dpo", store_uri=spec.store))
    assert str(err.value) == "stage: this worker runs the stages prompts, distill, not 'dpo'"
    everything = StageJobs(lambda store, s: None)
    assert everything(StageJob(run_id=record.run_id, stage="dpo", store_uri=spec.store)) is not None
