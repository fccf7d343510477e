"""Build and run one gRPC service the way every service runs: health checking
(grpc.health.v1, SERVING under "" and the service's full name), reflection, a JSON log line
per RPC, Prometheus metrics on port + 1000, request size limits, library errors mapped to
status codes, TLS (mutual for workers), caller checks and per-caller stream caps
(`character_services.common.security`), a plaintext health port (port + 2000) that busy RPC
threads cannot starve, and a graceful stop (SIGTERM: stop taking work, let running tasks finish
within a grace period, cancel what is left).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from character.controller.scheduler import ControllerConfig
from character.controller.stage_tasks import StageJobs, TaskManager
from character.daemon_pool import DaemonPool
from character.errors import CharacterError, InvalidInput
from character.platform import PlatformConfig, load_platform_config
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from character_services.common.catalog import METRICS_PORT_OFFSET, ServiceInfo, service
from character_services.common.errors import status_code
from character_services.common.metrics import Metrics
from character_services.common.security import Guard, Redactor, Transport
from character_services.common.threads import handler_deadline, within

log = logging.getLogger("services.rpc")

DEFAULT_MAX_REQUEST_BYTES = 32 * 1024 * 1024
"""Largest request a service takes; bigger ones get INVALID_ARGUMENT saying so. (gRPC itself
refuses messages over twice this with RESOURCE_EXHAUSTED before they reach the service.)"""
DEFAULT_GRACE_S = 30.0
HEALTH_PORT_OFFSET = 2000
"""The plaintext health service (kubelet gRPC probes) listens on the gRPC port + this."""


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
    tls_dir: str | None = None
    """TLS folder (tls.crt, tls.key, ca.crt); None: $OCT_TLS_DIR, else the local CA's (`oct up`)."""
    insecure: bool = False
    """Plaintext gRPC, with a warning: only on a machine nobody else can reach."""
    tokens_file: str | None = None
    """Controller: the operator's token file (character.security.auth); None: $OCT_AUTH_TOKENS."""
    platform: PlatformConfig | None = None
    """Limits, registries, task_clients; None: $OCT_PLATFORM_CONFIG, else the defaults."""
    health_port: int | None = None
    """Plaintext health port; None: port + 2000 (a free one when port is 0)."""

    def transport(self) -> Transport:
        return Transport.resolve(self.tls_dir, self.insecure)

    def platform_config(self) -> PlatformConfig:
        return self.platform or load_platform_config()

    def address(self, name: str) -> str:
        return self.addresses.get(name) or service(name).address()


