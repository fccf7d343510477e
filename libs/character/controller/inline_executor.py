"""The `inline` executor: stages run in threads of the controller's own process; and
`run_in_process`, which is `oct run`: the controller with this executor, in this process.

Models are loaded once per process and shared by the stages (one `EnginePool`). A handle is
a task id of this process: after a restart the old handles are unknown, and the controller
retries those stages (finished ones are found in the store).
"""

from __future__ import annotations

import contextlib
import threading

from character.controller.executor import Executor, ProgressBuffer, StageJob, StageState, StageStatus, stage_status
from character.controller.runs import RunRecord
from character.controller.scheduler import Controller, ControllerConfig
from character.controller.stage_tasks import StageJobs, TaskManager
from character.errors import NotFound
from character.pipeline.engines import EnginePool
from character.pipeline.spec import RunSpec
from character.pipeline.stage import EngineProvider
from character.progress import Progress, ProgressEvent, silent
from character.store.base import Store

INLINE = "inline"
"""The executor's name in run records."""


class InlineExecutor(Executor):
    def __init__(self, max_running: int = 1):
        self.engines = EnginePool(locked=max_running > 1)
        self.tasks = TaskManager(StageJobs(self._engines_for), max_running=max_running)
        self._progress = ProgressBuffer()

    def _engines_for(self, store: Store, spec: RunSpec) -> EngineProvider:
        return self.engines.for_spec(store, spec)

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


IN_PROCESS = ControllerConfig(max_attempts=1, poll_interval_s=0.1)
"""`oct run` fails at the first failed attempt (running again resumes from there) and polls
its own threads often."""


def run_in_process(spec: RunSpec, store: Store, progress: Progress = silent, until: str | None = None,
                   config: ControllerConfig = IN_PROCESS) -> RunRecord:
    """`oct run`: submit `spec` to a controller in this process that runs the stages here, and
    wait for the run to end (after stage `until`, when given: the stages after it end cancelled
    without starting, and running again goes on from there). Ctrl-C cancels the run, records
    it, and re-raises. Returns the final record."""
    controller = Controller(store, InlineExecutor(), config, executor_name=INLINE)
    record, _ = controller.submit(spec, stop_after=until)
    if record.state.final:  # it had succeeded before: nothing to run
        return record
    run_id = record.run_id
    controller.start(recover=False)
    try:
        for event in controller.watch(run_id, tick=0.1):
            if event.progress is not None:
                progress(event.progress)
    except KeyboardInterrupt:
        controller.cancel(run_id)
        for event in controller.watch(run_id, tick=0.1):  # until the running stage has stopped
            del event
        raise
    finally:
        controller.stop()
    return controller.get(run_id)
