"""A worker that dies mid-task: the controller notices (the restarted worker no longer knows
the task), records why, and runs the stage again as a new attempt."""

from __future__ import annotations

from pathlib import Path

import pytest
from character.controller.executor import StageState
from character.controller.runs import load_run
from character.controller.scheduler import ControllerConfig
from character.store import open_store

from character_services.common.server import ServeOptions
from character_services.controller.client import ControllerClient
from character_services.controller.server import build as build_controller
from character_services.generation.server import build as build_generation
from tests.integration.services.conftest import wait_for
from tests.integration.services.test_pipeline import spec_yaml

pytestmark = pytest.mark.slow

FAST = ControllerConfig(backoff_base_s=0.2, backoff_max_s=1, unreachable_timeout_s=30, poll_interval_s=0.2)


def test_a_lost_task_is_retried_as_a_new_attempt(tmp_path: Path, tiny_model: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCT_HOME", str(tmp_path / "home"))
    store = str(tmp_path / "store")
    generation = build_generation(ServeOptions(store=store, port=0)).start()
    # Only the generation worker is needed: the run is cancelled during its first stage.
    others = {name: "127.0.0.1:9" for name in ("introspection", "training", "evaluation")}
    addresses = {"generation": generation.address, **others}
    options = ServeOptions(store=store, port=0, controller=FAST, addresses=addresses)
    controller = build_controller(options).start()
    replacement = None
    try:
        client = ControllerClient(controller.address)
        slow = {"prompts": {"target_per_trait": 50, "max_rounds": 200, "max_new_tokens": 16}}
        run, _ = client.submit(spec_yaml(tiny_model, **slow))
        records = open_store(store)
        wait_for(lambda: any(t.progress for t in generation.tasks.tasks(run.run_id)), 120, "a running task")
        # The worker dies without a word: its port closes, its tasks are gone with it.
        generation.server.stop(None)
        for task in generation.tasks.tasks(run.run_id):
            generation.tasks.cancel(task.task_id)  # (only so the orphan stops using the CPU)
        generation.metrics.close()
        replacement = build_generation(ServeOptions(store=store, port=generation.port)).start()
        assert replacement.address == generation.address

        def second_attempt() -> bool:
            stage = load_run(records, run.run_id).stages["prompts"]
            return stage.attempts == 2 and stage.state is StageState.RUNNING

        wait_for(second_attempt, 120, "the second attempt")
        failure = load_run(records, run.run_id).stages["prompts"].last_failure
        assert failure.startswith("attempt 1: the worker no longer knows task generation/"), failure
        started = wait_for(lambda: replacement.tasks.tasks(run.run_id), 60, "the task on the new worker")
        assert [t.job.attempt for t in started] == [2]
        client.cancel(run.run_id)
        final = wait_for(lambda: (r := load_run(records, run.run_id)).state.final and r, 60, "the run to end")
        assert final.state is StageState.CANCELLED
    finally:
        controller.stop(0)
        for server in (replacement, generation):
            if server is not None:
                server.stop(0)
