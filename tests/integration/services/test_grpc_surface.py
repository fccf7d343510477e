"""The services as an outside client sees them, no model runs: reflection and health through
grpcurl, status codes for bad requests (which leave every stored run untouched), metrics,
and `oct serve` stopping cleanly on SIGTERM with JSON logs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from character.controller.executor import StageState
from character.controller.runs import RunRecord, StageRecord, save_run
from character.store import open_store

from character_services.api.character.v1 import (
    common_pb2,
    controller_pb2,
    controller_pb2_grpc,
    generation_pb2,
    generation_pb2_grpc,
    training_pb2,
    training_pb2_grpc,
)
from character_services.common.catalog import SERVICES
from character_services.common.security import Transport
from character_services.common.server import ServeOptions
from character_services.generation.server import build as build_generation
from tests.integration.services.conftest import Cluster, grpcurl, grpcurl_tls, wait_for

GOOD_SPEC = "constitution: sarcasm\nmodel: tiny\nscale: demo\n"


@pytest.fixture(scope="module")
def stored_run(cluster: Cluster) -> str:
    """A finished run already in the store (so the controller leaves it alone)."""
    at = datetime(2025, 1, 1, tzinfo=UTC)
    stages = {n: StageRecord(key=f"k-{n}", state=StageState.SUCCEEDED, attempts=1)
              for n in ("prompts", "eval")}
    record = RunRecord(run_id="run-stored", spec={"constitution": "sarcasm"}, stages=stages,
                       state=StageState.SUCCEEDED, created_at=at, updated_at=at)
    save_run(open_store(cluster.store), record)
    return record.run_id


def _records(store: str) -> dict[str, bytes]:
    root = Path(store) / "records"
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("name", list(SERVICES))
def test_grpcurl_lists_services_and_health_is_serving(cluster: Cluster, name: str) -> None:
    address = cluster.address(name)
    listed = subprocess.run([grpcurl(), *grpcurl_tls(), address, "list"], capture_output=True, text=True,
                            timeout=60, check=True).stdout.split()
    assert set(listed) >= {SERVICES[name].full_name, "grpc.health.v1.Health",
                           "grpc.reflection.v1alpha.ServerReflection"}
    described = subprocess.run([grpcurl(), *grpcurl_tls(), address, "describe", SERVICES[name].full_name],
                               capture_output=True, text=True, timeout=60, check=True).stdout
    assert "rpc " in described
    for service in ("", SERVICES[name].full_name):
        check = subprocess.run([grpcurl(), *grpcurl_tls(), "-d", json.dumps({"service": service}), address,
                                "grpc.health.v1.Health/Check"], capture_output=True, text=True, timeout=60,
                               check=True)
        assert json.loads(check.stdout) == {"status": "SERVING"}


def _task(run_id: str, stage: str, store: str) -> Any:
    return common_pb2.StageTask(run_id=run_id, stage=stage, store_uri=store, attempt=1)


def _bad_requests(cluster: Cluster, run_id: str) -> list[tuple[str, Any, Any, grpc.StatusCode, str]]:
    """(label, call, request, expected code, text the message must contain)."""
    ctl = controller_pb2_grpc.ControllerServiceStub(cluster.channel("controller"))
    gen = generation_pb2_grpc.GenerationServiceStub(cluster.channel("generation"))
    train = training_pb2_grpc.TrainingServiceStub(cluster.channel("training"))
    user = [common_pb2.Conversation(messages=[common_pb2.Message(role="user", content="hi")])]
    submit = controller_pb2.SubmitRunRequest
    invalid, missing = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
    return [
        ("empty spec", ctl.SubmitRun, submit(spec_yaml=""), invalid, "send the run spec"),
        ("broken YAML", ctl.SubmitRun, submit(spec_yaml="constitution: [sarcasm\nmodel: tiny\n"), invalid,
         "spec_yaml:"),
        ("not a mapping", ctl.SubmitRun, submit(spec_yaml="- sarcasm\n"), invalid, "mapping"),
        ("unknown persona", ctl.SubmitRun, submit(spec_yaml="constitution: nobody\n"), invalid,
         "unknown persona 'nobody'"),
        ("unknown key", ctl.SubmitRun, submit(spec_yaml=GOOD_SPEC + "colour: red\n"), invalid, "colour"),
        ("unknown stage", ctl.SubmitRun, submit(spec_yaml=GOOD_SPEC + "stages: {polish: {}}\n"), invalid,
         "unknown stage 'polish'"),
        ("bad override", ctl.SubmitRun, submit(spec_yaml=GOOD_SPEC + "stages: {dpo: {lr: -1}}\n"), invalid,
         "stages.dpo.lr"),
        ("other store", ctl.SubmitRun, submit(spec_yaml=GOOD_SPEC + "store: s3://elsewhere/runs\n"), invalid,
         "keeps runs in"),
        ("oversized spec", ctl.SubmitRun, submit(spec_yaml=GOOD_SPEC + "#" * (1024 * 1024)), invalid,
         "the limit is"),
        ("unknown run", ctl.GetRun, controller_pb2.GetRunRequest(run_id="run-nope"), missing, "run-nope"),
        ("no run id", ctl.GetRun, controller_pb2.GetRunRequest(), invalid, "run_id"),
        ("cancel unknown run", ctl.CancelRun, controller_pb2.CancelRunRequest(run_id="run-nope"), missing,
         "run-nope"),
        ("unknown model", gen.Generate, generation_pb2.GenerateRequest(
            model=common_pb2.ModelRef(name="no-such-model"), conversations=user), invalid, "no-such-model"),
        ("no model", gen.Generate, generation_pb2.GenerateRequest(conversations=user), invalid, "model.name"),
        ("bad role", gen.Generate, generation_pb2.GenerateRequest(
            model=common_pb2.ModelRef(name="tiny"),
            conversations=[common_pb2.Conversation(
                messages=[common_pb2.Message(role="robot", content="x")])]),
         invalid, "conversations[0].messages[0].role"),
        ("bad sampling", gen.Generate, generation_pb2.GenerateRequest(
            model=common_pb2.ModelRef(name="tiny"), conversations=user,
            sampling=common_pb2.SamplingParams(temperature=-1)), invalid, "sampling"),
        ("score count", gen.Score, generation_pb2.ScoreRequest(
            model=common_pb2.ModelRef(name="tiny"), conversations=user, continuations=["a", "b"]), invalid,
         "2 continuations for 1 conversations"),
        ("wrong worker", train.StartTask, training_pb2.TrainingServiceStartTaskRequest(
            task=_task(run_id, "prompts", cluster.store)), invalid, "dpo, sft, merge"),
        ("task for unknown run", train.StartTask, training_pb2.TrainingServiceStartTaskRequest(
            task=_task("run-nope", "dpo", cluster.store)), missing, "run-nope"),
        ("task without run", train.StartTask, training_pb2.TrainingServiceStartTaskRequest(
            task=_task("", "dpo", cluster.store)), invalid, "run_id"),
        ("unknown task", train.GetTask, training_pb2.TrainingServiceGetTaskRequest(task_id="nope"), missing,
         "no task 'nope'"),
        ("cancel unknown task", train.CancelTask,
         training_pb2.TrainingServiceCancelTaskRequest(task_id="nope"), missing, "no task 'nope'"),
    ]


def test_bad_requests_get_the_right_codes_and_leave_runs_untouched(cluster: Cluster, stored_run: str) -> None:
    before = _records(cluster.store)
    assert "runs/run-stored.json" in before
    for label, call, request, code, text in _bad_requests(cluster, stored_run):
        with pytest.raises(grpc.RpcError) as caught:
            call(request, timeout=60)
        assert caught.value.code() == code, f"{label}: {caught.value.code()} {caught.value.details()}"
        assert text in caught.value.details(), f"{label}: {caught.value.details()!r} lacks {text!r}"
    assert _records(cluster.store) == before


def test_watching_an_unknown_run_is_not_found(cluster: Cluster) -> None:
    ctl = controller_pb2_grpc.ControllerServiceStub(cluster.channel("controller"))
    with pytest.raises(grpc.RpcError) as caught:
        list(ctl.WatchRun(controller_pb2.WatchRunRequest(run_id="run-nope"), timeout=30))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_get_and_list_show_a_stored_run(cluster: Cluster, stored_run: str) -> None:
    ctl = controller_pb2_grpc.ControllerServiceStub(cluster.channel("controller"))
    run = ctl.GetRun(controller_pb2.GetRunRequest(run_id=stored_run), timeout=30).run
    assert run.state == common_pb2.RUN_STATE_SUCCEEDED
    assert [s.stage for s in run.stages] == ["prompts", "eval"]
    listed = ctl.ListRuns(controller_pb2.ListRunsRequest(), timeout=30).runs
    assert stored_run in [r.run_id for r in listed] and all(not r.spec_yaml for r in listed)


def test_oversized_requests_are_refused_with_what_to_do(tmp_path: Path) -> None:
    server = build_generation(ServeOptions(store=str(tmp_path), port=0, max_request_bytes=64 * 1024)).start()
    try:
        stub = generation_pb2_grpc.GenerationServiceStub(Transport.resolve().channel(server.address))
        big = [common_pb2.Conversation(messages=[common_pb2.Message(role="user", content="x" * 100_000)])]
        with pytest.raises(grpc.RpcError) as caught:
            stub.Generate(generation_pb2.GenerateRequest(model=common_pb2.ModelRef(name="tiny"),
                                                         conversations=big), timeout=30)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "over this service's limit of 65536 bytes" in caught.value.details()
    finally:
        server.stop(0)


def test_metrics_count_requests_and_errors(cluster: Cluster) -> None:
    ctl = controller_pb2_grpc.ControllerServiceStub(cluster.channel("controller"))
    with pytest.raises(grpc.RpcError):
        ctl.GetRun(controller_pb2.GetRunRequest(run_id="run-metrics"), timeout=30)
    port = cluster.servers["controller"].metrics_port_bound
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30).read().decode()
    assert 'oct_rpc_errors_total{code="NOT_FOUND",method="GetRun",service="controller"}' in text
    assert 'oct_rpc_requests_total{code="NOT_FOUND",method="GetRun",service="controller"}' in text
    assert "oct_rpc_duration_seconds_bucket" in text


def _json_line(proc: subprocess.Popen[str], msg: str) -> dict[str, Any]:
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith("{") and json.loads(line)["msg"] == msg:
            return dict(json.loads(line))
    raise AssertionError(f"no {msg!r} log line")


def test_oct_serve_logs_json_and_stops_on_sigterm(tmp_path: Path) -> None:
    oct = str(Path(sys.executable).with_name("oct"))
    proc = subprocess.Popen([oct, "serve", "training", "--port", "0", "--host", "127.0.0.1", "--store",
                             str(tmp_path / "store"), "--grace", "5"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OCT_HOME": str(tmp_path / "home")})
    try:
        serving = _json_line(proc, "serving")  # says where it listens
        assert serving["service"] == "training" and serving["grpc_service"] == "character.v1.TrainingService"
        check = [grpcurl(), "-plaintext", serving["health"], "grpc.health.v1.Health/Check"]  # the probes' port
        wait_for(lambda: subprocess.run(check, capture_output=True, timeout=30).returncode == 0, 60, "health")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert proc.stderr is not None
        lines = [json.loads(line) for line in proc.stderr.read().splitlines() if line.startswith("{")]
    finally:
        if proc.poll() is None:
            proc.kill()
    messages = [line["msg"] for line in lines]
    assert "signal: stopping" in messages and messages[-1] == "stopped"
    assert all({"ts", "level", "logger", "msg"} <= set(line) for line in lines)


def test_the_cli_submits_with_a_local_constitution_file_and_cancels(cluster: Cluster, tmp_path: Path) -> None:
    import re

    import yaml
    from character.cli.main import app
    from typer.testing import CliRunner

    from character_services.controller.client import ControllerClient

    persona = {"name": "cli-test", "traits": [{"trait": "I am terse.", "questions": ["Hi?", "Why?"]}]}
    (tmp_path / "persona.yaml").write_text(yaml.safe_dump(persona))
    slow = {"prompts": {"target_per_trait": 50, "max_rounds": 200, "max_new_tokens": 8}}
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"constitution": "persona.yaml", "model": "tiny", "stages": slow}))
    address = cluster.address("controller")
    runner = CliRunner()

    submitted = runner.invoke(app, ["submit", str(spec), "--controller", address])
    assert submitted.exit_code == 0, submitted.output
    found = re.search(r"submitted: (run-[0-9a-f]{12})", submitted.output)
    assert found, submitted.output
    run_id = found[1]
    assert ControllerClient(address).get(run_id).persona == "cli-test"  # the file's content went inline

    cancelled = runner.invoke(app, ["cancel", run_id, "--controller", address])
    assert cancelled.exit_code == 0 and run_id in cancelled.output
    wait_for(lambda: ControllerClient(address).get(run_id).state == common_pb2.RUN_STATE_CANCELLED, 60,
             "the run to be cancelled")
    watched = runner.invoke(app, ["watch", run_id, "--controller", address])
    assert watched.exit_code == 1 and "cancelled" in watched.output  # exit 1: the run did not succeed
    status = runner.invoke(app, ["status", run_id, "--controller", address])
    assert status.exit_code == 0 and "prompts" in status.output and "cancelled" in status.output
