"""The persona server's Prometheus metrics, on a registry of its own (served on its health
port at /metrics). Labels are bounded: no model names (any run id could be one)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class ServingMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("oct_serving_requests_total", "Requests answered, by endpoint and HTTP status.",
                                ["endpoint", "status"], registry=self.registry)
        self.tokens = Counter("oct_serving_tokens_total", "Tokens read (prompt) and written (completion).",
                              ["kind"], registry=self.registry)
        self.first_token = Histogram("oct_serving_time_to_first_token_seconds",
                                     "From a request's arrival to its first piece of text (streamed or not).",
                                     registry=self.registry,
                                     buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120))
        self.loads = Counter("oct_serving_adapter_loads_total", "Personas loaded from the store (adapters or "
                             "merged weights).", registry=self.registry)
        self.evictions = Counter("oct_serving_adapter_evictions_total", "Personas dropped from memory by the LRU.",
                                 registry=self.registry)
        self.in_flight = Gauge("oct_serving_requests_in_flight", "Requests being answered.", registry=self.registry)

    def loaded(self, _name: str) -> None:
        self.loads.inc()

    def evicted(self, _name: str) -> None:
        self.evictions.inc()
