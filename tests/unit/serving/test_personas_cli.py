"""`oct personas publish | trained | export` as a person uses them: a real process on a real
store holding a trained run; refusals exit 2 with one located line and no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from character.controller.runs import RunRecord
from character.serving.registry import get_persona
from character.store import LocalStore

from tests.unit.serving.helpers import trained_run


def oct(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "character.cli", "personas", *args], capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, torch_one_thread: None) -> tuple[LocalStore, RunRecord]:
    root = tmp_path_factory.mktemp("cli")
    store = LocalStore(root / "store")
    return store, trained_run(store, root, seed=5)


def test_publish_trained_and_export(run: tuple[LocalStore, RunRecord], tmp_path: Path) -> None:
    store, record = run
    out = oct("publish", record.run_id, "--name", "snark", "--tag", "v1", "--store", store.uri)
    assert out.returncode == 0, out.stderr
    persona = get_persona(store, "snark:v1")
    assert persona.run_id == record.run_id and f"snark@{persona.record_id}" in out.stdout
    listed = oct("trained", "--store", store.uri)
    assert listed.returncode == 0, listed.stderr
    assert "snark:v1" in listed.stdout and record.run_id in listed.stdout
    exported = oct("export", "snark:v1", str(tmp_path / "hf"), "--format", "hf", "--store", store.uri)
    assert exported.returncode == 0, exported.stderr
    assert (tmp_path / "hf" / "model.safetensors").is_file() and (tmp_path / "hf" / "README.md").is_file()


def test_refusals_are_one_located_line(run: tuple[LocalStore, RunRecord]) -> None:
    store, record = run
    bad = oct("publish", record.run_id, "--name", "Not/OK", "--store", store.uri)
    assert bad.returncode == 2 and "error: name: invalid name 'Not/OK'" in bad.stderr
    missing = oct("export", "nobody", "/tmp/never", "--store", store.uri)
    assert missing.returncode == 2 and "no trained persona 'nobody'" in missing.stderr
    assert "Traceback" not in bad.stderr + missing.stderr
