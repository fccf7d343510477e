"""The CLIs read hostile files the way the controller reads hostile requests: `oct submit`,
`oct run` and `oct personas validate` exit 2 with the located error, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.network import closed_port
from tests.security.corpus import alias_bomb, deep_flow

FILES = {
    "5,000-deep flow nesting": (deep_flow(), ":1: the document nests deeper than"),
    "duplicate seed": ("constitution: sarcasm\nseed: 1\nseed: 2\n", ":3: duplicate key 'seed' (at line 2 and line 3)"),
    "alias bomb": (alias_bomb(), "values in the document"),
}
COMMANDS = {
    "oct submit": lambda path: ["submit", str(path), "--controller", f"127.0.0.1:{closed_port()}"],
    "oct run": lambda path: ["run", "--spec", str(path), "--store", str(path.parent / "store")],
}


def oct(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "character.cli", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "OCT_INSECURE": "1"})


@pytest.mark.attack("hostile spec file given to the CLI")
@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("attack", list(FILES))
def test_hostile_spec_files_exit_2_with_the_located_error(tmp_path: Path, command: str, attack: str) -> None:
    text, expected = FILES[attack]
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    out = oct(*COMMANDS[command](path))
    assert out.returncode == 2, out.stderr[-2000:]
    assert f"error: {path}" in out.stderr and expected in out.stderr, out.stderr[-2000:]
    assert "Traceback" not in out.stderr


@pytest.mark.attack("hostile constitution file given to oct personas validate")
@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_deep_constitutions_exit_2_with_the_located_error(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"deep{suffix}"
    path.write_text("[" * 5000 + "]" * 5000)
    out = oct("personas", "validate", str(path))
    assert out.returncode == 2 and f"error: {path}" in out.stderr and "nests deeper than" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
