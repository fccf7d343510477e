"""`oct run`'s path: the controller in this process with the inline executor. A finished
stage is never run again, a failing stage says which stage and which inputs failed while
every finished artifact stays in the store, `--until` starts nothing after its stage, and a
stage is prepared from the run record alone (keys computed once, at submit), each stage config is
resolved once, and a record written before configs were recorded resumes and is written back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from character.controller.executor import StageState
from character.controller.inline_executor import run_in_process
from character.controller.runs import RUNS_PREFIX, load_run, new_run, prepare_stage, save_run
from character.errors import InvalidInput
from character.pipeline.catalog import STAGE_NAMES, stage_module
from character.pipeline.dag import stage_keys
from character.pipeline.spec import parse_spec
from character.pipeline.stage import StageConfig, StageContext, StageResult
from character.stages import distill, dpo, prompts
from character.store import open_store

from tests.unit.controller.recorded_runs import edit_record, recorded_spec, saved_run, strip_configs


def test_a_failure_keeps_what_finished_and_the_rerun_goes_on_from_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = parse_spec({"constitution": "sarcasm", "model": "tiny", "store": str(tmp_path / "store")})
    store = open_store(spec.store)
    calls: list[str] = []

    def finished(ctx: StageContext, config: Any) -> StageResult:
        calls.append(ctx.key)
        return StageResult(stage="prompts", key=ctx.key, metrics={"rows": 3})

    def broken(ctx: StageContext, config: Any) -> StageResult:
        raise RuntimeError("the teacher fell over")

    def never(ctx: StageContext, config: Any) -> StageResult:
        raise AssertionError("a stage after --until started")

    monkeypatch.setattr(prompts, "run", finished)
    monkeypatch.setattr(distill, "run", broken)
    monkeypatch.setattr(dpo, "run", never)
    failed = run_in_process(spec, store, until="distill")
    keys = stage_keys(spec)
    assert failed.state is StageState.FAILED and failed.executor == "inline"
    message = failed.stages["distill"].message
    assert "stage 'distill' failed" in message and f"prompts={keys['prompts'][:12]}" in message
    assert "RuntimeError: the teacher fell over" in message and "Finished stages are kept" in message
    assert store.has("stage", keys["prompts"]) and not store.has("stage", keys["distill"])
    assert load_run(store, failed.run_id).state is StageState.FAILED  # `oct status --store` sees it

    monkeypatch.setattr(distill, "run", lambda ctx, config: StageResult(stage="distill", key=ctx.key))
    resumed = run_in_process(spec, store, until="distill")
    assert calls == [keys["prompts"]]  # prompts ran once: the rerun took its stored result
    assert resumed.stages["prompts"].finished_at == failed.stages["prompts"].finished_at
    assert resumed.stages["distill"].state is StageState.SUCCEEDED and store.has("stage", keys["distill"])
    later = [s for n, s in resumed.stages.items() if n not in ("prompts", "distill")]
    assert all(s.state is StageState.CANCELLED and s.attempts == 0 for s in later), later


def test_a_stage_is_prepared_from_its_record_and_a_stale_key_is_refused(tmp_path: Path) -> None:
    spec = parse_spec({"constitution": "sarcasm", "model": "tiny", "store": str(tmp_path / "store")})
    store = open_store(spec.store)
    record = new_run(spec, executor="inline")
    save_run(store, record)
    prepared = prepare_stage(store, record.run_id, "dpo", record.stages["dpo"].key)
    assert prepared.key == stage_keys(spec)["dpo"] == record.stages["dpo"].key
    assert dict(prepared.input_keys) == {"distill": record.stages["distill"].key}
    assert prepared.spec == spec
    with pytest.raises(InvalidInput, match="another version of the run"):
        prepare_stage(store, record.run_id, "dpo", "0" * 64)


def test_a_record_written_before_configs_were_recorded_resumes_and_is_written_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec, store, run_id = saved_run(tmp_path)
    expected = {n: s.config for n, s in load_run(store, run_id).stages.items()}
    edit_record(store, run_id, strip_configs)
    assert all("config" not in s for s in (store.get_record(RUNS_PREFIX + run_id) or {})["stages"].values())
    received: list[Any] = []

    def capture(ctx: StageContext, config: Any) -> StageResult:
        received.append(config.model_dump(mode="json"))
        return StageResult(stage="prompts", key=ctx.key)

    monkeypatch.setattr(prompts, "run", capture)
    record = run_in_process(spec, store, until="prompts")
    assert record.run_id == run_id and record.stages["prompts"].state.value == "succeeded"
    assert received == [expected["prompts"].values]  # type: ignore[union-attr]
    stored = store.get_record(RUNS_PREFIX + run_id)
    assert stored is not None
    assert {n: s["config"] for n, s in stored["stages"].items()} == {
        n: c.model_dump(mode="json") for n, c in expected.items() if c is not None
    }


def test_from_oct_run_to_the_stage_each_config_is_resolved_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    resolved: list[type] = []
    for_scale = StageConfig.for_scale.__func__  # type: ignore[attr-defined]

    def counted(cls: type, *args: Any, **kwargs: Any) -> Any:
        resolved.append(cls)
        return for_scale(cls, *args, **kwargs)

    monkeypatch.setattr(StageConfig, "for_scale", classmethod(counted))
    received: list[Any] = []

    def capture(ctx: StageContext, config: Any) -> StageResult:
        received.append(config)
        return StageResult(stage="prompts", key=ctx.key)

    monkeypatch.setattr(prompts, "run", capture)
    spec = recorded_spec(tmp_path)
    record = run_in_process(spec, open_store(spec.store), until="prompts")
    assert record.stages["prompts"].state.value == "succeeded" and len(received) == 1
    assert sorted(c.__module__ for c in resolved) == sorted(stage_module(n).Config.__module__ for n in STAGE_NAMES)
