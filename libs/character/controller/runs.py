"""Run records: what a run is and how far it got, persisted as the store record `runs/<run_id>`,
and the one way from a record to a stage ready to run (`prepare_stage`).

A record holds the resolved spec (constitution inline, so any worker can run any stage
from the record alone) and, per stage, its config, key and inputs (resolved and computed once,
at submit), state, attempts, message and timestamps. A stage runs the config its record holds,
checked against its digest, its key and the code's config schema version (`prepare_stage`).
Stage states move only along `TRANSITIONS`; a succeeded stage never moves again, which is what
keeps finished work from running twice.

Only the controller (`controller/scheduler.py`) changes records; every executor, `oct
stage` and `oct eval` read a stage's spec, key and inputs through `prepare_stage`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, PrivateAttr, model_validator

from character.controller.executor import StageState
from character.errors import CharacterError, InvalidInput, NotFound
from character.pipeline.catalog import STAGE_NAMES, stage_module
from character.pipeline.configs import ResolvedConfig
from character.pipeline.dag import run_id_from_keys, stage_key, stage_keys
from character.pipeline.runner import StageRun
from character.pipeline.spec import RunSpec, parse_spec
from character.progress import ProgressEvent
from character.store.base import ABSENT, ArtifactRef, Store

if TYPE_CHECKING:
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
    config: ResolvedConfig | None = None
    """The config the stage runs with, resolved at submit (presets + overrides) and hashed into
    `key`. None only where a record written before configs were recorded could not be migrated
    (`migrate_configs`): such a stage is refused, not run with a guessed config."""
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
    """What runs the stages: "inline" (`oct run`, or a controller running stages itself),
    "services" or "kubernetes"."""
    owner: str = ""
    """Who submitted it (the controller's authenticated caller; "" for `oct run`): only the
    owner or an admin may see or cancel it."""
    created_at: datetime
    updated_at: datetime
    _version: str | None = PrivateAttr(default=None)
    """The stored version this copy was read as or last written as (see `save_run`)."""

    @model_validator(mode="after")
    def _dag_order(self) -> RunRecord:
        """Stages in DAG order (stores may sort a record's keys): upstream first, ties in the
        pipeline's own order."""

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
        """The spec, carrying the stage configs this record holds (never re-resolved)."""
        return parse_spec(self.spec, where=self.record_key,
                          configs={n: s.config for n, s in self.stages.items() if s.config is not None})

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
    """A fresh record for `spec` (already resolved and validated) with every stage pending.
    The stage keys are computed here, once: everything downstream reads them from the record."""
    keys, configs = stage_keys(spec), spec.stage_configs()
    at = now()
    return RunRecord(
        run_id=run_id or run_id_from_keys(keys),
        spec=spec.model_dump(mode="json"),
        stages={name: StageRecord(key=keys[name], inputs=tuple(stage_module(name).INPUTS), config=configs[name])
                for name in STAGE_NAMES},
        executor=executor,
        created_at=at,
        updated_at=at,
    )


def save_run(store: Store, record: RunRecord) -> None:
    """Write the record with optimistic concurrency: only over the stored version this copy
    was read as (or, for a new run, only if none is stored), else `Conflict`, so that two
    controllers (an old one still running, a new one that adopted its runs) cannot
    overwrite each other's changes."""
    record._version = store.put_record(record.record_key, record.model_dump(mode="json"),
                                       if_version=record._version or ABSENT)


def load_run(store: Store, run_id: str) -> RunRecord:
    """The run's record; NotFound names the store and how to see what it holds."""
    found = store.get_record_versioned(RUNS_PREFIX + run_id)
    if found is None:
        raise NotFound(f"no run {run_id!r} in store {store.uri}; `oct list` shows the runs there")
    return _versioned(*found)


def list_runs(store: Store) -> list[RunRecord]:
    """Every run in the store, newest first."""
    records = []
    for key in store.list_records(RUNS_PREFIX):
        found = store.get_record_versioned(key)
        if found is not None:
            records.append(_versioned(*found))
    return sorted(records, key=lambda r: r.created_at, reverse=True)


def _versioned(doc: dict[str, Any], version: str) -> RunRecord:
    record = migrate_configs(RunRecord.model_validate(doc))
    record._version = version
    return record


def migrate_configs(record: RunRecord) -> RunRecord:
    """A record written before stage configs were recorded, given them: resolved once, here, the
    old way (this code's presets and the spec's overrides). A stage keeps the config only where
    it reproduces the stage's recorded key (so it is the one the key was computed from); the
    others stay without one and are refused when asked to run. The controller's next save
    writes the migrated record back."""
    if all(stage.config is not None for stage in record.stages.values()):
        return record
    try:
        spec = parse_spec(record.spec, where=record.record_key)
    except CharacterError:  # a spec this code refuses: no stage gets a config, each is refused
        return record
    for name, stage in record.stages.items():
        if stage.config is None and name in STAGE_NAMES and stage_key(
                spec, name, {up: record.stages[up].key for up in stage.inputs}) == stage.key:
            stage.config = spec.stage_configs()[name]
    return record


def set_result(stage: StageRecord, result: StageResult, cached: bool, at: datetime | None = None) -> None:
    """Mark a stage succeeded with its result's artifacts."""
    stage.artifacts = dict(result.artifacts)
    stage.cached = cached
    stage.transition(StageState.SUCCEEDED, "cached" if cached else "", at)


def prepare_stage(store: Store, run_id: str, stage: str, key: str = "") -> StageRun:
    """Stage `stage` of the stored run `run_id`, ready to run: its spec, its key and its inputs'
    keys from the record. `key` (a job's): refused when the record's stage has another key."""
    record = load_run(store, run_id)
    if stage not in record.stages:
        stage_module(stage)  # an unknown name: NotFound listing the stages
        raise NotFound(f"run {run_id!r} has no stage {stage!r}; its stages are: {', '.join(record.stages)}")
    entry = record.stages[stage]
    if key and key != entry.key:
        raise InvalidInput(f"stage {stage!r} of run {run_id!r} has key {entry.key[:12]} in its record, not "
                           f"{key[:12]}: the job was made for another version of the run", where="job.key")
    if entry.config is None:
        raise InvalidInput(f"stage {stage!r} of run {run_id!r} was recorded by older code and its config "
                           "cannot be reconstructed (this code's presets give another key): resubmit the "
                           "run spec", where=f"{record.record_key}.stages.{stage}")
    spec, input_keys = record.run_spec(), {up: record.stages[up].key for up in entry.inputs}
    entry.config.build(stage)  # the recorded values are intact and this code reads them as recorded
    if stage_key(spec, stage, input_keys) != entry.key:
        raise InvalidInput(f"the recorded config of stage {stage!r} of run {run_id!r} is not the one its key "
                           f"{entry.key[:12]} was computed from: the record was edited; resubmit the run spec",
                           where=f"{record.record_key}.stages.{stage}")
    return StageRun(run_id=run_id, stage=stage, spec=spec, key=entry.key, input_keys=input_keys)
