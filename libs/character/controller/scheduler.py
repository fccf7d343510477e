"""The job controller: runs the stages of submitted runs in DAG order through an executor.

It is the one state machine of every run: `oct run` drives it in-process with the inline
executor (`controller/inline_executor.py:run_in_process`), the controller service with the
services or the Kubernetes executor.

One loop thread owns every active run. Each pass it polls running stages, retries failed
ones with exponential backoff (failures that retrying cannot fix fail at once), and starts
pending stages whose inputs have succeeded. A stage whose result is already in the store
is marked succeeded without running, so finished work never runs twice.

Every state change is written to the run's record in the store before the controller acts
on it; a restarted controller reloads the unfinished records and carries on: a stage that
was running is polled through its stored handle (re-adopted), and one whose attempt was
lost (the worker restarted, the handle is unknown) is retried.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, model_validator

from character.controller.executor import Executor, StageJob, StageState, StageStatus, failure_of
from character.controller.runs import RunRecord, StageRecord, list_runs, load_run, new_run, save_run, set_result
from character.errors import NotFound
from character.pipeline.runner import stored_result
from character.pipeline.spec import RunSpec
from character.progress import ProgressEvent
from character.store.base import Conflict, Store

log = logging.getLogger(__name__)


class ControllerConfig(BaseModel):
    """How the controller retries and watches stages."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_attempts: int = Field(default=3, ge=1)
    """Tries per stage (after a resume, the budget starts afresh)."""
    backoff_base_s: float = Field(default=2.0, ge=0)
    """Wait after the first failed attempt; it doubles (backoff_factor) after each further one."""
    backoff_factor: float = Field(default=2.0, ge=1)
    backoff_max_s: float = Field(default=300.0, ge=0)
    """Upper bound of the wait between attempts."""
    poll_interval_s: float = Field(default=0.5, gt=0)
    """How often running stages are polled (submit and cancel wake the loop at once)."""
    stage_timeout_s: float | None = Field(default=None, gt=0)
    """A stage attempt running longer than this is cancelled and counted as a failed attempt."""
    unreachable_timeout_s: float = Field(default=120.0, gt=0)
    """A stage whose executor cannot be polled for this long is counted as a failed attempt
    (its worker is presumed dead)."""

    @model_validator(mode="after")
    def _bounds(self) -> ControllerConfig:
        if self.backoff_max_s < self.backoff_base_s:
            raise ValueError(f"backoff_max_s ({self.backoff_max_s}) is below backoff_base_s "
                             f"({self.backoff_base_s})")
        return self

    def backoff(self, failed_attempts: int) -> float:
        """Seconds to wait after the `failed_attempts`-th failed attempt (1-based)."""
        return min(self.backoff_max_s, self.backoff_base_s * self.backoff_factor ** (failed_attempts - 1))


@runtime_checkable
class ReportsProgress(Protocol):
    """An executor that also hands over its stages' progress events."""

    def take_progress(self, handle: str) -> list[ProgressEvent]:
        """Progress events of `handle` since the last call."""
        ...


@dataclass(frozen=True)
class RunEvent:
    """Something that happened in a run: a stage (or, with `stage` None, the run) changed
    state, or the running stage made progress."""

    run_id: str
    stage: str | None
    state: StageState | None = None
    progress: ProgressEvent | None = None
    message: str = ""
    attempt: int = 0
    time: datetime = field(default_factory=lambda: datetime.now(UTC))


