"""Whole runs through the five services on the tiny model, against a real S3 server:

- a cancelled run stops the worker task that was running (tiny model);
- a run goes to completion, surviving a controller killed and restarted mid-run without
  any stage running twice (SmolLM2: the tiny random model never ends a turn, so
  distillation would keep no pair);
- the same run in-process (`oct run`: the same controller with the inline executor, local
  store) gives the same stage keys and the same artifact contents.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from character.controller.executor import StageState
from character.controller.runs import RunRecord, load_run
from character.store import open_store
from character.store.base import Store

from character_services.common.catalog import SERVICES, WORKERS
from character_services.common.server import ServeOptions
from character_services.common.task_rpc import TaskClient
from character_services.controller.client import ControllerClient
from character_services.controller.server import build as build_controller
from tests.integration.services.conftest import Cluster, registered, start_cluster, wait_for

pytestmark = pytest.mark.slow

QUICK_RUN = Path(__file__).with_name("quick-run.yaml")
RUN_TIMEOUT_S = 1800


def spec_yaml(model: Path, seed: int | None = None, **stages: dict[str, Any]) -> str:
    """The quick run (quick-run.yaml) on `model`, with another seed or stage settings if given."""
    doc = yaml.safe_load(QUICK_RUN.read_text())
    doc["model"] = registered(model)  # a remote spec names models (the conftest registers the prepared ones)
    if seed is not None:
        doc["seed"] = seed
    doc["stages"].update(stages)
    return yaml.safe_dump(doc, sort_keys=False)


@pytest.fixture(scope="module")
def s3_cluster(s3_server: Any, tiny_model: Path, smollm2_model: Path,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The five services over a fresh S3 bucket, with their own OCT_HOME (the models are
    prepared before, in the shared one)."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OCT_S3_ENDPOINT", s3_server.endpoint)
        env.setenv("OCT_S3_ACCESS_KEY", s3_server.access_key)
        env.setenv("OCT_S3_SECRET_KEY", s3_server.secret_key)
        env.setenv("OCT_S3_SECURE", "false")
        env.setenv("OCT_HOME", str(tmp_path_factory.mktemp("home-services")))
        running = start_cluster(f"s3://oct-services-{uuid.uuid4().hex[:12]}/runs")
        try:
            yield running
        finally:
            running.stop()


def test_cancelling_a_run_stops_its_running_task(s3_cluster: Cluster, tiny_model: Path) -> None:
    store = open_store(s3_cluster.store)
    client = ControllerClient(s3_cluster.address("controller"))
    # A prompts stage that keeps generating for many rounds (the random model never reaches
    # its target), so that it is surely still running when cancelled.
    slow = {"prompts": {"target_per_trait": 50, "max_rounds": 200, "max_new_tokens": 16}}
    run, _ = client.submit(spec_yaml(tiny_model, **slow))

    def running_prompts() -> str | None:
        stage = _record(store, run.run_id).stages["prompts"]
        return stage.handle if stage.state is StageState.RUNNING and stage.handle else None

    handle = wait_for(running_prompts, 120, "the prompts stage to run")
    service, _, task_id = handle.partition("/")
    tasks = TaskClient(s3_cluster.channel(service), SERVICES[service], s3_cluster.address(service))
    wait_for(lambda: tasks.get(task_id).progress is not None, 120, "progress from the task")
    client.cancel(run.run_id)
    final = wait_for(lambda: (t := tasks.get(task_id)).state.final and t, 60, "the task to stop")
    assert final.state is StageState.CANCELLED
    assert final.progress is not None and final.progress.done < (final.progress.total or 10**9)
    record = wait_for(lambda: (r := _record(store, run.run_id)).state.final and r, 30, "the run to end")
    assert record.state is StageState.CANCELLED
    assert all(s.attempts == 0 for n, s in record.stages.items() if n != "prompts")


@dataclass
class ServicesRun:
    run_id: str
    before_kill: RunRecord
    final: RunRecord
    store: Store
    cluster: Cluster
    seconds: float


def _record(store: Store, run_id: str) -> RunRecord:
    return load_run(store, run_id)


@pytest.fixture(scope="module")
def services_run(s3_cluster: Cluster, smollm2_model: Path) -> ServicesRun:
    """A run submitted to the controller, which is stopped once a stage has finished and
    another is running, then replaced by a new controller on the same store."""
    started = time.monotonic()
    store = open_store(s3_cluster.store)
    run, created = ControllerClient(s3_cluster.address("controller")).submit(spec_yaml(smollm2_model))
    assert created

    def mid_run() -> RunRecord | None:
        record = _record(store, run.run_id)
        states = [s.state for s in record.stages.values()]
        return record if StageState.SUCCEEDED in states and StageState.RUNNING in states else None

    before = wait_for(mid_run, RUN_TIMEOUT_S, "a finished stage and a running one", every=0.1)
    s3_cluster.servers["controller"].stop(0)
    options = ServeOptions(store=s3_cluster.store, port=0,
                           addresses={w: s3_cluster.address(w) for w in WORKERS})
    s3_cluster.servers["controller"] = build_controller(options).start()
    client = ControllerClient(s3_cluster.address("controller"))
    events = list(client.watch(run.run_id))
    assert events[-1].WhichOneof("event") == "run_state"
    return ServicesRun(run.run_id, before, _record(store, run.run_id), store, s3_cluster,
                       time.monotonic() - started)


@pytest.mark.smollm2
def test_a_run_through_the_services_completes(services_run: ServicesRun) -> None:
    final = services_run.final
    assert final.state is StageState.SUCCEEDED, final.message
    assert all(s.state is StageState.SUCCEEDED and not s.cached for s in final.stages.values())
    assert final.stages["eval"].artifacts, "the eval stage stored its results"
    print(f"services run: {services_run.seconds:.0f} s")


@pytest.mark.smollm2
def test_a_restarted_controller_runs_no_stage_twice(services_run: ServicesRun) -> None:
    before, final = services_run.before_kill, services_run.final
    assert [s.attempts for s in final.stages.values()] == [1] * len(final.stages), final.stages
    for name, stage in before.stages.items():
        if stage.state is StageState.SUCCEEDED:
            assert final.stages[name].finished_at == stage.finished_at
            assert final.stages[name].started_at == stage.started_at
    # Each worker ran each of its stages once: the task running at the kill was adopted.
    for name in WORKERS:
        tasks = services_run.cluster.servers[name].tasks
        assert tasks is not None
        ran = sorted((t.job.stage, t.state.value) for t in tasks.tasks(services_run.run_id))
        assert ran == sorted((stage, "succeeded") for stage in SERVICES[name].stages), ran


@pytest.mark.smollm2
def test_the_inline_path_gives_the_same_artifacts(services_run: ServicesRun, smollm2_model: Path,
                                                  tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from character.cli.main import app
    from typer.testing import CliRunner

    monkeypatch.setenv("OCT_HOME", str(tmp_path / "home-inline"))
    spec = tmp_path / "spec.yaml"
    spec.write_text(spec_yaml(smollm2_model))
    store = tmp_path / "store"
    result = CliRunner().invoke(app, ["run", "--spec", str(spec), "--store", str(store)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    inline = load_run(open_store(str(store)), services_run.run_id)  # `oct run` keeps the same record
    assert inline.state is StageState.SUCCEEDED and inline.executor == "inline"
    services = services_run.final
    assert {n: s.key for n, s in inline.stages.items()} == {n: s.key for n, s in services.stages.items()}
    differ = {}
    for name, stage in inline.stages.items():
        for label, ref in stage.artifacts.items():
            other = services.stages[name].artifacts[label]
            if ref.content_digest != other.content_digest:
                differ[f"{name}.{label}"] = (ref.kind, ref.content_digest[:12], other.content_digest[:12])
    # The evaluation's results (and the report made from them) record wall-clock timings, so
    # they differ between any two runs; everything else in them must be equal.
    assert set(differ) <= {"eval.eval", "eval.report"}, f"differ (kind, inline, services): {differ}"
    results = [json.loads((s.materialize("eval", r.stages["eval"].artifacts["eval"].key) / "results.json")
                          .read_text()) for s, r in ((open_store(str(store)), inline),
                                                     (services_run.store, services))]
    for doc in results:
        assert doc.pop("timings")
    assert results[0] == results[1]
