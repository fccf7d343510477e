"""Build and run one gRPC service the way every service runs: health checking
(grpc.health.v1, SERVING under "" and the service's full name), reflection, a JSON log line
per RPC, Prometheus metrics on port + 1000, request size limits, library errors mapped to
status codes, and a graceful stop (SIGTERM: stop taking work, let running tasks finish
within a grace period, cancel what is left).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from character.controller.controller import ControllerConfig
from character.controller.tasks import StageJobs, TaskManager
from character.errors import CharacterError, InvalidInput
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.common.catalog import METRICS_PORT_OFFSET, ServiceInfo, service
from services.common.errors import status_code
from services.common.metrics import Metrics

log = logging.getLogger("services.rpc")

DEFAULT_MAX_REQUEST_BYTES = 32 * 1024 * 1024
"""Largest request a service takes; bigger ones get INVALID_ARGUMENT saying so. (gRPC itself
refuses messages over twice this with RESOURCE_EXHAUSTED before they reach the service.)"""
DEFAULT_GRACE_S = 30.0


@dataclass
class ServeOptions:
    """What `oct serve` and `oct up` pass to each service's `build`."""

    store: str
    """The service's default store (the controller's only one): a folder or s3://bucket/prefix."""
    host: str = "127.0.0.1"
    port: int | None = None
    """gRPC port; None: the service's default; 0: a free one."""
    metrics_port: int | None = None
    """None: port + 1000 (a free one when port is 0)."""
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_tasks: int = 1
    """Workers: tasks run at once (more wait as pending)."""
    addresses: dict[str, str] = field(default_factory=dict)
    """Other services' host:port by name; missing ones come from $OCT_<NAME>_ADDRESS or defaults."""
    executor: str = "services"
    """Controller: services, inline or kubernetes."""
    executor_config: str | None = None
    """Controller with the kubernetes executor: its settings file (KubernetesExecutorConfig)."""
    controller: ControllerConfig | None = None
    """Controller: retry and polling settings (None: defaults)."""

    def address(self, name: str) -> str:
        return self.addresses.get(name) or service(name).address()


class _Interceptor(grpc.ServerInterceptor):
    """Per RPC: size check, error mapping, one log line, metrics."""

    def __init__(self, metrics: Metrics, max_request_bytes: int):
        self.metrics = metrics
        self.max_request_bytes = max_request_bytes

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = continuation(details)
        if handler is None or handler.request_streaming:  # reflection's bidi stream: passed through
            return handler
        full: str = details.method
        method = full.rsplit("/", 1)[-1]
        quiet = full.startswith("/grpc.")  # health probes and reflection: metrics only, no log lines

        def finish(started: float, context: grpc.ServicerContext, code: str | None) -> None:
            code = code or (context.code() or grpc.StatusCode.OK).name  # type: ignore[attr-defined]
            seconds = time.monotonic() - started
            self.metrics.rpc(method, code, seconds)
            if not quiet:
                log.log(logging.INFO if code == "OK" else logging.WARNING, "rpc",
                        extra={"method": full, "code": code, "ms": round(seconds * 1000, 1),
                               "peer": context.peer()})

        def fail(err: Exception, context: grpc.ServicerContext) -> None:
            if not isinstance(err, CharacterError) and context.code() is not None:  # type: ignore[attr-defined]
                raise err  # the handler aborted with its own status
            code = status_code(err)
            if code is grpc.StatusCode.INTERNAL:
                log.exception("rpc crashed", extra={"method": full})
                context.abort(code, f"internal error: {type(err).__name__}: {err}")
            context.abort(code, str(err))

        if handler.unary_unary:
            inner_unary = handler.unary_unary

            def unary(request: Any, context: grpc.ServicerContext) -> Any:
                started, code = time.monotonic(), None
                try:
                    self._check_size(request)
                    return inner_unary(request, context)
                except Exception as err:
                    code = status_code(err).name if isinstance(err, CharacterError) else None
                    fail(err, context)
                finally:
                    finish(started, context, code)

            return grpc.unary_unary_rpc_method_handler(
                unary, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)

        inner_stream = handler.unary_stream

        def stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            started, code = time.monotonic(), None
            try:
                self._check_size(request)
                yield from inner_stream(request, context)
            except GeneratorExit:
                code = "CANCELLED"
                raise
            except Exception as err:
                code = status_code(err).name if isinstance(err, CharacterError) else None
                fail(err, context)
            finally:
                finish(started, context, code)

        return grpc.unary_stream_rpc_method_handler(
            stream, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)

    def _check_size(self, request: Any) -> None:
        size = request.ByteSize()
        if size > self.max_request_bytes:
            raise InvalidInput(
                f"the request is {size} bytes, over this service's limit of {self.max_request_bytes} "
                "bytes: send it in smaller parts", where="request")


