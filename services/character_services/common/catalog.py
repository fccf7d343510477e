"""The five services: names, default ports, the stages each worker runs, and where to find
them (`OCT_<SERVICE>_ADDRESS`, as the Helm chart's ConfigMap sets it)."""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from types import ModuleType

from character.errors import InvalidInput

PACKAGE = "character.v1"
METRICS_PORT_OFFSET = 1000
"""Prometheus metrics are served on the gRPC port + this."""


@dataclass(frozen=True)
class ServiceInfo:
    name: str
    """Short name: the `oct serve` argument and the Kubernetes Service suffix."""
    proto: str
    """The gRPC service name inside package character.v1."""
    port: int
    """Default gRPC port."""
    stages: tuple[str, ...] = ()
    """The pipeline stages this worker runs as tasks (none for the controller)."""

    @property
    def full_name(self) -> str:
        return f"{PACKAGE}.{self.proto}"

    @property
    def env(self) -> str:
        return f"OCT_{self.name.upper()}_ADDRESS"

    def pb2(self) -> ModuleType:
        return importlib.import_module(f"character_services.api.character.v1.{self.name}_pb2")

    def pb2_grpc(self) -> ModuleType:
        return importlib.import_module(f"character_services.api.character.v1.{self.name}_pb2_grpc")

    def address(self, host: str = "127.0.0.1") -> str:
        """Where to reach it: $OCT_<NAME>_ADDRESS, else host:default port."""
        return os.environ.get(self.env) or f"{host}:{self.port}"


SERVICES: dict[str, ServiceInfo] = {
    s.name: s
    for s in (
        ServiceInfo("controller", "ControllerService", 50050),
        ServiceInfo("generation", "GenerationService", 50051, ("prompts", "distill")),
        ServiceInfo("introspection", "IntrospectionService", 50052, ("introspect",)),
        ServiceInfo("training", "TrainingService", 50053, ("dpo", "sft", "merge")),
        ServiceInfo("evaluation", "EvaluationService", 50054, ("eval",)),
    )
}
WORKERS: tuple[str, ...] = ("generation", "introspection", "training", "evaluation")

STAGE_SERVICE: dict[str, str] = {stage: s.name for s in SERVICES.values() for stage in s.stages}
"""Which worker runs each stage."""


def service(name: str) -> ServiceInfo:
    if name not in SERVICES:
        raise InvalidInput(f"unknown service {name!r}; services are: {', '.join(SERVICES)}", where="SERVICE")
    return SERVICES[name]
