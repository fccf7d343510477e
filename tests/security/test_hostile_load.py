"""The controller under hostile load, and servers told to stop while a handler is stuck: over
real gRPC on 127.0.0.1 (the controller with TLS and tokens, as deployed)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from character.controller.executor import StageState
from character.controller.runs import RunRecord, StageRecord, save_run
from character.platform import PlatformConfig
from character.store import open_store

from character_services.api.character.v1 import controller_pb2, controller_pb2_grpc
from character_services.common.server import ServeOptions, Server
from character_services.controller.server import build
from tests.fixtures.security import Credentials
from tests.fixtures.stuck_server import call_stuck, stuck_server
from tests.security.corpus import ATTACKS

REPO = Path(__file__).resolve().parents[2]
HOSTILE = ["alias bomb (9 lines, 9^9 nodes)", "billion laughs", "20,000 inline traits", "5,000-deep flow nesting",
           "duplicate seed", "duplicate stage knob", "NUL byte", "!!python/object tag"]


@pytest.fixture(scope="module")
def controller_server(secure_env: Credentials, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The controller alone (the inline executor: no stage runs here), with one finished run."""
    store = str(tmp_path_factory.mktemp("store"))
    at = datetime.now(UTC)
    save_run(open_store(store), RunRecord(run_id="run-done", spec={"constitution": "sarcasm"}, owner="alice",
                                          created_at=at, updated_at=at, state=StageState.SUCCEEDED,
                                          stages={"prompts": StageRecord(key="k", state=StageState.SUCCEEDED,
                                                                         attempts=1)}))
    server = build(ServeOptions(store=store, port=0, executor="inline", platform=PlatformConfig())).start()
    yield server
    server.stop(0)


@pytest.mark.attack("8 concurrent hostile SubmitRuns starve the controller")
def test_hostile_submissions_are_refused_fast_while_normal_calls_answer(controller_server: Server,
                                                                        credentials: Credentials) -> None:
    hostile = controller_pb2_grpc.ControllerServiceStub(credentials.channel(controller_server.address, "bob"))
    normal = controller_pb2_grpc.ControllerServiceStub(credentials.channel(controller_server.address, "alice"))
    normal.ListRuns(controller_pb2.ListRunsRequest(), timeout=10)  # connected and warm
    done = threading.Event()
    slowest: list[float] = []

    def normal_calls() -> None:
        while not done.is_set():
            for call, request in ((normal.ListRuns, controller_pb2.ListRunsRequest()),
                                  (normal.GetRun, controller_pb2.GetRunRequest(run_id="run-done"))):
                started = time.monotonic()
                call(request, timeout=5)
                slowest.append(time.monotonic() - started)

    def submit(name: str) -> tuple[grpc.StatusCode, float]:
        started = time.monotonic()
        try:
            hostile.SubmitRun(controller_pb2.SubmitRunRequest(spec_yaml=ATTACKS[name]), timeout=30)
        except grpc.RpcError as err:
            return err.code(), time.monotonic() - started
        return grpc.StatusCode.OK, time.monotonic() - started

    watcher = threading.Thread(target=normal_calls)
    watcher.start()
    try:
        with futures.ThreadPoolExecutor(len(HOSTILE)) as pool:
            outcomes = dict(zip(HOSTILE, pool.map(submit, HOSTILE), strict=True))
    finally:
        done.set()
        watcher.join()
    assert {name: code for name, (code, _) in outcomes.items()} == dict.fromkeys(HOSTILE,
                                                                                grpc.StatusCode.INVALID_ARGUMENT)
    assert max(seconds for _, seconds in outcomes.values()) < 5.0, outcomes
    assert slowest and max(slowest) < 1.0, f"slowest normal call {max(slowest):.2f} s of {len(slowest)}"
    started_cpu, started = time.process_time(), time.monotonic()
    time.sleep(1.0)  # the controller (this process) is idle once the refusals are sent
    assert (time.process_time() - started_cpu) / (time.monotonic() - started) < 0.2


@pytest.mark.attack("a handler that never returns holds its caller")
def test_a_stuck_handler_answers_deadline_exceeded_at_the_services_cap() -> None:
    release = threading.Event()
    server = stuck_server(release, handler_timeout_s=0.5)
    try:
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as caught:
            call_stuck(server.address).result()  # no deadline of the caller's own
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - started < 3.0
    finally:
        release.set()
        server.stop(0)


@pytest.mark.attack("a stuck handler keeps a server from stopping")
def test_stop_returns_within_the_grace_period_while_a_handler_is_stuck() -> None:
    release = threading.Event()
    server = stuck_server(release)
    try:
        pending = call_stuck(server.address)
        time.sleep(0.5)  # the handler is in
        started = time.monotonic()
        server.stop(1.0)
        assert time.monotonic() - started < 3.0
        assert pending.exception(timeout=5) is not None  # the stuck call was cancelled, not answered
    finally:
        release.set()


@pytest.mark.attack("a stuck handler keeps the process alive after SIGTERM")
def test_sigterm_ends_the_process_within_the_grace_period_while_a_handler_is_stuck() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen([sys.executable, "-m", "tests.fixtures.stuck_server", "1"], cwd=REPO, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert process.stdout is not None
        pending: Any = call_stuck(process.stdout.readline().strip())
        time.sleep(0.5)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)  # the signal loop wakes within 1 s, then the 1 s grace
        assert time.monotonic() - started < 5.0
        assert pending.exception(timeout=5) is not None
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
