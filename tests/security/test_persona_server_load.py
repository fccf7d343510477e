"""The persona server (`oct serve-personas`) under hostile load, and told to stop with a request in
flight: over real HTTPS on 127.0.0.1 with the platform's default limits (1 MB bodies, 256
messages, 4096 new tokens). No model is loaded: every hostile request is refused before one is."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from concurrent import futures

import pytest
from character.platform import PlatformConfig
from character.serving.server import PersonaServer, ServerOptions, build_server
from character.store import open_store

from tests.fixtures.security import Credentials

MESSAGE = {"role": "user", "content": "hi"}


def _chat(**fields: object) -> bytes:
    return json.dumps({"model": "tiny", "messages": [MESSAGE], **fields}).encode()


HOSTILE: dict[str, tuple[str, bytes, int]] = {
    # name: (user, body, the status it must get)
    "100,000-deep JSON nesting": ("bob", _chat()[:-1] + b', "user": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400),
    "a 3 MB body": ("bob", _chat(user="x" * 3_000_000), 400),
    "duplicate keys": ("bob", b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "model": "x"}', 400),
    "max_tokens of 10^12": ("bob", _chat(max_tokens=10**12), 400),
    "5,000 messages": ("bob", json.dumps({"model": "tiny", "messages": [MESSAGE] * 5000}).encode(), 400),
    "200,000 values": ("bob", _chat()[:-1] + b', "user": [' + b",".join([b"1"] * 200_000) + b"]}", 400),
    "a 900,000-character prompt": ("bob", _chat(messages=[{"role": "user", "content": "x" * 900_000}]), 400),
    "a bad token": ("nobody", _chat(), 401),
}


@pytest.fixture(scope="module")
def persona_server(credentials: Credentials, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PersonaServer]:
    store = open_store(str(tmp_path_factory.mktemp("store")))
    server = build_server(
        store,
        ServerOptions(port=0, health_port=0),
        credentials.tls_dir,
        credentials.tokens_file,
        PlatformConfig(),
        device="cpu",
    ).start()
    yield server
    server.stop()


def _ask(
    connection: http.client.HTTPSConnection,
    credentials: Credentials,
    user: str,
    method: str,
    path: str,
    body: bytes | None = None,
) -> tuple[int, str]:
    """One request on a kept-alive connection: its status and body."""
    token = credentials.tokens.get(user, "not-a-token")
    connection.request(
        method, path, body=body, headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    )
    answer = connection.getresponse()
    return answer.status, answer.read().decode()


def _connect(server: PersonaServer, credentials: Credentials) -> http.client.HTTPSConnection:
    trust = ssl.create_default_context(cafile=str(credentials.tls_dir / "ca.crt"))
    return http.client.HTTPSConnection("localhost", server.port, context=trust, timeout=30)


@pytest.mark.attack("8 concurrent hostile requests starve the persona server")
def test_hostile_requests_are_refused_fast_while_the_model_list_answers(
    persona_server: PersonaServer, credentials: Credentials
) -> None:
    normal = _connect(persona_server, credentials)
    assert _ask(normal, credentials, "alice", "GET", "/v1/models")[0] == 200  # connected and warm
    done = threading.Event()
    slowest: list[float] = []

    def normal_calls() -> None:
        while not done.is_set():
            started = time.monotonic()
            assert _ask(normal, credentials, "alice", "GET", "/v1/models")[0] == 200
            slowest.append(time.monotonic() - started)

    def send(name: str) -> tuple[int, float, str]:
        user, body, _ = HOSTILE[name]
        hostile = _connect(persona_server, credentials)
        try:
            started = time.monotonic()
            status, text = _ask(hostile, credentials, user, "POST", "/v1/chat/completions", body)
            return status, time.monotonic() - started, text
        finally:
            hostile.close()

    watcher = threading.Thread(target=normal_calls)
    watcher.start()
    try:
        with futures.ThreadPoolExecutor(len(HOSTILE)) as pool:
            outcomes = dict(zip(HOSTILE, pool.map(send, HOSTILE), strict=True))
    finally:
        done.set()
        watcher.join()
    assert {name: status for name, (status, _, _) in outcomes.items()} == {
        name: status for name, (_, _, status) in HOSTILE.items()
    }, outcomes
    assert max(seconds for _, seconds, _ in outcomes.values()) < 5.0, outcomes
    assert all(len(text) < 4096 for _, _, text in outcomes.values())  # refusals stay short
    assert "duplicate key 'model'" in outcomes["duplicate keys"][2]
    assert slowest and max(slowest) < 1.0, f"slowest model list {max(slowest):.2f} s of {len(slowest)}"
    started_cpu, started = time.process_time(), time.monotonic()
    time.sleep(1.0)  # the server (this process) is idle once the refusals are sent
    assert (time.process_time() - started_cpu) / (time.monotonic() - started) < 0.2


@pytest.mark.attack("a request in flight keeps the persona server from stopping")
def test_stop_returns_within_the_grace_period_while_a_request_is_in_flight(
    credentials: Credentials, tmp_path_factory: pytest.TempPathFactory
) -> None:
    store = open_store(str(tmp_path_factory.mktemp("store")))
    server = build_server(
        store,
        ServerOptions(port=0, health_port=0, grace_s=1.0),
        credentials.tls_dir,
        credentials.tokens_file,
        PlatformConfig(),
        device="cpu",
    ).start()
    trust = ssl.create_default_context(cafile=str(credentials.tls_dir / "ca.crt"))
    raw = trust.wrap_socket(socket.create_connection(("127.0.0.1", server.port)), server_hostname="localhost")
    try:
        head = (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n"
            f"Authorization: Bearer {credentials.tokens['alice']}\r\nContent-Type: application/json\r\n\r\n"
        )
        raw.sendall(head.encode() + b'{"model": "tiny", ')  # and the rest of the body never comes
        time.sleep(0.5)  # the request is in: its handler waits for the body
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 3.0
        raw.settimeout(5)
        assert raw.recv(4096) == b""  # its connection was closed
    finally:
        raw.close()
