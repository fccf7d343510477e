"""Executors run one pipeline stage of one run somewhere and report how it is going.

The controller calls `start`, then `poll` until the state is final, and `cancel` when
a run is cancelled. Implementations (one file each): `inline` (in-process, for
`oct run`), `services` (the gRPC workers), `kubernetes` (one batch/v1 Job per stage); the
inline and services executors both watch `TaskManager` tasks, and share `stage_status` and
`ProgressBuffer` from here.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from enum import StrEnum
from typing import TYPE_CHECKING

from pydantic import BaseModel

from character.errors import CharacterError, InvalidInput, NotFound
from character.progress import ProgressEvent

if TYPE_CHECKING:
    from character.controller.stage_tasks import TaskStatus


class StageState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in (StageState.SUCCEEDED, StageState.FAILED, StageState.CANCELLED)


class StageJob(BaseModel):
    """What an executor needs to run one stage: the worker reads the run spec from the store."""

    run_id: str
    """The run this stage belongs to; its record is `runs/<run_id>` in the store."""
    stage: str
    """Stage name from the pipeline DAG (prompts, distill, dpo, introspect, sft, merge, eval)."""
    store_uri: str
    """Where the run's spec, inputs and outputs live (local path or s3://bucket/prefix)."""
    attempt: int = 1
    """1 for the first try; retries count up."""
    key: str = ""
    """The stage's content address, computed once when the run was submitted (the run record
    holds it too; a job whose key the record no longer has is refused). Empty: the record's."""


def failure_of(err: BaseException) -> tuple[str, bool]:
    """The message and retryability of a stage's exception. Invalid input and missing
    inputs fail the same way every time; anything else (a crash, an unreachable store,
    out of memory) may pass on another try."""
    if isinstance(err, InvalidInput | NotFound):
        return str(err), False
    if isinstance(err, CharacterError):
        return str(err), True
    return f"{type(err).__name__}: {err}", True


class StageStatus(BaseModel):
    state: StageState
    message: str = ""
    """Human-readable detail: progress while running, the reason when failed."""
    retryable: bool = True
    """False when retrying cannot help (invalid input), so the controller fails the stage at once."""


def stage_status(status: TaskStatus) -> StageStatus:
    """How a task looks to the controller."""
    message = status.message
    if not message and status.progress is not None:
        p = status.progress
        message = f"{p.task}: {p.done}/{p.total if p.total is not None else '?'} {p.message}".strip()
    return StageStatus(state=status.state, message=message, retryable=status.retryable)


class ProgressBuffer:
    """Progress events per handle, collected by one watcher thread each, handed out once."""

    def __init__(self) -> None:
        self._events: dict[str, list[ProgressEvent]] = {}
        self._lock = threading.Lock()

    def add(self, handle: str, event: ProgressEvent) -> None:
        with self._lock:
            self._events.setdefault(handle, []).append(event)

    def take(self, handle: str) -> list[ProgressEvent]:
        with self._lock:
            return self._events.pop(handle, [])


class Executor(ABC):
    """Runs stages; one instance serves many runs."""

    @abstractmethod
    def start(self, job: StageJob) -> str:
        """Launch the stage and return a handle for `poll` and `cancel`."""

    @abstractmethod
    def poll(self, handle: str) -> StageStatus:
        """Current status of a launched stage."""

    @abstractmethod
    def cancel(self, handle: str) -> None:
        """Stop the stage (best effort, idempotent)."""
