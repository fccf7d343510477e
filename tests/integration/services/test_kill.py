"""Faults for real: services run as separate `oct serve` processes (with the tests' TLS and
tokens, from the environment conftest sets) and are killed with SIGKILL mid-stage, with no
chance to say goodbye.

- A generation worker killed while it runs the prompts stage: the controller notices that the
  restarted worker no longer knows the task, records why and runs the stage again as attempt 2.
- The controller killed while a stage runs on a worker: a controller started again on the same
  store adopts the running task (no second attempt) and sees it through to success.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from character.controller.executor import StageState
from character.controller.runs import load_run
from character.store import open_store

from character_services.controller.client import ControllerClient
from tests.fixtures.network import free_service_port
from tests.integration.services.conftest import wait_for
from tests.integration.services.test_pipeline import spec_yaml

pytestmark = pytest.mark.slow

SERVICES = ("controller", "generation", "introspection", "training", "evaluation")


class Services:
    """`oct serve` processes on free ports sharing one store, found through $OCT_<NAME>_ADDRESS."""

    def __init__(self, tmp_path: Path):
        self.store = str(tmp_path / "store")
        self.logs = tmp_path / "logs"
        self.logs.mkdir()
        self.ports = {name: free_service_port() for name in SERVICES}
        self.env = dict(os.environ, OCT_HOME=str(tmp_path / "home"), OMP_NUM_THREADS="1",
                        OMP_WAIT_POLICY="PASSIVE", HF_HUB_OFFLINE="1")
        for name, port in self.ports.items():
            self.env[f"OCT_{name.upper()}_ADDRESS"] = f"127.0.0.1:{port}"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.started = 0

    def address(self, name: str) -> str:
        return f"127.0.0.1:{self.ports[name]}"

    def start(self, name: str) -> subprocess.Popen[bytes]:
        self.started += 1
        oct_ = Path(sys.executable).parent / "oct"
        log = open(self.logs / f"{name}-{self.started}.log", "wb")  # noqa: SIM115 (kept by the process)
        proc = subprocess.Popen(
            [str(oct_), "serve", name, "--host", "127.0.0.1", "--port", str(self.ports[name]),
             "--store", self.store, "--grace", "1", "--log-level", "WARNING"],
            env=self.env, stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        self.procs[name] = proc
        wait_for(lambda: self._listening(name, proc), 120, f"`oct serve {name}` to listen")
        return proc

    def _listening(self, name: str, proc: subprocess.Popen[bytes]) -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"oct serve {name} exited with {proc.returncode}: {self.log_tail(name)}")
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.ports[name])) == 0

    def kill(self, name: str) -> None:
        """SIGKILL: the process gets no chance to clean up or tell anyone."""
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL

    def log_tail(self, name: str) -> str:
        logs = sorted(self.logs.glob(f"{name}-*.log"))
        return logs[-1].read_text(errors="replace")[-3000:] if logs else ""

    def stop_all(self) -> None:
        for proc in self.procs.values():
            proc.send_signal(signal.SIGKILL)
        for proc in self.procs.values():
            proc.wait(timeout=30)
        self.procs.clear()


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    running = Services(tmp_path)
    try:
        yield running
    finally:
        running.stop_all()


def _prompts_stage(services: Services, run_id: str):  # type: ignore[no-untyped-def]
    return load_run(open_store(services.store), run_id).stages["prompts"]


def test_a_worker_killed_mid_stage_is_noticed_and_the_stage_runs_again(services: Services,
                                                                        tiny_model: Path) -> None:
    services.start("generation")
    services.start("controller")
    client = ControllerClient(services.address("controller"))
    slow = {"prompts": {"target_per_trait": 50, "max_rounds": 200, "max_new_tokens": 16}}
    run, _ = client.submit(spec_yaml(tiny_model, **slow))

    wait_for(lambda: _prompts_stage(services, run.run_id).state is StageState.RUNNING, 180, "prompts to start")
    time.sleep(3)  # into the generation itself (the stage asks for far more than it can finish)
    services.kill("generation")
    services.start("generation")  # same port, knows nothing of the old task

    def second_attempt() -> bool:
        stage = _prompts_stage(services, run.run_id)
        return stage.attempts == 2 and stage.state is StageState.RUNNING

    wait_for(second_attempt, 180, "the second attempt")
    failure = _prompts_stage(services, run.run_id).last_failure
    assert failure is not None and failure.startswith("attempt 1: "), failure
    client.cancel(run.run_id)
    final = wait_for(lambda: (r := load_run(open_store(services.store), run.run_id)).state.final and r, 60,
                     "the run to end")
    assert final.state is StageState.CANCELLED


def test_a_controller_killed_mid_stage_is_replaced_and_adopts_the_running_stage(services: Services,
                                                                                 tiny_model: Path) -> None:
    services.start("generation")
    services.start("controller")
    client = ControllerClient(services.address("controller"))
    # Long enough to kill the controller while it runs, short enough to finish soon after.
    quick = {"prompts": {"target_per_trait": 8, "max_rounds": 4, "max_new_tokens": 32}}
    run, _ = client.submit(spec_yaml(tiny_model, **quick))

    wait_for(lambda: _prompts_stage(services, run.run_id).state is StageState.RUNNING, 180, "prompts to start")
    services.kill("controller")
    assert _prompts_stage(services, run.run_id).state is StageState.RUNNING  # killed mid-stage
    services.start("controller")

    def prompts_done() -> bool:
        return _prompts_stage(services, run.run_id).state is StageState.SUCCEEDED

    wait_for(prompts_done, 300, "the adopted prompts stage to succeed")
    stage = _prompts_stage(services, run.run_id)
    assert stage.attempts == 1, stage.last_failure  # adopted, not started again
    assert not stage.last_failure
    assert ControllerClient(services.address("controller")).get(run.run_id).run_id == run.run_id
    ControllerClient(services.address("controller")).cancel(run.run_id)
