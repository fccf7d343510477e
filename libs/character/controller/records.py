"""Run records: what a run is and how far it got, persisted as the store record `runs/<run_id>`.

A record holds the resolved spec (constitution inline, so any worker can run any stage
from the record alone) and, per stage, its state, attempts, message, result key and
timestamps. Stage states move only along `TRANSITIONS`; a succeeded stage never moves
again, which is what keeps finished work from running twice.

The controller writes records on every state change; `oct run` writes the same record, so
`oct status` and `oct report` work for inline runs too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, model_validator

from character.controller.executor import StageState
from character.errors import NotFound
from character.progress import ProgressEvent
from character.store.base import ArtifactRef, Store

if TYPE_CHECKING:
    from character.pipeline.spec import RunSpec
    from character.pipeline.stage import StageResult

RUNS_PREFIX = "runs/"

TRANSITIONS: dict[StageState, frozenset[StageState]] = {
    StageState.PENDING: frozenset({StageState.RUNNING, StageState.SUCCEEDED, StageState.CANCELLED}),
    StageState.RUNNING: frozenset(
        {StageState.SUCCEEDED, StageState.FAILED, StageState.CANCELLED, StageState.PENDING}
    ),
    StageState.SUCCEEDED: frozenset(),
    StageState.FAILED: frozenset({StageState.PENDING}),
    StageState.CANCELLED: frozenset({StageState.PENDING}),
}
"""Allowed stage state changes. pending -> succeeded is a stage found finished in the store;
running -> pending is a retry; failed/cancelled -> pending is a resubmitted run."""


class InvalidTransition(ValueError):
    """A stage state change outside `TRANSITIONS`: a controller bug, never a user error."""


def now() -> datetime:
    return datetime.now(UTC)


class StageRecord(BaseModel):
    """One stage of a run."""

    # Records outlive code versions: unknown fields from a newer writer are ignored, not fatal.
    model_config = ConfigDict(extra="ignore")

    key: str
    """The stage's content address: its result is the `stage` artifact of this key."""
    inputs: tuple[str, ...] = ()
    """Upstream stages (from the DAG), so the record alone says what may run when."""
    state: StageState = StageState.PENDING
    attempts: int = 0
    """Tries started so far, over the run's whole life (a stage found finished takes none)."""
    retry_base: int = 0
    """Attempts made before the run was last resumed: the retry limit counts those after it."""
    message: str = ""
    """Detail: "cached", the last failure, the next retry time, ..."""
    last_failure: str = ""
    """Why the latest failed attempt failed (kept when a retry runs or succeeds)."""
    handle: str | None = None
    """The executor's handle of the running attempt (task id, Job name)."""
    cached: bool = False
    """Succeeded without running: the result was already in the store."""
    artifacts: dict[str, ArtifactRef] = {}
    """The stage's outputs, once succeeded."""
    started_at: datetime | None = None
    finished_at: datetime | None = None
    next_attempt_at: datetime | None = None
    """While pending after a failed attempt: not before this time (backoff)."""
    progress: ProgressEvent | None = None
    """The latest progress of the running attempt (saved with the record's state changes)."""

    def transition(self, to: StageState, message: str = "", at: datetime | None = None) -> None:
        """Move to state `to`, keeping attempts and timestamps consistent."""
        if to not in TRANSITIONS[self.state]:
            raise InvalidTransition(f"stage cannot go from {self.state.value} to {to.value}")
        at = at or now()
        self.state, self.message, self.progress = to, message, None
        if to is StageState.RUNNING:
            self.attempts += 1
            self.started_at, self.finished_at, self.handle, self.next_attempt_at = at, None, None, None
        elif to.final:
            self.finished_at = at
            self.handle = None
        else:  # back to pending: a retry or a resumed run
            self.handle = None

    @property
    def attempts_since_resume(self) -> int:
        """The attempts that count against the retry limit."""
        return self.attempts - self.retry_base


