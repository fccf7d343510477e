"""The `services` executor: each stage runs as a task on its worker service over gRPC
(generation: prompts, distill; training: dpo, sft, merge; introspection: introspect;
evaluation: eval).

A handle is `<service>/<task id>`. For each handle one thread follows the task's
WatchTask stream (status and progress), reconnecting when the stream breaks; `poll` reads
what it saw. A worker that cannot be reached for `unreachable_timeout_s`, or that no longer
knows the task (it restarted), fails the attempt as retryable, and the controller retries.
After a controller restart the first poll of a stored handle starts following it again
(re-adoption): a task that kept running on its worker is not started twice.

This is the controller side of the gRPC layer; the library knows only the `Executor` interface.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Mapping

import grpc
from character.controller.executor import Executor, ProgressBuffer, StageJob, StageState, StageStatus, stage_status
from character.controller.stage_tasks import TaskStatus
from character.errors import InvalidInput, NotFound
from character.progress import ProgressEvent

from character_services.common.catalog import STAGE_SERVICE, service
from character_services.common.errors import ServiceUnavailable
from character_services.common.security import Transport
from character_services.common.task_rpc import TaskClient

log = logging.getLogger(__name__)


class _Follower:
    """Follows one task's WatchTask stream in a thread."""

    def __init__(self, client: TaskClient, task_id: str, handle: str, progress: ProgressBuffer):
        self.client, self.task_id, self.handle, self.progress = client, task_id, handle, progress
        self.status: TaskStatus | None = None
        self.lost = ""
        """Set when the worker no longer knows the task."""
        self.unreachable_since: float | None = None
        self.error = ""
        self.stop = threading.Event()
        threading.Thread(target=self._run, name=f"follow-{handle}", daemon=True).start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                for event in self.client.watch(self.task_id):
                    self.unreachable_since = None
                    if isinstance(event, ProgressEvent):
                        self.progress.add(self.handle, event)
                    else:
                        self.status = event
                        if event.state.final:
                            return
            except NotFound as err:
                self.lost = str(err)
                return
            except ServiceUnavailable as err:
                self.error = str(err)
                if self.unreachable_since is None:
                    self.unreachable_since = time.monotonic()
            except Exception as err:  # any other break of the stream: reconnect after a pause
                self.error = f"{type(err).__name__}: {err}"
            self.stop.wait(1.0)


class ServicesExecutor(Executor):
    def __init__(self, addresses: Mapping[str, str], unreachable_timeout_s: float = 60.0,
                 transport: Transport | None = None):
        """`addresses`: worker service name -> host:port (see character_services.common.catalog)."""
        missing = sorted(set(STAGE_SERVICE.values()) - set(addresses))
        if missing:
            raise InvalidInput(f"no address for the worker services {', '.join(missing)}", where="addresses")
        self.unreachable_timeout_s = unreachable_timeout_s
        self._channels: list[grpc.Channel] = []
        self._clients: dict[str, TaskClient] = {}
        transport = transport or Transport.resolve()
        for name, address in addresses.items():
            channel = transport.channel(address)
            self._channels.append(channel)
            self._clients[name] = TaskClient(channel, service(name), address)
        self._stage_service = STAGE_SERVICE
        self._followers: dict[str, _Follower] = {}
        self._progress = ProgressBuffer()
        self._lock = threading.Lock()

    def _split(self, handle: str) -> tuple[TaskClient, str]:
        name, _, task_id = handle.partition("/")
        if name not in self._clients or not task_id:
            raise InvalidInput(f"not a services handle: {handle!r} (expected <service>/<task id>)",
                               where="handle")
        return self._clients[name], task_id

    def _follower(self, handle: str) -> _Follower:
        with self._lock:
            follower = self._followers.get(handle)
            if follower is None:
                client, task_id = self._split(handle)
                follower = self._followers[handle] = _Follower(client, task_id, handle, self._progress)
            return follower

    def start(self, job: StageJob) -> str:
        name = self._stage_service.get(job.stage)
        if name is None:
            raise InvalidInput(f"no worker service runs stage {job.stage!r}", where="stage")
        status = self._clients[name].start(job)
        handle = f"{name}/{status.task_id}"
        self._follower(handle)
        return handle

    def poll(self, handle: str) -> StageStatus:
        follower = self._follower(handle)
        status = follower.status
        if status is not None and status.state.final:
            self._forget(handle)
            return stage_status(status)
        if follower.lost:
            self._forget(handle)
            return StageStatus(state=StageState.FAILED, retryable=True,
                               message=f"the worker no longer knows task {handle} (it restarted?): "
                                       f"{follower.lost}")
        since = follower.unreachable_since
        if since is not None:
            waited = time.monotonic() - since
            if waited > self.unreachable_timeout_s:
                self._forget(handle)
                return StageStatus(state=StageState.FAILED, retryable=True,
                                   message=f"worker unreachable for {waited:.0f} s: {follower.error}")
            return StageStatus(state=StageState.RUNNING, message=f"worker unreachable for {waited:.0f} s")
        if status is None:
            return StageStatus(state=StageState.PENDING, message=f"connecting to task {handle}")
        return stage_status(status)

    def _forget(self, handle: str) -> None:
        with self._lock:
            follower = self._followers.pop(handle, None)
        if follower is not None:
            follower.stop.set()

    def cancel(self, handle: str) -> None:
        client, task_id = self._split(handle)
        with contextlib.suppress(NotFound):  # the worker forgot it (restarted): nothing runs
            client.cancel(task_id)

    def take_progress(self, handle: str) -> list[ProgressEvent]:
        return self._progress.take(handle)

    def close(self) -> None:
        with self._lock:
            followers = list(self._followers.values())
            self._followers.clear()
        for follower in followers:
            follower.stop.set()
        for channel in self._channels:
            channel.close()
