"""The task RPCs every worker serves (StartTask, WatchTask, GetTask, CancelTask), over a
`character.controller.stage_tasks.TaskManager`, and the client the controller uses to call them.

Each worker service has its own request and response messages (the API lint wants them
unique per RPC) with identical shapes, so one implementation serves all four services: it
looks up the service's message classes by name.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
from character.controller.executor import StageJob
from character.controller.stage_tasks import TaskEvent, TaskManager, TaskStatus
from character.errors import InvalidInput

from character_services.common import convert
from character_services.common.catalog import ServiceInfo
from character_services.common.errors import from_rpc_error

RPC_TIMEOUT_S = 30.0
"""Deadline of the unary task calls (starting a task only checks the job and spawns it)."""


def _messages(info: ServiceInfo, method: str) -> tuple[Any, Any]:
    pb2 = info.pb2()
    return getattr(pb2, f"{info.proto}{method}Request"), getattr(pb2, f"{info.proto}{method}Response")


def _task_id(request: Any) -> str:
    if not request.task_id:
        raise InvalidInput("set task_id (StartTask returns it)", where="task_id")
    return str(request.task_id)


class TaskServicer:
    """Mixin for a worker's servicer: put it first among the bases, before the generated
    `<Service>Servicer`, and set `info` and `tasks`."""

    info: ServiceInfo
    tasks: TaskManager
    default_store: str
    """The worker's configured store: tasks run there, whatever store the caller names."""

    def StartTask(self, request: Any, context: grpc.ServicerContext) -> Any:  # gRPC's names
        job = convert.from_stage_task(request.task).model_copy(update={"store_uri": self.default_store})
        return _messages(self.info, "StartTask")[1](task=convert.task_status(self.tasks.start(job)))

    def WatchTask(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        response = _messages(self.info, "WatchTask")[1]
        for event in self.tasks.watch(_task_id(request), alive=context.is_active):
            yield response(event=convert.task_event(event))

    def GetTask(self, request: Any, context: grpc.ServicerContext) -> Any:
        return _messages(self.info, "GetTask")[1](task=convert.task_status(self.tasks.get(_task_id(request))))

    def CancelTask(self, request: Any, context: grpc.ServicerContext) -> Any:
        status = self.tasks.cancel(_task_id(request))
        return _messages(self.info, "CancelTask")[1](task=convert.task_status(status))


class TaskClient:
    """Calls one worker's task RPCs; failures come back as library errors."""

    def __init__(self, channel: grpc.Channel, info: ServiceInfo, address: str):
        self.info = info
        self.address = address
        self._stub = getattr(info.pb2_grpc(), f"{info.proto}Stub")(channel)
        self._what = f"{info.name} service at {address}"

    def _call(self, method: str, timeout: float | None = RPC_TIMEOUT_S, **fields: Any) -> Any:
        request = _messages(self.info, method)[0](**fields)
        try:
            return getattr(self._stub, method)(request, timeout=timeout)
        except grpc.RpcError as err:
            raise from_rpc_error(err, self._what) from None

    def start(self, job: StageJob) -> TaskStatus:
        return convert.from_task_status(self._call("StartTask", task=convert.stage_task(job)).task)

    def get(self, task_id: str) -> TaskStatus:
        return convert.from_task_status(self._call("GetTask", task_id=task_id).task)

    def cancel(self, task_id: str) -> TaskStatus:
        return convert.from_task_status(self._call("CancelTask", task_id=task_id).task)

    def watch(self, task_id: str) -> Iterator[TaskEvent]:
        """The task's events until it ends; a broken stream raises a library error."""
        stream = self._call("WatchTask", timeout=None, task_id=task_id)
        try:
            for response in stream:
                yield convert.from_task_event(response.event)
        except grpc.RpcError as err:
            raise from_rpc_error(err, self._what) from None
        finally:
            stream.cancel()
