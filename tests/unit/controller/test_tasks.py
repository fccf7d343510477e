from __future__ import annotations

import threading
import time

import pytest
from character.controller.executor import StageJob, StageState
from character.controller.stage_tasks import ShuttingDown, TaskManager, TaskStatus
from character.errors import InvalidInput, NotFound
from character.pipeline.stage import StageResult
from character.progress import Progress, ProgressEvent


def job(stage: str = "prompts", attempt: int = 1) -> StageJob:
    return StageJob(run_id="run-1", stage=stage, store_uri="/tmp/store", attempt=attempt)


def wait_final(tasks: TaskManager, task_id: str, timeout: float = 10.0) -> TaskStatus:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = tasks.get(task_id)
        if status.state.final:
            return status
        time.sleep(0.02)
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


def test_a_task_reports_progress_then_its_result() -> None:
    release = threading.Event()
    tasks = TaskManager(steps(3, release=release))
    status = tasks.start(job())
    watch = tasks.watch(status.task_id)
    events = [next(watch)]  # subscribed: now let the work run
    release.set()
    events += list(watch)
    assert isinstance(events[0], TaskStatus)
    assert [e.done for e in events if isinstance(e, ProgressEvent)] == [1, 2, 3]
    final = events[-1]
    assert isinstance(final, TaskStatus) and final.state is StageState.SUCCEEDED
    assert final.result_key == "key-prompts"
    assert final.started_at is not None and final.finished_at >= final.started_at


def test_starting_the_same_job_twice_gives_the_same_task() -> None:
    tasks = TaskManager(steps(1))
    first = tasks.start(job())
    assert tasks.start(job()).task_id == first.task_id
    assert tasks.start(job(attempt=2)).task_id != first.task_id


def test_a_job_that_fails_its_checks_is_refused_at_start() -> None:
    def prepare(j: StageJob):
        raise NotFound(f"no run {j.run_id!r}")

    tasks = TaskManager(prepare)
    with pytest.raises(NotFound, match="run-1"):
        tasks.start(job())
    assert tasks.running() == []


def test_unknown_task_ids_are_not_found() -> None:
    with pytest.raises(NotFound, match="no task 'nope'"):
        TaskManager(steps(1)).get("nope")


def test_cancel_stops_the_task_at_its_next_progress_step() -> None:
    tasks = TaskManager(steps(1000, pause=0.01))
    status = tasks.start(job())
    while tasks.get(status.task_id).progress is None:
        time.sleep(0.01)
    tasks.cancel(status.task_id)
    final = wait_final(tasks, status.task_id)
    assert final.state is StageState.CANCELLED
    assert final.progress is not None and final.progress.done < 1000


def test_failures_say_whether_a_retry_can_help() -> None:
    def prepare(j: StageJob):
        def work(progress: Progress) -> StageResult:
            if j.stage == "dpo":
                raise InvalidInput("lr must be > 0", where="stages.dpo.lr")
            raise RuntimeError("CUDA out of memory")

        return work

    tasks = TaskManager(prepare, max_running=2)
    invalid = wait_final(tasks, tasks.start(job("dpo")).task_id)
    crash = wait_final(tasks, tasks.start(job("sft")).task_id)
    assert invalid.state is StageState.FAILED and not invalid.retryable and "stages.dpo.lr" in invalid.message
    assert crash.state is StageState.FAILED and crash.retryable
    assert crash.message == "RuntimeError: CUDA out of memory"


def test_tasks_beyond_max_running_wait_as_pending() -> None:
    release = threading.Event()
    tasks = TaskManager(steps(1, release=release), max_running=1)
    first = tasks.start(job("prompts"))
    second = tasks.start(job("distill"))
    time.sleep(0.3)
    assert tasks.get(first.task_id).state is StageState.RUNNING
    assert tasks.get(second.task_id).state is StageState.PENDING
    release.set()
    assert wait_final(tasks, second.task_id).state is StageState.SUCCEEDED


def test_drain_refuses_new_tasks_and_cancels_what_outlives_the_grace() -> None:
    tasks = TaskManager(steps(10_000, pause=0.01))
    status = tasks.start(job())
    started = time.monotonic()
    tasks.drain(grace=0.3)
    assert 0.3 <= time.monotonic() - started < 5
    assert tasks.get(status.task_id).state is StageState.CANCELLED
    with pytest.raises(ShuttingDown):
        tasks.start(job("distill"))


def test_drain_lets_short_tasks_finish() -> None:
    tasks = TaskManager(steps(5, pause=0.05))
    status = tasks.start(job())
    tasks.drain(grace=10)
    assert tasks.get(status.task_id).state is StageState.SUCCEEDED