class _Undecodable:
    """A request whose bytes are not the RPC's message (refused as INVALID_ARGUMENT, where gRPC
    itself would answer INTERNAL)."""

    def __init__(self, error: Exception):
        self.error = error


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def decode(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as err:
            return _Undecodable(err)

    return decode


class _Interceptor(grpc.ServerInterceptor):
    """Per RPC: caller check, size check, error mapping (details redacted), one log line, metrics."""

    def __init__(self, metrics: Metrics, max_request_bytes: int, guard: Guard, redact: Redactor,
                 handlers: DaemonPool, handler_timeout_s: float | None):
        self.metrics = metrics
        self.max_request_bytes = max_request_bytes
        self.guard = guard
        self.redact = redact
        self.handlers = handlers
        self.handler_timeout_s = handler_timeout_s

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
                context.abort(code, f"internal error ({type(err).__name__}); the service's log has the details")
            context.abort(code, self.redact(str(err)))

        def admit(request: Any, context: grpc.ServicerContext) -> Any:
            """The caller's identity, once the request decoded and fits (raises otherwise)."""
            identity = None if quiet else self.guard.check(method, context)
            if isinstance(request, _Undecodable):
                raise InvalidInput(f"the request is not a valid {method} message ({request.error})", where="request")
            self._check_size(request)
            return identity

        if handler.unary_unary:
            inner_unary = handler.unary_unary

            def unary(request: Any, context: grpc.ServicerContext) -> Any:
                started, code = time.monotonic(), None
                try:
                    admit(request, context)
                    seconds = handler_deadline(context.time_remaining(), self.handler_timeout_s)
                    return within(self.handlers, seconds, lambda: inner_unary(request, context), method)
                except Exception as err:
                    code = status_code(err).name if isinstance(err, CharacterError) else None
                    fail(err, context)
                finally:
                    finish(started, context, code)

            return grpc.unary_unary_rpc_method_handler(
                unary, request_deserializer=_tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer)

        inner_stream = handler.unary_stream

        def stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            started, code = time.monotonic(), None
            try:
                identity = admit(request, context)
                if identity is None:
                    yield from inner_stream(request, context)
                else:
                    with self.guard.stream_slot(identity):
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
            stream, request_deserializer=_tolerant(handler.request_deserializer),
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
        max_concurrent_rpcs: int = 256,
        on_start: Callable[[], None] | None = None,
        on_stop: Callable[[], None] | None = None,
        transport: Transport | None = None,
        guard: Guard | None = None,
        require_client_cert: bool = True,
        health_port: int | None = None,
        redact: Redactor | None = None,
        handler_timeout_s: float | None = None,
    ):
        """`add(server)` registers the servicer. Port 0 picks a free port; the metrics port
        defaults to port + 1000 and the health port to port + 2000 (free ones when port is 0).
        `on_start` runs once the server listens, `on_stop` first thing when it stops.
        `transport`: TLS or plaintext (default: `Transport.resolve()`); `require_client_cert`:
        mutual TLS (workers); `guard`: who may call (default: any certificate the CA signed).
        A unary handler runs until the caller's deadline, capped at `handler_timeout_s` (None: no
        cap); past it the caller gets DEADLINE_EXCEEDED. Handler threads are daemons, so that a
        stuck one cannot keep the process alive once the server stopped."""
        self.info = info
        self.host = host
        self.tasks = tasks
        self.metrics = metrics or Metrics(info.name)
        self._on_stop = on_stop
        self._on_start = on_start
        self._requested_port = info.port if port is None else port
        self._metrics_port = metrics_port
        self._health_port = health_port
        self.transport = transport or Transport.resolve()
        self.require_client_cert = require_client_cert
        self.health = health.HealthServicer(experimental_non_blocking=True)
        transport_limit = 2 * max_request_bytes
        # Past maximum_concurrent_rpcs gRPC answers RESOURCE_EXHAUSTED instead of queueing, and
        # every admitted RPC has a thread; probes go to the health server's own threads.
        handlers = DaemonPool(max_concurrent_rpcs, f"{info.name}-handler")
        self.server = grpc.server(
            DaemonPool(max_concurrent_rpcs, info.name),
            interceptors=[_Interceptor(self.metrics, max_request_bytes, guard or Guard(), redact or Redactor(),
                                       handlers, handler_timeout_s)],
            maximum_concurrent_rpcs=max_concurrent_rpcs,
            options=[
                ("grpc.max_receive_message_length", transport_limit),
                ("grpc.max_send_message_length", transport_limit),
                ("grpc.so_reuseport", 0),  # a second server on a taken port must fail, not share it
            ],
        )
        add(self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.health_server = grpc.server(DaemonPool(4, f"{info.name}-health"),
                                         options=[("grpc.so_reuseport", 0)])
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.health_server)
        reflection.enable_server_reflection(  # so that grpcurl can call it too
            (health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), self.health_server)
        reflection.enable_server_reflection(
            (info.full_name, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME),
            self.server,
        )
        if tasks is not None:
            self.metrics.running.labels(info.name).set_function(lambda: len(tasks.running()))
        self.port = 0
        self.metrics_port_bound = 0
        self.health_port_bound = 0
        self._stopped = threading.Event()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> Server:
        try:
            self.port = self.transport.add_port(self.server, f"{self.host}:{self._requested_port}",
                                                self.require_client_cert)
            health_port = self._health_port
            if health_port is None:
                health_port = self.port + HEALTH_PORT_OFFSET if self._requested_port else 0
            self.health_port_bound = self.health_server.add_insecure_port(f"{self.host}:{health_port}")
        except RuntimeError as err:
            raise CharacterError(f"{self.info.name}: cannot listen on {self.host}:{self._requested_port} "
                                 f"or its health port ({err}); is another server using the port?") from None
        metrics_port = self._metrics_port
        if metrics_port is None:
            metrics_port = self.port + METRICS_PORT_OFFSET if self._requested_port else 0
        self.server.start()
        self.health_server.start()
        if self._on_start is not None:
            self._on_start()
        self.metrics_port_bound = self.metrics.serve(self.host, metrics_port)
        for name in ("", self.info.full_name):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        logging.getLogger("services").info(
            "serving", extra={"grpc_service": self.info.full_name, "address": self.address,
                              "metrics": f"{self.host}:{self.metrics_port_bound}",
                              "health": f"{self.host}:{self.health_port_bound}",
                              "tls": "off (--insecure)" if self.transport.insecure else
                              ("mutual" if self.require_client_cert else "on")})
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
        self.health_server.stop(0).wait()
        self.metrics.close()
        logging.getLogger("services").info("stopped", extra={"grpc_service": self.info.full_name})

    def wait(self) -> None:
        self.server.wait_for_termination()


def worker_server(info: ServiceInfo, options: ServeOptions, servicer: Any, jobs: StageJobs) -> Server:
    """A worker service: `servicer` (a `TaskServicer` subclass) runs `jobs` as tasks."""
    metrics = Metrics(info.name)
    tasks = TaskManager(jobs, max_running=options.max_tasks, on_finish=metrics.task_finished)
    servicer.info, servicer.tasks, servicer.default_store = info, tasks, options.store
    add_servicer = getattr(info.pb2_grpc(), f"add_{info.proto}Servicer_to_server")
    platform = options.platform_config()
    # Only platform components get past mutual TLS, and the controller follows every task with a
    # stream of its own: the per-caller cap is for users (at the controller), not for it.
    guard = Guard(task_clients=platform.task_clients, max_streams_per_caller=platform.limits.max_concurrent_rpcs)
    return Server(info, lambda server: add_servicer(servicer, server), host=options.host, port=options.port,
                  metrics_port=options.metrics_port, tasks=tasks, metrics=metrics,
                  max_request_bytes=options.max_request_bytes, transport=options.transport(), guard=guard,
                  require_client_cert=True, health_port=options.health_port,
                  max_concurrent_rpcs=platform.limits.max_concurrent_rpcs, redact=Redactor(options.store))


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
