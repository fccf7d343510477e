"""The controller service: SubmitRun, GetRun, WatchRun, CancelRun, ListRuns over
`character.controller.scheduler.Controller`, with the executor chosen at start
(services: the gRPC workers; kubernetes: one Job per stage; inline: in this process).

The spec travels as YAML text and is validated by the library
(`character.controller.submission.spec_from_submission`: the platform's admission rules,
then the same `parse_spec` as `oct run`). A spec that fails is refused with
INVALID_ARGUMENT before anything is stored.

Every call is authenticated (bearer token or Kubernetes service-account token); a run
belongs to its submitter, and only they or an admin may get, watch or cancel it. Submit and
Cancel write an audit line naming the caller.

Trained personas (PublishPersona, ListTrainedPersonas, GetTrainedPersona) are the registry of
`character.serving.registry` in the controller's store: only a run's owner (or an admin) may
publish it, callers see their own personas and the shared ones, and a run whose spec says
`publish:` is published when it succeeds. Publish writes an audit line too.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Iterator
from typing import Any

import grpc
from character.controller.executor import Executor
from character.controller.runs import RunRecord, new_run
from character.controller.scheduler import Controller, ControllerConfig
from character.controller.submission import spec_from_submission
from character.errors import InvalidInput, NotFound
from character.pipeline.publish import DEFAULT_TAG
from character.platform import PlatformConfig
from character.security.auth import TOKENS_ENV, Authenticator, Identity, QuotaExceeded, check_owner
from character.serving.registry import (
    check_visible,
    get_persona,
    publish,
    publish_as_specified,
    visible_personas,
)
from character.store import open_store

from character_services.api.character.v1 import controller_pb2, controller_pb2_grpc
from character_services.common import convert
from character_services.common.catalog import SERVICES, WORKERS
from character_services.common.security import Guard, Redactor
from character_services.common.server import ServeOptions, Server

INFO = SERVICES["controller"]
audit = logging.getLogger("character_services.audit")


def _run_id(request: Any) -> str:
    if not request.run_id:
        raise InvalidInput("set run_id (SubmitRun and ListRuns return it)", where="run_id")
    return str(request.run_id)


class ControllerServicer(controller_pb2_grpc.ControllerServiceServicer):
    def __init__(self, controller: Controller, guard: Guard | None = None, platform: PlatformConfig | None = None):
        self.controller = controller
        self.guard = guard or Guard(anonymous=True)
        self.platform = platform or PlatformConfig()
        self.redact = Redactor(controller.store.uri)

    def _run(self, record: RunRecord, identity: Identity, with_spec: bool = True) -> controller_pb2.Run:
        """The run as `identity` may see it: without server paths or secrets unless an admin."""
        run = convert.run(record, with_spec=with_spec)
        if not identity.admin:
            run.store_uri, run.message, run.spec_yaml = "", self.redact(run.message), self.redact(run.spec_yaml)
            for stage in run.stages:
                stage.message, stage.config_json = self.redact(stage.message), self.redact(stage.config_json)
        return run

    def _owned(self, run_id: str, context: grpc.ServicerContext) -> tuple[Identity, RunRecord]:
        """The caller and the run, when the caller may see it (PermissionDenied otherwise)."""
        identity = self.guard.identity(context)
        record = self.controller.get(run_id)
        check_owner(identity, record.owner, run_id)
        return identity, record

    def SubmitRun(self, request: controller_pb2.SubmitRunRequest,  # gRPC's names
                  context: grpc.ServicerContext) -> controller_pb2.SubmitRunResponse:
        identity = self.guard.identity(context)
        spec = spec_from_submission(request.spec_yaml, self.controller.store.uri, self.platform)
        record = new_run(spec.model_copy(update={"store": self.controller.store.uri}),
                         executor=self.controller.executor_name)
        record.owner = identity.name
        with contextlib.suppress(NotFound):  # the same spec is the same run, so it may be someone else's
            check_owner(identity, self.controller.get(record.run_id).owner, record.run_id)
        self._check_quota(identity, record.run_id)
        record, created = self.controller.submit_record(record)
        audit.info("submit", extra={"caller": identity.name, "run_id": record.run_id, "new_run": created,
                                    "peer": context.peer()})
        return controller_pb2.SubmitRunResponse(run=self._run(record, identity), created=created)

    def _check_quota(self, identity: Identity, run_id: str) -> None:
        limit = self.platform.limits.max_active_runs_per_owner
        active = [r.run_id for r in self.controller.list()
                  if r.owner == identity.name and not r.state.final and r.run_id != run_id]
        if len(active) >= limit:
            raise QuotaExceeded(f"{identity.name} has {len(active)} unfinished runs ({', '.join(active[:5])}); "
                                f"the limit is {limit}: wait for one to end or cancel one")

    def GetRun(self, request: controller_pb2.GetRunRequest,
               context: grpc.ServicerContext) -> controller_pb2.GetRunResponse:
        identity, record = self._owned(_run_id(request), context)
        return controller_pb2.GetRunResponse(run=self._run(record, identity))

    def WatchRun(self, request: controller_pb2.WatchRunRequest,
                 context: grpc.ServicerContext) -> Iterator[controller_pb2.WatchRunResponse]:
        identity, _ = self._owned(_run_id(request), context)
        for event in self.controller.watch(_run_id(request), alive=context.is_active):
            message = convert.run_event(event)
            if not identity.admin:
                message.message = self.redact(message.message)
            yield controller_pb2.WatchRunResponse(event=message)

    def CancelRun(self, request: controller_pb2.CancelRunRequest,
                  context: grpc.ServicerContext) -> controller_pb2.CancelRunResponse:
        identity, _ = self._owned(_run_id(request), context)
        record = self.controller.cancel(_run_id(request))
        audit.info("cancel", extra={"caller": identity.name, "run_id": record.run_id, "peer": context.peer()})
        return controller_pb2.CancelRunResponse(run=self._run(record, identity))

    def ListRuns(self, request: controller_pb2.ListRunsRequest,
                 context: grpc.ServicerContext) -> controller_pb2.ListRunsResponse:
        identity = self.guard.identity(context)
        return controller_pb2.ListRunsResponse(runs=[self._run(r, identity, with_spec=False)
                                                     for r in self.controller.list()
                                                     if identity.admin or r.owner == identity.name])


    # ------------------------------------------------------------------ trained personas
    def PublishPersona(self, request: controller_pb2.PublishPersonaRequest,
                       context: grpc.ServicerContext) -> controller_pb2.PublishPersonaResponse:
        identity, _ = self._owned(_run_id(request), context)
        if not request.name:
            raise InvalidInput("set name: the persona's name", where="name")
        persona = publish(self.controller.store, request.run_id, request.name, request.tag or DEFAULT_TAG,
                          owner=identity.name, shared=request.shared, admin=identity.admin)
        audit.info("publish", extra={"caller": identity.name, "run_id": request.run_id, "persona": persona.ref,
                                     "record_id": persona.record_id, "peer": context.peer()})
        return controller_pb2.PublishPersonaResponse(persona=convert.trained_persona(persona))

    def ListTrainedPersonas(self, request: controller_pb2.ListTrainedPersonasRequest,
                            context: grpc.ServicerContext) -> controller_pb2.ListTrainedPersonasResponse:
        identity = self.guard.identity(context)
        return controller_pb2.ListTrainedPersonasResponse(
            personas=[convert.trained_persona(p) for p in visible_personas(self.controller.store, identity)])

    def GetTrainedPersona(self, request: controller_pb2.GetTrainedPersonaRequest,
                          context: grpc.ServicerContext) -> controller_pb2.GetTrainedPersonaResponse:
        identity = self.guard.identity(context)
        persona = get_persona(self.controller.store, request.ref)
        check_visible(identity, persona)
        return controller_pb2.GetTrainedPersonaResponse(persona=convert.trained_persona(persona))


def make_executor(options: ServeOptions) -> Executor:
    """The executor named by `options.executor`."""
    if options.executor == "services":
        from character_services.controller.services_executor import ServicesExecutor

        return ServicesExecutor({name: options.address(name) for name in WORKERS}, transport=options.transport())
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


def controller_guard(options: ServeOptions, platform: PlatformConfig) -> Guard:
    """Bearer tokens from the operator's token file; without one only an --insecure controller
    starts, and then every caller is an anonymous admin."""
    streams = platform.limits.max_streams_per_caller
    path = options.tokens_file or os.environ.get(TOKENS_ENV)
    if path:
        return Guard(Authenticator.from_file(path), max_streams_per_caller=streams)
    if not options.insecure:
        raise InvalidInput(f"the controller needs a token file: --tokens-file or ${TOKENS_ENV} (`oct up` makes one "
                           "under $OCT_HOME/auth), or --insecure for an unauthenticated controller", where="tokens")
    logging.getLogger("character_services").warning("no token file: every caller is an anonymous admin")
    return Guard(anonymous=True, max_streams_per_caller=streams)


def build(options: ServeOptions) -> Server:
    platform = options.platform_config()
    guard = controller_guard(options, platform)
    executor = make_executor(options)
    config = options.controller or ControllerConfig()
    if config.stage_timeout_s is None:  # the operator's default stage deadline
        config = config.model_copy(update={"stage_timeout_s": platform.limits.stage_timeout_s})
    store = open_store(options.store)
    controller = Controller(store, executor, config, executor_name=options.executor,
                            on_succeeded=functools.partial(publish_as_specified, store))
    servicer = ControllerServicer(controller, guard, platform)

    def stop() -> None:
        controller.stop()  # running stages go on; the next controller adopts them
        close = getattr(executor, "close", None)
        if close is not None:
            close()

    def add(server: grpc.Server) -> None:
        controller_pb2_grpc.add_ControllerServiceServicer_to_server(servicer, server)

    return Server(INFO, add, host=options.host, port=options.port, metrics_port=options.metrics_port,
                  max_request_bytes=options.max_request_bytes, on_start=controller.start, on_stop=stop,
                  transport=options.transport(), guard=guard, require_client_cert=False,
                  health_port=options.health_port, max_concurrent_rpcs=platform.limits.max_concurrent_rpcs,
                  redact=Redactor(options.store), handler_timeout_s=platform.limits.rpc_timeout_s)
