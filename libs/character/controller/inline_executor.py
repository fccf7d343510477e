"""The `inline` executor: stages run in threads of the controller's own process.

Models are loaded once per process and shared by the stages (one `LocalEngines` per store
and engine kind). A handle is a task id of this process: after a restart the old handles
are unknown, and the controller retries those stages (finished ones are found in the store).
"""

from __future__ import annotations

import contextlib
import json
import threading

from character.controller.executor import Executor, StageJob, StageState, StageStatus
from character.controller.tasks import StageJobs, TaskManager, TaskStatus
from character.errors import NotFound
from character.pipeline.engines import LocalEngines
from character.pipeline.spec import RunSpec
from character.pipeline.stage import EngineProvider
from character.progress import ProgressEvent
from character.store.base import Store


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


class InlineExecutor(Executor):
    def __init__(self, max_running: int = 1):
        self._engines: dict[tuple[str, str, str], LocalEngines] = {}
        self._lock = threading.Lock()
        self.tasks = TaskManager(StageJobs(self._engines_for), max_running=max_running)
        self._progress = ProgressBuffer()

    def _engines_for(self, store: Store, spec: RunSpec) -> EngineProvider:
        with self._lock:
            endpoints = {name: e.model_dump(mode="json") for name, e in spec.endpoints.items()}
            key = (store.uri, spec.engine, json.dumps(endpoints, sort_keys=True))
            if key not in self._engines:
                self._engines[key] = LocalEngines.for_spec(store, spec)
            return self._engines[key]

    def start(self, job: StageJob) -> str:
        status = self.tasks.start(job)
        threading.Thread(target=self._follow, args=(status.task_id,), daemon=True).start()
        return status.task_id

    def _follow(self, task_id: str) -> None:
        for event in self.tasks.watch(task_id):
            if isinstance(event, ProgressEvent):
                self._progress.add(task_id, event)

    def poll(self, handle: str) -> StageStatus:
        try:
            return stage_status(self.tasks.get(handle))
        except NotFound:
            return StageStatus(state=StageState.FAILED, retryable=True,
                               message=f"task {handle} is unknown here: the process that ran it has ended")

    def cancel(self, handle: str) -> None:
        with contextlib.suppress(NotFound):
            self.tasks.cancel(handle)

    def take_progress(self, handle: str) -> list[ProgressEvent]:
        return self._progress.take(handle)
