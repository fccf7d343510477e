"""Prometheus metrics of one server, on its own registry (so `oct up`, five servers in one
process, still shows each service's numbers on its own port)."""

from __future__ import annotations

from typing import Any

from character.controller.stage_tasks import TaskStatus
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


class Metrics:
    def __init__(self, service: str):
        self.service = service
        self.registry = CollectorRegistry()
        self.requests = Counter("oct_rpc_requests_total", "RPCs handled, by method and status code.",
                                ["service", "method", "code"], registry=self.registry)
        self.errors = Counter("oct_rpc_errors_total", "RPCs that ended with a status other than OK.",
                              ["service", "method", "code"], registry=self.registry)
        self.latency = Histogram("oct_rpc_duration_seconds", "RPC handling time (streams: until they end).",
                                 ["service", "method"], registry=self.registry,
                                 buckets=(0.005, 0.02, 0.1, 0.5, 2, 10, 60, 300, 1800))
        self.tasks = Counter("oct_tasks_total", "Stage tasks finished, by stage and final state.",
                             ["service", "stage", "state"], registry=self.registry)
        self.task_seconds = Histogram("oct_task_duration_seconds", "Stage task run time.",
                                      ["service", "stage"], registry=self.registry,
                                      buckets=(1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600))
        self.running = Gauge("oct_tasks_running", "Stage tasks not yet finished.", ["service"],
                             registry=self.registry)
        self._http: Any = None

    def rpc(self, method: str, code: str, seconds: float) -> None:
        self.requests.labels(self.service, method, code).inc()
        self.latency.labels(self.service, method).observe(seconds)
        if code != "OK":
            self.errors.labels(self.service, method, code).inc()

    def task_finished(self, status: TaskStatus) -> None:
        self.tasks.labels(self.service, status.job.stage, status.state.value).inc()
        if status.started_at and status.finished_at:
            seconds = (status.finished_at - status.started_at).total_seconds()
            self.task_seconds.labels(self.service, status.job.stage).observe(seconds)

    def serve(self, host: str, port: int) -> int:
        """Serve /metrics over HTTP; returns the bound port (`port` 0 picks a free one)."""
        self._http, _ = start_http_server(port, addr=host, registry=self.registry)
        return int(self._http.server_port)

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
