"""Stage tasks running in this process: start returns at once, progress fans out to
watchers, cancel stops the task at its next progress step.

The inline executor (stages in the controller's own process) and the worker services
(each gRPC task is one of these) share this; nothing here knows gRPC.

Cancellation is cooperative: stages report progress often (every batch, every training
step), and once a task is cancelled its progress callback raises `TaskCancelled`, which
unwinds the stage without writing its result (artifacts are committed atomically, so
nothing half-written is left behind).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from character.controller.executor import StageJob, StageState, failure_of
from character.controller.runs import prepare_stage
from character.errors import CharacterError, InvalidInput, NotFound
from character.pipeline.runner import run_stage
from character.pipeline.stage import StageResult
from character.progress import Progress, ProgressEvent

if TYPE_CHECKING:
    from character.pipeline.spec import RunSpec
    from character.pipeline.stage import EngineProvider
    from character.store.base import Store

log = logging.getLogger(__name__)

Work = Callable[[Progress], StageResult]
"""The body of a task: runs the stage, reporting through the given callback."""

Prepare = Callable[[StageJob], Work]
"""Checks a job (store reachable, run known, stage valid) and returns its work; raising
here refuses the task at once, before anything starts."""


class TaskCancelled(BaseException):  # named like asyncio.CancelledError
    """Raised inside a cancelled task's progress callback. A BaseException (like
    KeyboardInterrupt) so that a stage's `except Exception` cannot swallow it."""


class ShuttingDown(CharacterError):
    """The process is shutting down and takes no new tasks; try another replica or later."""


@dataclass(frozen=True)
class TaskStatus:
    """A snapshot of one task."""

    task_id: str
    job: StageJob
    state: StageState
    message: str = ""
    retryable: bool = True
    """When failed: False when retrying cannot help (invalid input, missing inputs)."""
    result_key: str = ""
    """When succeeded: the stage's result key."""
    progress: ProgressEvent | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    started_at: datetime | None = None
    finished_at: datetime | None = None


TaskEvent = TaskStatus | ProgressEvent
"""What a watcher receives: a status (first, on each state change, last) or a progress step."""


class _Task:
    def __init__(self, status: TaskStatus, work: Work):
        self.status = status
        self.work = work
        self.cancel = threading.Event()
        self.watchers: list[queue.SimpleQueue[TaskEvent]] = []
        self.done = threading.Event()


