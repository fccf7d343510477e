"""A scripted executor and hand-made run records, so the controller's logic is tested
without models or stage modules."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from character.controller.executor import Executor, StageJob, StageState, StageStatus
from character.controller.runs import RunRecord, StageRecord
from character.errors import NotFound
from character.pipeline.runner import save_result
from character.pipeline.stage import StageResult
from character.store.base import Store

DAG = {"a": (), "b": ("a",), "c": ("b",)}


def make_record(run_id: str = "run-test", dag: dict[str, tuple[str, ...]] = DAG) -> RunRecord:
    at = datetime(2025, 1, 1, tzinfo=UTC)
    return RunRecord(run_id=run_id, spec={"constitution": "x"}, created_at=at, updated_at=at,
                     stages={name: StageRecord(key=f"key-{run_id}-{name}", inputs=inputs)
                             for name, inputs in dag.items()})


class ScriptedExecutor(Executor):
    """Each start of a stage takes the next outcome from `script[stage]` (default "ok"):
    "ok" writes the stage's result to the store and succeeds, "fail" fails retryably,
    "invalid" fails for good, "hang" stays running, "stopped" ends cancelled by its worker,
    "crash" makes start raise a retryable error, "refuse" a non-retryable one.
    A stage's first poll after start reports running; the next one the outcome."""

    def __init__(self, store: Store, script: dict[str, list[str]] | None = None):
        self.store = store
        self.script = {k: list(v) for k, v in (script or {}).items()}
        self.started: list[StageJob] = []
        self.cancelled: list[str] = []
        self.jobs: dict[str, tuple[StageJob, str]] = {}
        self.polls: dict[str, int] = {}

    def start(self, job: StageJob) -> str:
        outcomes = self.script.get(job.stage) or ["ok"]
        outcome = outcomes.pop(0) if len(outcomes) > 1 else outcomes[0]
        if outcome == "crash":
            raise RuntimeError("worker refused")
        if outcome == "refuse":
            raise NotFound("no such run on this worker")
        self.started.append(job)
        handle = f"{job.stage}-a{job.attempt}"
        self.jobs[handle] = (job, outcome)
        return handle

    def poll(self, handle: str) -> StageStatus:
        if handle not in self.jobs:
            return StageStatus(state=StageState.FAILED, message=f"unknown handle {handle}")
        job, outcome = self.jobs[handle]
        self.polls[handle] = self.polls.get(handle, 0) + 1
        if handle in self.cancelled:
            return StageStatus(state=StageState.CANCELLED)
        if outcome == "hang" or self.polls[handle] == 1:
            return StageStatus(state=StageState.RUNNING, message="busy")
        if outcome == "ok":
            key = f"key-{job.run_id}-{job.stage}"
            save_result(self.store, StageResult(stage=job.stage, key=key))
            return StageStatus(state=StageState.SUCCEEDED, message="done")
        if outcome == "stopped":
            return StageStatus(state=StageState.CANCELLED, message="worker shutting down")
        if outcome == "invalid":
            return StageStatus(state=StageState.FAILED, message="bad config", retryable=False)
        return StageStatus(state=StageState.FAILED, message="out of memory", retryable=True)

    def cancel(self, handle: str) -> None:
        self.cancelled.append(handle)


class Clock:
    def __init__(self, start: float = 1_700_000_000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Caller:
    """A watcher's caller that stays for `seconds` (the `alive` of a watch): a watch that should
    end by itself but does not fails its test then, with `gave_up` set, instead of hanging it."""

    def __init__(self, seconds: float = 3.0):
        self.deadline = time.monotonic() + seconds
        self.gave_up = False

    def __call__(self) -> bool:
        self.gave_up = time.monotonic() >= self.deadline
        return not self.gave_up


def wait_until(check: Callable[[], object], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {timeout} s")
        time.sleep(0.002)