class Controller:
    """Accepts runs and drives them to the end; see the module docstring."""

    def __init__(
        self,
        store: Store,
        executor: Executor,
        config: ControllerConfig | None = None,
        executor_name: str = "",
        clock: Callable[[], float] = time.time,
        on_succeeded: Callable[[RunRecord], object] | None = None,
    ):
        """`on_succeeded` is called with a copy of each run that succeeds here (e.g. to publish
        it as its spec's `publish:` says); its failure is logged and leaves the run succeeded."""
        self.store = store
        self._on_succeeded = on_succeeded
        self.executor = executor
        self.config = config or ControllerConfig()
        self.executor_name = executor_name or type(executor).__name__
        self._clock = clock
        self._lock = threading.RLock()
        self._runs: dict[str, RunRecord] = {}
        self._held: dict[str, tuple[str, frozenset[str]]] = {}
        """Per run: (stop_after, the stages after it, which are not started)."""
        self._watchers: dict[str, list[queue.SimpleQueue[RunEvent]]] = {}
        self._unreachable_since: dict[str, float] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def recover(self) -> list[str]:
        """Load the store's unfinished runs (a restart); returns their ids."""
        with self._lock:
            for record in list_runs(self.store):
                if not record.state.final and record.run_id not in self._runs:
                    self._runs[record.run_id] = record
            return list(self._runs)

    def start(self, recover: bool = True) -> None:
        """Recover unfinished runs (unless `recover` is False: a controller for its own runs
        only, as `oct run` is) and start the loop thread."""
        recovered = self.recover() if recover else []
        if recovered:
            log.info("resuming runs", extra={"runs": recovered})
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="controller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the loop. Running stages keep running; a new controller adopts them."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception:  # one bad pass must not end the controller; the next may pass
                log.exception("controller pass failed")
            self._wake.wait(self.config.poll_interval_s)
            self._wake.clear()

    # ------------------------------------------------------------------ API
    def submit(self, spec: RunSpec, stop_after: str | None = None) -> tuple[RunRecord, bool]:
        """Start the run of `spec` (resolved and validated). The same spec is the same run:
        an active run is returned as it is, a failed or cancelled one is resumed. Returns
        (record, created). The spec's store is replaced by the controller's own.
        `stop_after`: the stages after this one are not started, and end cancelled once the
        others have ended (`oct run --until`; submitting again resumes them)."""
        spec = spec.model_copy(update={"store": self.store.uri})
        return self.submit_record(new_run(spec, executor=self.executor_name), stop_after)

    def submit_record(self, record: RunRecord, stop_after: str | None = None) -> tuple[RunRecord, bool]:
        """`submit` for a prepared record (its stages carry their keys and inputs)."""
        if stop_after is not None:
            names = list(record.stages)
            if stop_after not in names:
                raise NotFound(f"no stage {stop_after!r} in run {record.run_id}; its stages are: {', '.join(names)}")
            self._held[record.run_id] = (stop_after, frozenset(names[names.index(stop_after) + 1:]))
        with self._lock:
            if record.run_id in self._runs:
                return self._runs[record.run_id].model_copy(deep=True), False
            try:
                existing = load_run(self.store, record.run_id)
            except NotFound:
                existing = None
            if existing is not None and existing.state is StageState.SUCCEEDED:
                return existing, False
            if existing is not None:
                existing.resume(self._now())
                record, created = existing, False
            else:
                created = True
            record.refresh(self._now())
            save_run(self.store, record)
            self._runs[record.run_id] = record
            self._emit(RunEvent(record.run_id, None, record.state, message="submitted"))
        self._wake.set()
        return record.model_copy(deep=True), created

    def get(self, run_id: str) -> RunRecord:
        with self._lock:
            if run_id in self._runs:
                return self._runs[run_id].model_copy(deep=True)
        return load_run(self.store, run_id)

    def list(self) -> list[RunRecord]:
        """Every run in the store, newest first (active ones as the controller sees them now)."""
        with self._lock:
            active = {k: v.model_copy(deep=True) for k, v in self._runs.items()}
        return [active.get(r.run_id, r) for r in list_runs(self.store)]

    def cancel(self, run_id: str) -> RunRecord:
        """Cancel a run: running stages are stopped, pending ones never start."""
        with self._lock:
            record = self._runs.get(run_id)
            if record is None:
                return load_run(self.store, run_id)  # finished: nothing to cancel (NotFound if unknown)
            record.cancel_requested = True
            record.refresh(self._now())
            save_run(self.store, record)
        self._wake.set()
        return self.get(run_id)

    def watch(self, run_id: str, alive: Callable[[], bool] = lambda: True,
              tick: float = 0.5) -> Iterator[RunEvent]:
        """The run's current stage states, then its events, until it ends or `alive()` fails."""
        inbox: queue.SimpleQueue[RunEvent] = queue.SimpleQueue()
        with self._lock:
            record = self.get(run_id)
            for name, stage in record.stages.items():
                inbox.put(RunEvent(run_id, name, stage.state, message=stage.message, attempt=stage.attempts))
                if stage.progress is not None and stage.state is StageState.RUNNING:
                    inbox.put(RunEvent(run_id, name, progress=stage.progress, attempt=stage.attempts))
            inbox.put(RunEvent(run_id, None, record.state, message=record.message))
            self._watchers.setdefault(run_id, []).append(inbox)
        try:
            while True:
                try:
                    event = inbox.get(timeout=tick)
                except queue.Empty:
                    if not alive() or self._stop.is_set():
                        return
                    continue
                yield event
                if event.stage is None and event.state is not None and event.state.final:
                    return
        finally:
            with self._lock:
                watchers = self._watchers.get(run_id, [])
                if inbox in watchers:
                    watchers.remove(inbox)
                if not watchers:
                    self._watchers.pop(run_id, None)

    # ------------------------------------------------------------------ the loop's pass
    def step(self) -> None:
        """One pass over every active run (the loop calls this; tests may too)."""
        with self._lock:
            for record in list(self._runs.values()):
                before = record.state
                try:
                    if self._advance(record):
                        record.refresh(self._now())
                        save_run(self.store, record)
                except Conflict:  # another controller changed the run: it is that one's now
                    log.warning("run changed by another controller; leaving it", extra={"run_id": record.run_id})
                    del self._runs[record.run_id]
                    continue
                if record.state is StageState.SUCCEEDED and before is not StageState.SUCCEEDED:
                    self._succeeded(record)
                if record.state is not before or record.state.final:
                    self._emit(RunEvent(record.run_id, None, record.state, message=record.message))
                if record.state.final:
                    del self._runs[record.run_id]
                    self._held.pop(record.run_id, None)

    def _succeeded(self, record: RunRecord) -> None:
        if self._on_succeeded is None:
            return
        try:
            self._on_succeeded(record.model_copy(deep=True))
        except Exception as err:  # the run's work is done and kept; what follows it is not the run
            log.warning("after-success hook failed", extra={"run_id": record.run_id, "detail": str(err)})

    def _advance(self, record: RunRecord) -> bool:
        """Move the run's stages along; True when the record changed."""
        if record.cancel_requested:
            return self._cancel_all(record)
        changed = False
        stop_after, held = self._held.get(record.run_id, ("", frozenset()))
        for name, stage in record.stages.items():
            if stage.state is StageState.RUNNING:
                changed |= self._poll(record, name, stage)
        for name, stage in record.stages.items():
            if stage.state is not StageState.PENDING or name in held:
                continue
            upstream = [record.stages[u] for u in stage.inputs]
            broken = [u for u in stage.inputs if record.stages[u].state in (StageState.FAILED,
                                                                              StageState.CANCELLED)]
            if broken:
                self._move(record, name, stage, StageState.CANCELLED, f"not run: stage {broken[0]} "
                           f"{record.stages[broken[0]].state.value}")
                changed = True
            elif all(u.state is StageState.SUCCEEDED for u in upstream) and (
                stage.next_attempt_at is None or stage.next_attempt_at <= self._now()
            ):
                self._dispatch(record, name, stage)
                changed = True
        if held and all(s.state.final for n, s in record.stages.items() if n not in held):
            for name in held:
                if record.stages[name].state is StageState.PENDING:
                    self._move(record, name, record.stages[name], StageState.CANCELLED,
                               f"not run: the run stops after {stop_after}")
                    changed = True
        return changed

    def _dispatch(self, record: RunRecord, name: str, stage: StageRecord) -> None:
        done = stored_result(self.store, stage.key)
        if done is not None:
            set_result(stage, done, cached=True, at=self._now())
            self._emit(RunEvent(record.run_id, name, stage.state, message="cached", attempt=stage.attempts))
            return
        self._move(record, name, stage, StageState.RUNNING, f"attempt {stage.attempts + 1} starting")
        # Saved before launching: after a crash right after start, the stage is seen as
        # running without a handle and is started again with the same attempt number, which
        # the workers and the Kubernetes executor treat as the same launch.
        record.refresh(self._now())
        save_run(self.store, record)
        self._launch(record, name, stage)

    def _launch(self, record: RunRecord, name: str, stage: StageRecord) -> None:
        job = StageJob(run_id=record.run_id, stage=name, store_uri=self.store.uri, attempt=stage.attempts,
                       key=stage.key)
        try:
            stage.handle = self.executor.start(job)
        except Exception as err:
            message, retryable = failure_of(err)
            log.warning("stage start failed",
                        extra={"run_id": record.run_id, "stage": name, "detail": message})
            self._failed(record, name, stage, f"could not start: {message}", retryable)
            return
        stage.message = f"attempt {stage.attempts} running"
        log.info("stage started", extra={"run_id": record.run_id, "stage": name, "attempt": stage.attempts,
                                         "handle": stage.handle})

    def _poll(self, record: RunRecord, name: str, stage: StageRecord) -> bool:
        if stage.handle is None:
            self._launch(record, name, stage)
            return True
        handle = stage.handle
        try:
            status = self.executor.poll(handle)
        except Exception as err:
            first = self._unreachable_since.setdefault(handle, self._clock())
            if self._clock() - first < self.config.unreachable_timeout_s:
                return False
            status = StageStatus(state=StageState.FAILED, message=f"cannot poll {handle} for "
                                 f"{self.config.unreachable_timeout_s:.0f} s: {failure_of(err)[0]}")
        self._unreachable_since.pop(handle, None)
        if isinstance(self.executor, ReportsProgress):
            for event in self.executor.take_progress(handle):
                stage.progress = event
                self._emit(RunEvent(record.run_id, name, progress=event, attempt=stage.attempts))
        if status.state is StageState.SUCCEEDED:
            result = stored_result(self.store, stage.key)
            if result is None:
                self._failed(record, name, stage, f"{handle} reported success but left no result "
                             f"(stage artifact {stage.key[:12]})", retryable=True)
            else:
                set_result(stage, result, cached=False, at=self._now())
                self._emit(RunEvent(record.run_id, name, stage.state, message=status.message,
                                    attempt=stage.attempts))
            return True
        if status.state is StageState.FAILED:
            self._failed(record, name, stage, status.message, status.retryable)
            return True
        if status.state is StageState.CANCELLED:  # not by us: the worker stopped it (shutdown)
            self._failed(record, name, stage, f"stopped by its worker: {status.message}", retryable=True)
            return True
        timeout = self.config.stage_timeout_s
        if timeout and stage.started_at and self._now() - stage.started_at > timedelta(seconds=timeout):
            self._failed(record, name, stage, f"ran longer than stage_timeout_s={timeout:g}", retryable=True)
            return True
        return False

    def _failed(self, record: RunRecord, name: str, stage: StageRecord, message: str,
                retryable: bool) -> None:
        tried = stage.attempts_since_resume
        stage.last_failure = f"attempt {stage.attempts}: {message}"
        if stage.handle:  # fence: the attempt given up on (timed out, its worker unreachable) must stop writing
            self._cancel_handle(stage.handle)
        if retryable and tried < self.config.max_attempts:
            delay = self.config.backoff(tried)
            stage.next_attempt_at = self._now() + timedelta(seconds=delay)
            self._move(record, name, stage, StageState.PENDING,
                       f"attempt {stage.attempts} failed: {message}; retrying in {delay:g} s")
        else:
            why = "not retryable" if not retryable else f"gave up after {tried} attempts"
            self._move(record, name, stage, StageState.FAILED, f"{message} ({why})")

    def _cancel_all(self, record: RunRecord) -> bool:
        changed = False
        for name, stage in record.stages.items():
            if stage.state is StageState.RUNNING:
                if stage.handle:
                    self._cancel_handle(stage.handle)
                self._move(record, name, stage, StageState.CANCELLED, "cancelled by request")
                changed = True
            elif stage.state is StageState.PENDING:
                self._move(record, name, stage, StageState.CANCELLED, "cancelled by request")
                changed = True
        return changed

    def _cancel_handle(self, handle: str) -> None:
        try:
            self.executor.cancel(handle)
        except Exception as err:  # best effort: the stage is recorded cancelled either way
            log.warning("cancel failed", extra={"handle": handle, "detail": failure_of(err)[0]})

    def _move(self, record: RunRecord, name: str, stage: StageRecord, to: StageState, message: str) -> None:
        stage.transition(to, message, self._now())
        self._emit(RunEvent(record.run_id, name, to, message=message, attempt=stage.attempts))

    def _emit(self, event: RunEvent) -> None:
        for inbox in self._watchers.get(event.run_id, []):
            inbox.put(event)

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

