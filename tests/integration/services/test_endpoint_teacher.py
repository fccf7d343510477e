"""A run whose teacher is an OpenAI-compatible HTTP endpoint goes through the services
executor: the distill stage runs on the generation worker, whose engine pool reaches the
teacher over HTTP (it used to look the endpoint's name up as a local model and fail with
"unknown model")."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from character.controller.executor import StageState
from character.controller.runs import RunRecord, load_run
from character.models.endpoint import Endpoint
from character.models.transformers_engine import TransformersEngine
from character.platform import PlatformConfig
from character.store import open_store

from character_services.controller.client import ControllerClient
from tests.fixtures.openai_server import StandInOpenAIServer
from tests.integration.services.conftest import Cluster, registered, wait_for
from tests.integration.services.test_pipeline import QUICK_RUN

pytestmark = [pytest.mark.slow, pytest.mark.smollm2]

KEY_ENV = "OCT_TEST_TEACHER_KEY"


class CountingServer(StandInOpenAIServer):
    """The tests' stand-in OpenAI-compatible server, counting the generation requests it answers."""

    requests = 0

    def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        self.requests += 1
        return super().complete(body)

    def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        self.requests += 1
        return super().chat(body)


@pytest.fixture(scope="module")
def teacher(smollm2_model: Path) -> Iterator[CountingServer]:
    """SmolLM2 behind HTTP as "smollm2" (the student is SmolLM2 too: a random tiny model never
    ends a turn, so distillation would keep no pair)."""
    server = CountingServer(TransformersEngine(smollm2_model, device="cpu"), "smollm2",
                            "oct-test-" + uuid.uuid4().hex[:12], {})
    thread = threading.Thread(target=server.serve_forever, name="teacher-endpoint", daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def test_a_teacher_behind_an_http_endpoint_distills_through_the_services(
    teacher: CountingServer, smollm2_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from character_services.cli import start_all

    monkeypatch.setenv(KEY_ENV, teacher.api_key)
    endpoint = Endpoint(base_url=f"http://127.0.0.1:{teacher.server_address[1]}/v1", served_model="smollm2",
                        tokenizer=str(smollm2_model), api_key_env=KEY_ENV)
    # Remote specs name the operator's endpoints; the platform config declares this one.
    platform = PlatformConfig(models={registered(smollm2_model): str(smollm2_model)},
                              endpoints={"big-teacher": endpoint})
    store = str(tmp_path / "store")
    cluster = Cluster({s.info.name: s for s in start_all(store, "127.0.0.1", base_port=0, platform=platform)},
                      store)
    try:
        doc = yaml.safe_load(QUICK_RUN.read_text())
        doc |= {"model": registered(smollm2_model), "teacher": "big-teacher"}
        client = ControllerClient(cluster.address("controller"))
        run, _ = client.submit(yaml.safe_dump(doc, sort_keys=False))

        def distill_ended() -> RunRecord | None:
            record = load_run(open_store(store), run.run_id)
            return record if record.stages["distill"].state.final else None

        record = wait_for(distill_ended, 900, "the distill stage to end")
        client.cancel(run.run_id)  # the rest of the run is not what this test is about
    finally:
        cluster.stop()
    distill = record.stages["distill"]
    assert distill.state is StageState.SUCCEEDED, distill.message
    assert distill.attempts == 1 and distill.artifacts["train"].kind == "dataset"
    assert record.spec["endpoints"]["big-teacher"]["base_url"] == endpoint.base_url
    assert teacher.requests > 0, "the teacher's answers did not come from the endpoint"
