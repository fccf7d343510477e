"""`oct status RUN` shows the config each stage runs with, as the run's record holds it."""

from __future__ import annotations

from pathlib import Path

from character.cli.main import app
from character.controller.runs import RUNS_PREFIX, new_run, save_run
from character.pipeline.spec import parse_spec
from character.store import open_store
from typer.testing import CliRunner


def test_status_prints_each_stages_recorded_config(tmp_path: Path) -> None:
    spec = parse_spec(
        {
            "constitution": "sarcasm",
            "model": "tiny",
            "store": str(tmp_path / "store"),
            "stages": {"dpo": {"lr": 5.0e-5}},
        }
    )
    store = open_store(spec.store)
    record = new_run(spec, executor="inline")
    save_run(store, record)
    out = CliRunner().invoke(app, ["status", record.run_id, "--store", spec.store])
    assert out.exit_code == 0, out.output + repr(out.exception)
    lines = {line.split(":")[0].strip(): line for line in out.stdout.splitlines() if line.startswith("  ")}
    for name, stage in record.stages.items():
        assert stage.config is not None
        assert all(f"{field}=" in lines[name] for field in stage.config.values), lines.get(name)
    assert "lr=5e-05" in lines["dpo"] and "lr=5e-05" not in lines["sft"]


def test_status_says_when_an_old_record_holds_no_config(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "store"))
    record = new_run(parse_spec({"constitution": "sarcasm", "model": "tiny", "store": store.uri}), executor="inline")
    doc = record.model_dump(mode="json")
    doc["spec"]["constitution"] = "no-such-persona"  # its spec no longer parses: nothing to migrate from
    for stage in doc["stages"].values():
        del stage["config"]
    store.put_record(RUNS_PREFIX + record.run_id, doc)
    out = CliRunner().invoke(app, ["status", record.run_id, "--store", store.uri])
    assert out.exit_code == 0, out.output + repr(out.exception)
    assert out.stdout.count("(not recorded: a stage of an older run)") == len(record.stages)
