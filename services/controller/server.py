"""The controller service: SubmitRun, GetRun, WatchRun, CancelRun, ListRuns over
`character.controller.controller.Controller`, with the executor chosen at start
(services: the gRPC workers; kubernetes: one Job per stage; inline: in this process).

The spec travels as YAML text and is validated here by the library's own `parse_spec`, the
same code `oct run` uses: one schema, no second copy in protobuf to drift from it (stage
overrides are free-form per stage and checked against each stage's config). A spec that
fails validation is refused with INVALID_ARGUMENT before anything is stored.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import grpc
import yaml
from character.controller.controller import Controller, check_same_store
from character.controller.executor import Executor
from character.errors import InvalidInput, NotFound
from character.pipeline.spec import RunSpec, parse_spec
from character.store import open_store

from services.api.character.v1 import controller_pb2, controller_pb2_grpc
from services.common import convert
from services.common.catalog import SERVICES, WORKERS
from services.common.server import ServeOptions, Server

INFO = SERVICES["controller"]
MAX_SPEC_BYTES = 1024 * 1024
"""A spec with an inline constitution is a few KiB; a MiB leaves ample room."""


def spec_from_yaml(text: str, store_uri: str) -> RunSpec:
    """Validate a submitted spec; errors say what to fix and where."""
    if not text.strip():
        raise InvalidInput("send the run spec as YAML (what `oct run --spec` reads)", where="spec_yaml")
    if len(text.encode()) > MAX_SPEC_BYTES:
        raise InvalidInput(f"the spec is {len(text.encode())} bytes; the limit is {MAX_SPEC_BYTES}",
                           where="spec_yaml")
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        raise InvalidInput(f"bad YAML: {getattr(err, 'problem', err)}",
                           where=f"spec_yaml:{mark.line + 1}" if mark else "spec_yaml") from None
    if not isinstance(doc, dict):
        raise InvalidInput("a run spec is a mapping of keys to values", where="spec_yaml")
    constitution = doc.get("constitution")
    if isinstance(constitution, str):
        from character.constitution import persona_names

        if constitution not in persona_names():
            # A path would name a file on the controller's machine, not the submitter's.
            raise InvalidInput(f"unknown persona {constitution!r}: name a bundled persona "
                               f"({', '.join(persona_names())}) or put the constitution inline "
                               "(`oct submit` inlines a local constitution file)",
                               where="spec_yaml.constitution")
    if doc.get("store") is not None:
        check_same_store(str(doc["store"]), store_uri)
    try:
        return parse_spec({**doc, "store": store_uri}, where="spec_yaml")
    except NotFound as err:  # an unknown model or persona is a mistake in the request
        raise InvalidInput(str(err), where="spec_yaml") from None


def _run_id(request: Any) -> str:
    if not request.run_id:
        raise InvalidInput("set run_id (SubmitRun and ListRuns return it)", where="run_id")
    return str(request.run_id)


class ControllerServicer(controller_pb2_grpc.ControllerServiceServicer):
    def __init__(self, controller: Controller):
        self.controller = controller

    def SubmitRun(self, request: controller_pb2.SubmitRunRequest,  # gRPC's names
                  context: grpc.ServicerContext) -> controller_pb2.SubmitRunResponse:
        spec = spec_from_yaml(request.spec_yaml, self.controller.store.uri)
        record, created = self.controller.submit(spec)
        return controller_pb2.SubmitRunResponse(run=convert.run(record), created=created)

    def GetRun(self, request: controller_pb2.GetRunRequest,
               context: grpc.ServicerContext) -> controller_pb2.GetRunResponse:
        return controller_pb2.GetRunResponse(run=convert.run(self.controller.get(_run_id(request))))

    def WatchRun(self, request: controller_pb2.WatchRunRequest,
                 context: grpc.ServicerContext) -> Iterator[controller_pb2.WatchRunResponse]:
        for event in self.controller.watch(_run_id(request), alive=context.is_active):
            yield controller_pb2.WatchRunResponse(event=convert.run_event(event))

    def CancelRun(self, request: controller_pb2.CancelRunRequest,
                  context: grpc.ServicerContext) -> controller_pb2.CancelRunResponse:
        return controller_pb2.CancelRunResponse(run=convert.run(self.controller.cancel(_run_id(request))))

    def ListRuns(self, request: controller_pb2.ListRunsRequest,
                 context: grpc.ServicerContext) -> controller_pb2.ListRunsResponse:
        return controller_pb2.ListRunsResponse(runs=[convert.run(r, with_spec=False)
                                                     for r in self.controller.list()])


def make_executor(options: ServeOptions) -> Executor:
    """The executor named by `options.executor`."""
    if options.executor == "services":
        from character.controller.services_executor import ServicesExecutor

        return ServicesExecutor({name: options.address(name) for name in WORKERS})
    if options.executor == "inline":
        from character.controller.inline_executor import InlineExecutor

        return InlineExecutor(max_running=options.max_tasks)
    if options.executor == "kubernetes":
        from character.controller.kubernetes_executor import KubernetesExecutor

        path = options.executor_config or os.environ.get("OCT_KUBERNETES_EXECUTOR_CONFIG")
        if not path:
            raise InvalidInput("the kubernetes executor needs its settings file: --executor-config or "
                               "$OCT_KUBERNETES_EXECUTOR_CONFIG", where="executor")
        return KubernetesExecutor.from_config_file(path)
    raise InvalidInput(f"unknown executor {options.executor!r}: services, kubernetes or inline",
                       where="executor")


def build(options: ServeOptions) -> Server:
    executor = make_executor(options)
    controller = Controller(open_store(options.store), executor, options.controller,
                            executor_name=options.executor)
    servicer = ControllerServicer(controller)

    def stop() -> None:
        controller.stop()  # running stages go on; the next controller adopts them
        close = getattr(executor, "close", None)
        if close is not None:
            close()

    def add(server: grpc.Server) -> None:
        controller_pb2_grpc.add_ControllerServiceServicer_to_server(servicer, server)

    return Server(INFO, add, host=options.host, port=options.port, metrics_port=options.metrics_port,
                  max_request_bytes=options.max_request_bytes, on_start=controller.start, on_stop=stop)
