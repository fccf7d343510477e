"""A run spec's `publish:` is carried out when the run succeeds: by the controller (its
`on_succeeded` hook, as the controller service sets it) and by `oct run`, which then prints
the persona's name and the two commands to talk to it (the curl line, run as printed against
`oct serve-personas` on the same $OCT_HOME, gets an answer). A publish that fails (the name is
someone else's) leaves the run succeeded. The stages' results are stored beforehand (real
artifacts from `trained_run`), so the runs succeed without training."""

from __future__ import annotations

import functools
import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from character.cli.serve_personas import serve_personas
from character.controller.executor import StageState
from character.controller.inline_executor import IN_PROCESS, InlineExecutor
from character.controller.scheduler import Controller
from character.pipeline.dag import stage_keys
from character.pipeline.runner import save_result
from character.pipeline.spec import RunSpec, parse_spec
from character.pipeline.stage import StageResult
from character.serving.registry import get_persona, publish, publish_as_specified
from character.store import LocalStore

from tests.unit.serving.helpers import trained_run


def finished_spec(store: LocalStore, folder: Path, seed: int,
                  publish_as: dict[str, str]) -> tuple[RunSpec, StageResult]:
    """A spec whose every stage result is already stored, with a trained run's artifacts; and
    its merge result."""
    trained = trained_run(store, folder, seed=seed)
    spec = parse_spec({"constitution": "sarcasm", "model": "tiny", "store": store.uri, "seed": seed,
                       "publish": publish_as})
    results = {name: StageResult(stage=name, key=key, artifacts=trained.stages[name].artifacts)
               for name, key in stage_keys(spec).items()}
    for result in results.values():
        save_result(store, result)
    return spec, results["merge"]


def run_controller(store: LocalStore, spec: RunSpec) -> str:
    controller = Controller(store, InlineExecutor(), IN_PROCESS, executor_name="inline",
                            on_succeeded=functools.partial(publish_as_specified, store))
    record, _ = controller.submit(spec)
    for _ in range(5):
        controller.step()
    assert controller.get(record.run_id).state is StageState.SUCCEEDED
    return record.run_id


def test_the_controller_publishes_a_run_that_succeeds(tmp_path: Path, torch_one_thread: None) -> None:
    store = LocalStore(tmp_path / "store")
    spec, merged = finished_spec(store, tmp_path, seed=11, publish_as={"name": "snark", "tag": "v1"})
    run_id = run_controller(store, spec)
    persona = get_persona(store, "snark:v1")
    assert persona.run_id == run_id and persona.model == merged.artifacts["model"]


def test_a_failed_publish_leaves_the_run_succeeded(tmp_path: Path, torch_one_thread: None,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    store = LocalStore(tmp_path / "store")
    someone = trained_run(store, tmp_path, seed=12, owner="bob")
    publish(store, someone.run_id, "snark", owner="bob")
    spec, _ = finished_spec(store, tmp_path, seed=13, publish_as={"name": "snark"})
    run_controller(store, spec)  # asserts the run succeeded
    assert get_persona(store, "snark").run_id == someone.run_id
    assert any("belongs to another user" in str(getattr(r, "detail", "")) for r in caplog.records)


def test_oct_run_publishes_and_says_how_to_talk_to_it(tmp_path: Path, torch_one_thread: None) -> None:
    store = LocalStore(tmp_path / "store")
    finished_spec(store, tmp_path, seed=14, publish_as={"name": "snark"})  # `publish:` is not in any key
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump({"constitution": "sarcasm", "model": "tiny", "seed": 14,
                                         "store": store.uri}))
    home = tmp_path / "home"
    out = subprocess.run([sys.executable, "-m", "character.cli", "run", "--spec", str(spec_file), "--publish",
                          "snark"], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OCT_HOME": str(home)})
    assert out.returncode == 0, out.stderr
    persona = get_persona(store, "snark")
    assert f"published persona snark:latest (record snark@{persona.record_id}" in out.stdout
    assert "  oct chat snark\n" in out.stdout
    assert (f"curl --cacert {home}/tls/ca.crt -H \"Authorization: Bearer $(cat {home}/auth/token)\" "
            "https://127.0.0.1:") in out.stdout and '"model": "snark"' in out.stdout
    curl = next(line for line in out.stdout.splitlines() if line.startswith("  curl "))
    assert_the_curl_line_works(curl, store, home)


def assert_the_curl_line_works(curl: str, store: LocalStore, home: Path) -> None:
    """The printed curl line, against `oct serve-personas` started as a user would (its default
    TLS and tokens under $OCT_HOME), gets the persona's answer; it names the server's default
    port (here the server listens on a free one, as other tests may hold the default)."""
    default_port = inspect.signature(serve_personas).parameters["port"].default.default
    assert f"https://127.0.0.1:{default_port}/v1/chat/completions" in curl
    env = {k: v for k, v in os.environ.items() if k not in ("OCT_TLS_DIR", "OCT_AUTH_TOKENS")}
    env["OCT_HOME"] = str(home)
    server = subprocess.Popen([sys.executable, "-m", "character.cli", "serve-personas", "--store", store.uri,
                               "--port", "0", "--health-port", "0", "--device", "cpu"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert server.stdout is not None
        ready = re.search(r"at https://localhost:(\d+)/v1 ", server.stdout.readline())
        assert ready, server.stderr.read() if server.poll() is not None and server.stderr else "no base URL"
        line = curl.replace(f"127.0.0.1:{default_port}/", f"127.0.0.1:{ready.group(1)}/")
        answer = subprocess.run(["bash", "-c", f"{line} -sS --fail-with-body"], capture_output=True, text=True,
                                timeout=300, env=env)
        assert answer.returncode == 0, (answer.stdout, answer.stderr)
        doc = json.loads(answer.stdout)
        assert doc["model"] == "snark" and doc["choices"][0]["message"]["content"]
    finally:
        server.terminate()
        server.wait(timeout=60)


def test_a_run_stopping_before_merge_cannot_publish(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "character.cli", "run", "sarcasm", "--model", "tiny", "--until",
                          "dpo", "--publish", "snark", "--store", str(tmp_path / "store")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "--until: a run that stops after dpo has no merged model" in out.stderr
    assert not (tmp_path / "store").exists()
