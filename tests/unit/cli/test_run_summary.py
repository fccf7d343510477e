"""`oct run`'s end-of-run summary: off a terminal every metric is printed in full, one line per
stage; with --json the same summary is one JSON document on stdout. The run here is one whose
stages are all stored already, so `oct run` only reports it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from character.cli.main import app
from character.controller.runs import new_run, save_run, set_result
from character.pipeline.catalog import STAGE_NAMES
from character.pipeline.runner import save_result
from character.pipeline.spec import parse_spec
from character.pipeline.stage import StageResult
from character.store import open_store
from typer.testing import CliRunner

METRICS: dict[str, Any] = {
    "accuracy": 0.123456789,
    "note": "a long remark " * 20,  # far past the terminal table's 160 characters
    "heldout_after": {"pairs": 8, "accuracy": [0.5, 0.625]},
}


def stored_run(tmp_path: Path, extra: dict[str, dict[str, Any]] | None = None) -> tuple[Path, Path, str]:
    """A spec file, its store, and the id of its run, every stage finished with METRICS (and
    the stage's `extra` metrics)."""
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text("constitution: sarcasm\nmodel: tiny\n")
    store_dir = tmp_path / "store"
    spec = parse_spec({"constitution": "sarcasm", "model": "tiny", "store": str(store_dir)})
    store = open_store(spec.store)
    record = new_run(spec, executor="inline")
    for name, stage in record.stages.items():
        metrics = {**METRICS, "stage": name, **(extra or {}).get(name, {})}
        result = StageResult(stage=name, key=stage.key, metrics=metrics)
        save_result(store, result)
        set_result(stage, result, cached=False)
    record.refresh()
    save_run(store, record)
    return spec_file, store_dir, record.run_id


def test_off_a_terminal_every_metric_is_printed_in_full(tmp_path: Path) -> None:
    spec_file, store_dir, run_id = stored_run(tmp_path)
    out = CliRunner().invoke(app, ["run", "--spec", str(spec_file), "--store", str(store_dir)])
    assert out.exit_code == 0, out.output + repr(out.exception)
    lines = {line.split(":")[0]: line for line in out.stdout.splitlines() if line.startswith("stage ")}
    assert sorted(lines) == sorted(f"stage {name}" for name in STAGE_NAMES)
    for name, line in lines.items():
        assert "accuracy=0.123456789" in line, line
        assert f"note={METRICS['note']}" in line
        assert 'heldout_after={"pairs":8,"accuracy":[0.5,0.625]}' in line
        assert f"stage={name.removeprefix('stage ')}" in line
    assert run_id in out.stdout


def test_json_gives_the_same_summary_machine_readable(tmp_path: Path) -> None:
    spec_file, store_dir, run_id = stored_run(tmp_path)
    out = CliRunner().invoke(app, ["run", "--spec", str(spec_file), "--store", str(store_dir), "--json"])
    assert out.exit_code == 0, out.output + repr(out.exception)
    doc = json.loads(out.stdout)  # stdout holds the JSON document alone
    assert doc["run_id"] == run_id and doc["state"] == "succeeded"
    assert [s["stage"] for s in doc["stages"]] == list(STAGE_NAMES)
    for stage in doc["stages"]:
        assert stage["metrics"] == {**METRICS, "stage": stage["stage"]}
        assert stage["state"] == "succeeded" and len(stage["key"]) == 64


def test_a_stage_warning_is_printed_in_words_after_the_summary(tmp_path: Path) -> None:
    from character.stages.distill import INDISTINGUISHABLE

    warning = f"{INDISTINGUISHABLE} (held-out classifier accuracy 0.53 [0.44, 0.62], n = 128)"
    spec_file, store_dir, _ = stored_run(tmp_path, {"distill": {"data_quality_warning": warning}})
    out = CliRunner().invoke(app, ["run", "--spec", str(spec_file), "--store", str(store_dir)])
    assert out.exit_code == 0, out.output + repr(out.exception)
    lines = out.stdout.splitlines()
    assert f"warning (distill): {warning}" in lines
    assert sum(line.startswith("warning ") for line in lines) == 1
