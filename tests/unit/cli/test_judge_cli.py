"""`oct judge calibrate` as a person uses it: real process, real exit codes, the real MiniLM."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from character.stages.evaluate.calibration import load_calibration_set


def oct(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OCT_HOME": str(home), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "character.cli", *args], capture_output=True, text=True, timeout=300, env=env
    )


def test_calibrate_prints_the_figure_and_ends_with_the_accuracy_line(tmp_path: Path) -> None:
    items = load_calibration_set()[:24]
    path = tmp_path / "set.jsonl"
    path.write_text(
        "\n".join(
            json.dumps({"message": i.message, "reply": i.reply, "traits": list(i.traits), "expressed": i.expressed})
            for i in items
        )
    )
    out = oct(
        "judge", "calibrate", "--judge", "embedding", "--set", str(path), "--store", str(tmp_path / "s"), home=tmp_path
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    accuracy = re.fullmatch(r"calibration accuracy: (0\.\d\d|1\.00)", lines[-1])
    assert accuracy, lines[-1]
    assert f"accuracy: {accuracy.group(1)} [" in out.stdout and "n = 24 items" in out.stdout
    assert "position bias" in out.stdout and any(line.startswith(("valid: ", "not valid: ")) for line in lines)


def test_a_malformed_set_is_one_located_message(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"message": "Hi", "reply": "Hello", "traits": ["warm", "cold"], "expressed": "kind"}\n')
    out = oct(
        "judge", "calibrate", "--judge", "embedding", "--set", str(path), "--store", str(tmp_path / "s"), home=tmp_path
    )
    assert out.returncode == 2
    assert f"{path}:1: field 'expressed'" in out.stderr and "Traceback" not in out.stderr


def test_items_calibrates_the_channel_judge_on_the_evaluations_seeded_subset(tmp_path: Path, tiny_model: Path) -> None:
    from character.stages.evaluate.calibration import calibration_subset, set_digest

    spec = tmp_path / "spec.yaml"
    spec.write_text(f"constitution: sarcasm\nmodel: {tiny_model}\nseed: 7\n")
    out = oct(
        "judge",
        "calibrate",
        "--judge",
        "channel",
        "--items",
        "20",
        "--spec",
        str(spec),
        "--store",
        str(tmp_path / "s"),
        home=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    subset = set_digest(calibration_subset(load_calibration_set(), 20, seed=7))
    assert f"judge: channel (set {subset[:12]}, n = 20 items)" in out.stdout
    assert "position bias (share of verdicts picking the trait shown first; 0.50 = none): 0.50" in out.stdout
    assert re.fullmatch(r"calibration accuracy: (0\.\d\d|1\.00)", out.stdout.strip().splitlines()[-1])