class RunRecord(BaseModel):
    """A run: its spec and its stages, in DAG order."""

    model_config = ConfigDict(extra="ignore")

    run_id: str
    spec: dict[str, Any]
    """The resolved spec (`spec.model_dump(mode="json")`); `oct stage` and the workers read it."""
    stages: dict[str, StageRecord]
    state: StageState = StageState.PENDING
    """The run's state, derived from its stages by `refresh()`."""
    message: str = ""
    cancel_requested: bool = False
    executor: str = ""
    """What runs the stages: "inline", "services", "kubernetes", or "oct run"."""
    created_at: datetime
    updated_at: datetime

    @model_validator(mode="after")
    def _dag_order(self) -> RunRecord:
        """Stages in DAG order (stores may sort a record's keys): upstream first, ties in the
        pipeline's own order."""
        from character.pipeline.dag import STAGE_NAMES

        def rank(name: str) -> tuple[int, str]:
            return (STAGE_NAMES.index(name) if name in STAGE_NAMES else len(STAGE_NAMES), name)

        todo, ordered = dict(self.stages), {}
        while todo:
            ready = [n for n, st in todo.items() if all(u in ordered or u not in todo for u in st.inputs)]
            if not ready:
                raise ValueError(f"stages {', '.join(sorted(todo))} depend on each other in a cycle")
            name = min(ready, key=rank)
            ordered[name] = todo.pop(name)
        self.stages = ordered
        return self

    @property
    def record_key(self) -> str:
        return RUNS_PREFIX + self.run_id

    def run_spec(self) -> RunSpec:
        from character.pipeline.spec import parse_spec

        return parse_spec(self.spec, where=self.record_key)

    def refresh(self, at: datetime | None = None) -> None:
        """Derive the run's state and message from its stages."""
        states = [s.state for s in self.stages.values()]
        if any(not s.final for s in states):
            started = any(s is not StageState.PENDING for s in states) or any(
                s.attempts for s in self.stages.values())
            self.state = StageState.RUNNING if started else StageState.PENDING
            self.message = "cancelling" if self.cancel_requested else ""
        elif all(s is StageState.SUCCEEDED for s in states):
            self.state, self.message = StageState.SUCCEEDED, ""
        elif StageState.FAILED in states:
            failed = next(n for n, s in self.stages.items() if s.state is StageState.FAILED)
            self.state = StageState.FAILED
            self.message = f"stage {failed} failed: {self.stages[failed].message}"
        else:
            self.state, self.message = StageState.CANCELLED, "cancelled"
        self.updated_at = at or now()

    def resume(self, at: datetime | None = None) -> None:
        """Make a failed or cancelled run runnable again: its unfinished stages go back to
        pending with a fresh retry budget; succeeded stages stay as they are."""
        self.cancel_requested = False
        for stage in self.stages.values():
            if stage.state in (StageState.FAILED, StageState.CANCELLED):
                stage.transition(StageState.PENDING, "resumed", at)
            if not stage.state.final:
                stage.retry_base = stage.attempts
                stage.next_attempt_at = None
        self.refresh(at)


def new_run(spec: RunSpec, executor: str, run_id: str | None = None) -> RunRecord:
    """A fresh record for `spec` (already resolved and validated) with every stage pending."""
    from character.pipeline.dag import STAGE_NAMES, run_id_for, stage_keys, stage_module

    keys = stage_keys(spec)
    at = now()
    return RunRecord(
        run_id=run_id or run_id_for(spec),
        spec=spec.model_dump(mode="json"),
        stages={name: StageRecord(key=keys[name], inputs=tuple(stage_module(name).INPUTS))
                for name in STAGE_NAMES},
        executor=executor,
        created_at=at,
        updated_at=at,
    )


def save_run(store: Store, record: RunRecord) -> None:
    store.put_record(record.record_key, record.model_dump(mode="json"))


def load_run(store: Store, run_id: str) -> RunRecord:
    """The run's record; NotFound names the store and how to see what it holds."""
    doc = store.get_record(RUNS_PREFIX + run_id)
    if doc is None:
        raise NotFound(f"no run {run_id!r} in store {store.uri}; `oct list` shows the runs there")
    return RunRecord.model_validate(doc)


def list_runs(store: Store) -> list[RunRecord]:
    """Every run in the store, newest first."""
    records = []
    for key in store.list_records(RUNS_PREFIX):
        doc = store.get_record(key)
        if doc is not None:
            records.append(RunRecord.model_validate(doc))
    return sorted(records, key=lambda r: r.created_at, reverse=True)


def set_result(stage: StageRecord, result: StageResult, cached: bool, at: datetime | None = None) -> None:
    """Mark a stage succeeded with its result's artifacts."""
    stage.artifacts = dict(result.artifacts)
    stage.cached = cached
    stage.transition(StageState.SUCCEEDED, "cached" if cached else "", at)


def open_inline_run(store: Store, spec: RunSpec, run_id: str) -> RunRecord:
    """The record `oct run` keeps up to date: the stored one resumed, or a new one."""
    try:
        record = load_run(store, run_id)
    except NotFound:
        record = new_run(spec, executor="oct run", run_id=run_id)
    else:
        record.resume()
    save_run(store, record)
    return record


@contextmanager
def recording_stage(store: Store, record: RunRecord, name: str) -> Iterator[Callable[[StageResult], None]]:
    """Record one stage run in this process: running while the block runs (unless its result
    is already stored), then succeeded (call the yielded `done(result)`), failed, or
    cancelled (Ctrl-C). The record is saved at each change."""
    from character.pipeline.runner import RESULT_KIND

    stage = record.stages[name]
    if stage.state is StageState.SUCCEEDED:
        yield lambda result: None
        return
    if not store.has(RESULT_KIND, stage.key):
        stage.transition(StageState.RUNNING)
        record.refresh()
        save_run(store, record)

    def done(result: StageResult) -> None:
        set_result(stage, result, cached=stage.state is StageState.PENDING)

    try:
        yield done
    except BaseException as err:
        from character.controller.tasks import failure_of

        if stage.state is StageState.PENDING:
            stage.transition(StageState.RUNNING)
        if isinstance(err, KeyboardInterrupt):
            stage.transition(StageState.CANCELLED, "interrupted")
        else:
            stage.transition(StageState.FAILED, failure_of(err)[0])
        raise
    finally:
        record.refresh()
        save_run(store, record)