class TaskManager:
    """Runs stage jobs in threads, at most `max_running` at a time (the rest wait as pending).

    `start` is idempotent per (run, stage, attempt, store): a controller that lost track of
    a task it started (it restarted) gets the same task back instead of a second copy.
    """

    def __init__(
        self,
        prepare: Prepare,
        max_running: int = 1,
        keep_finished: int = 1000,
        on_finish: Callable[[TaskStatus], None] | None = None,
    ):
        if max_running < 1:
            raise InvalidInput(f"max_running must be >= 1, got {max_running}", where="max_running")
        self._prepare = prepare
        self._slots = threading.Semaphore(max_running)
        self._keep_finished = keep_finished
        self._on_finish = on_finish
        self._lock = threading.Lock()
        self._tasks: OrderedDict[str, _Task] = OrderedDict()
        self._by_job: dict[tuple[str, str, int, str], str] = {}
        self._closing = False

    # ------------------------------------------------------------------ API
    def start(self, job: StageJob) -> TaskStatus:
        """Start (or find) the task for `job`; errors from checking the job are raised here."""
        ident = (job.run_id, job.stage, job.attempt, job.store_uri)
        with self._lock:
            if self._closing:
                raise ShuttingDown("shutting down: no new tasks are accepted here")
            existing = self._by_job.get(ident)
            if existing is not None and existing in self._tasks:
                return self._tasks[existing].status
        work = self._prepare(job)
        with self._lock:
            existing = self._by_job.get(ident)  # a concurrent start of the same job won
            if existing is not None and existing in self._tasks:
                return self._tasks[existing].status
            task = _Task(TaskStatus(task_id=uuid.uuid4().hex[:16], job=job, state=StageState.PENDING), work)
            self._tasks[task.status.task_id] = task
            self._by_job[ident] = task.status.task_id
            self._forget_old()
        # Not a daemon: at exit the process waits for a cancelled task to reach its next progress
        # step instead of killing it inside native code (which aborts the process).
        threading.Thread(target=self._run, args=(task,), name=f"task-{job.stage}", daemon=False).start()
        log.info("task started", extra={"task_id": task.status.task_id, "run_id": job.run_id,
                                        "stage": job.stage, "attempt": job.attempt})
        return task.status

    def get(self, task_id: str) -> TaskStatus:
        return self._task(task_id).status

    def cancel(self, task_id: str) -> TaskStatus:
        """Ask the task to stop; it ends as cancelled at its next progress step (idempotent)."""
        task = self._task(task_id)
        task.cancel.set()
        with self._lock:
            if task.status.state is StageState.RUNNING and not task.status.message.startswith("cancelling"):
                self._update(task, message="cancelling: stops at the next progress step")
        return task.status

    def watch(self, task_id: str, alive: Callable[[], bool] = lambda: True,
              tick: float = 0.5) -> Iterator[TaskEvent]:
        """The task's status, then its progress and status changes until it ends (or until
        `alive()` turns false: the watcher went away)."""
        task = self._task(task_id)
        inbox: queue.SimpleQueue[TaskEvent] = queue.SimpleQueue()
        with self._lock:
            inbox.put(task.status)
            task.watchers.append(inbox)
        try:
            while True:
                try:
                    event = inbox.get(timeout=tick)
                except queue.Empty:
                    if not alive():
                        return
                    continue
                yield event
                if isinstance(event, TaskStatus) and event.state.final:
                    return
        finally:
            with self._lock:
                task.watchers.remove(inbox)

    def tasks(self, run_id: str | None = None) -> list[TaskStatus]:
        """The tasks kept here (finished ones for a while), oldest first; those of one run
        when `run_id` is given."""
        with self._lock:
            return [t.status for t in self._tasks.values() if run_id is None or t.status.job.run_id == run_id]

    def running(self) -> list[TaskStatus]:
        """Tasks not yet finished."""
        return [t for t in self.tasks() if not t.state.final]

    def drain(self, grace: float) -> None:
        """Take no new tasks; let running ones finish for up to `grace` seconds, then cancel
        them and give them a few more seconds to reach their next progress step."""
        with self._lock:
            self._closing = True
            active = [t for t in self._tasks.values() if not t.status.state.final]
        deadline = time.monotonic() + grace
        for task in active:
            task.done.wait(max(0.0, deadline - time.monotonic()))
        for task in active:
            if not task.done.is_set():
                log.warning("task cancelled at shutdown", extra={"task_id": task.status.task_id})
                task.cancel.set()
        for task in active:
            task.done.wait(5.0)

    # ------------------------------------------------------------------ internals
    def _task(self, task_id: str) -> _Task:
        with self._lock:
            task = self._tasks.get(task_id)
        if task is None:
            raise NotFound(f"no task {task_id!r} here (finished tasks are kept for a while; "
                           "a restarted worker forgets the tasks of its previous life)")
        return task

    def _forget_old(self) -> None:
        finished = [tid for tid, t in self._tasks.items() if t.status.state.final]
        for tid in finished[: max(0, len(finished) - self._keep_finished)]:
            task = self._tasks.pop(tid)
            job = task.status.job
            self._by_job.pop((job.run_id, job.stage, job.attempt, job.store_uri), None)

    def _update(self, task: _Task, **changes: object) -> None:
        """Replace the task's status and tell its watchers (call with the lock held)."""
        task.status = replace(task.status, **changes)  # type: ignore[arg-type]
        for inbox in task.watchers:
            inbox.put(task.status)

    def _progress(self, task: _Task) -> Progress:
        def report(event: ProgressEvent) -> None:
            if task.cancel.is_set():
                raise TaskCancelled
            with self._lock:
                task.status = replace(task.status, progress=event)
                for inbox in task.watchers:
                    inbox.put(event)

        return report

    def _run(self, task: _Task) -> None:
        while not self._slots.acquire(timeout=0.2):
            if task.cancel.is_set():
                self._finish(task, StageState.CANCELLED, "cancelled before it started")
                return
        try:
            if task.cancel.is_set():
                self._finish(task, StageState.CANCELLED, "cancelled before it started")
                return
            with self._lock:
                self._update(task, state=StageState.RUNNING, started_at=datetime.now(UTC))
            try:
                result = task.work(self._progress(task))
            except TaskCancelled:
                self._finish(task, StageState.CANCELLED, "cancelled")
            except BaseException as err:  # a stage's failure ends its task, never the worker
                message, retryable = failure_of(err)
                if not isinstance(err, CharacterError):
                    log.exception("task crashed", extra={"task_id": task.status.task_id})
                self._finish(task, StageState.FAILED, message, retryable=retryable)
            else:
                self._finish(task, StageState.SUCCEEDED, "", result_key=result.key)
        finally:
            self._slots.release()

    def _finish(self, task: _Task, state: StageState, message: str, **changes: object) -> None:
        with self._lock:
            self._update(task, state=state, message=message, finished_at=datetime.now(UTC), **changes)
        task.done.set()
        status = task.status
        seconds = (status.finished_at - status.started_at).total_seconds() if status.started_at and \
            status.finished_at else 0.0
        log.info("task finished", extra={"task_id": status.task_id, "run_id": status.job.run_id,
                                         "stage": status.job.stage, "state": state.value,
                                         "seconds": round(seconds, 2), "detail": message[:500]})
        if self._on_finish:
            self._on_finish(status)


EnginesFor = Callable[["Store", "RunSpec"], "EngineProvider"]
"""Engines for one job's stage, given the run's store and spec."""


class StageJobs:
    """A `Prepare` for stage jobs: opens the job's store (kept open), checks the stage is one
    this process runs, prepares it from the run record (`prepare_stage`), and returns the work."""

    def __init__(self, engines_for: EnginesFor, stages: tuple[str, ...] | None = None):
        self._engines_for = engines_for
        self._stages = stages
        self._stores: dict[str, Store] = {}
        self._lock = threading.Lock()

    def store(self, uri: str) -> Store:
        from character.store import open_store

        with self._lock:
            if uri not in self._stores:
                self._stores[uri] = open_store(uri)
            return self._stores[uri]

    def __call__(self, job: StageJob) -> Work:
        if self._stages is not None and job.stage not in self._stages:
            raise InvalidInput(f"this worker runs the stages {', '.join(self._stages)}, not {job.stage!r}",
                               where="stage")
        store = self.store(job.store_uri)
        run = prepare_stage(store, job.run_id, job.stage, job.key)
        engines = self._engines_for(store, run.spec)

        def work(progress: Progress) -> StageResult:
            return run_stage(run, store, engines, progress)[0]

        return work