class Server:
    """One gRPC service in this process."""

    def __init__(
        self,
        info: ServiceInfo,
        add: Callable[[grpc.Server], None],
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        metrics_port: int | None = None,
        tasks: TaskManager | None = None,
        metrics: Metrics | None = None,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        max_workers: int = 32,
        on_start: Callable[[], None] | None = None,
        on_stop: Callable[[], None] | None = None,
    ):
        """`add(server)` registers the servicer. Port 0 picks a free port; the metrics port
        defaults to port + 1000 (a free one when port is 0). `on_start` runs once the server
        listens, `on_stop` first thing when it stops."""
        self.info = info
        self.host = host
        self.tasks = tasks
        self.metrics = metrics or Metrics(info.name)
        self._on_stop = on_stop
        self._on_start = on_start
        self._requested_port = info.port if port is None else port
        self._metrics_port = metrics_port
        self.health = health.HealthServicer(experimental_non_blocking=True)
        transport_limit = 2 * max_request_bytes
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=info.name),
            interceptors=[_Interceptor(self.metrics, max_request_bytes)],
            options=[
                ("grpc.max_receive_message_length", transport_limit),
                ("grpc.max_send_message_length", transport_limit),
                ("grpc.so_reuseport", 0),  # a second server on a taken port must fail, not share it
            ],
        )
        add(self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (info.full_name, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME),
            self.server,
        )
        if tasks is not None:
            self.metrics.running.labels(info.name).set_function(lambda: len(tasks.running()))
        self.port = 0
        self.metrics_port_bound = 0
        self._stopped = threading.Event()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> Server:
        try:
            self.port = self.server.add_insecure_port(f"{self.host}:{self._requested_port}")
        except RuntimeError as err:
            raise CharacterError(f"{self.info.name}: cannot listen on {self.host}:{self._requested_port} "
                                 f"({err}); is another server using the port?") from None
        metrics_port = self._metrics_port
        if metrics_port is None:
            metrics_port = self.port + METRICS_PORT_OFFSET if self._requested_port else 0
        self.server.start()
        if self._on_start is not None:
            self._on_start()
        self.metrics_port_bound = self.metrics.serve(self.host, metrics_port)
        for name in ("", self.info.full_name):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        logging.getLogger("services").info(
            "serving", extra={"grpc_service": self.info.full_name, "address": self.address,
                              "metrics": f"{self.host}:{self.metrics_port_bound}"})
        return self

    def stop(self, grace: float = DEFAULT_GRACE_S) -> None:
        """Stop taking work (health turns NOT_SERVING), let running tasks finish for up to
        `grace` seconds, cancel the rest, then close the server."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.health.enter_graceful_shutdown()
        if self._on_stop is not None:
            self._on_stop()
        if self.tasks is not None:
            self.tasks.drain(grace)
        self.server.stop(grace=min(grace, 5.0)).wait()
        self.metrics.close()
        logging.getLogger("services").info("stopped", extra={"grpc_service": self.info.full_name})

    def wait(self) -> None:
        self.server.wait_for_termination()


def worker_server(info: ServiceInfo, options: ServeOptions, servicer: Any, jobs: StageJobs) -> Server:
    """A worker service: `servicer` (a `TaskServicer` subclass) runs `jobs` as tasks."""
    metrics = Metrics(info.name)
    tasks = TaskManager(jobs, max_running=options.max_tasks, on_finish=metrics.task_finished)
    servicer.info, servicer.tasks = info, tasks
    add_servicer = getattr(info.pb2_grpc(), f"add_{info.proto}Servicer_to_server")
    return Server(info, lambda server: add_servicer(servicer, server), host=options.host, port=options.port,
                  metrics_port=options.metrics_port, tasks=tasks, metrics=metrics,
                  max_request_bytes=options.max_request_bytes)


def serve_until_signal(servers: Sequence[Server], grace: float = DEFAULT_GRACE_S) -> None:
    """Block until SIGTERM or SIGINT (Ctrl-C), then stop the servers gracefully: the first
    one first (the controller, so that it records nothing about workers going away), then
    the rest together. Call from the main thread, after starting them."""
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        logging.getLogger("services").info("signal: stopping", extra={"signal": signal.Signals(signum).name})
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while not stop.wait(1.0):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if servers:
            servers[0].stop(grace)
        stoppers = [threading.Thread(target=s.stop, args=(grace,)) for s in servers[1:]]
        for thread in stoppers:
            thread.start()
        for thread in stoppers:
            thread.join()
