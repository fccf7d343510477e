"""`oct run`'s path: the controller in this process with the inline executor. A finished
stage is never run again, a failing stage says which stage and which inputs failed while
every finished artifact stays in the store, `--until` starts nothing after its stage, and a
stage is prepared from the run record alone (keys computed once, at submit)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from character.controller.executor import StageState
from character.controller.inline_executor import run_in_process
from character.controller.runs import load_run, new_run, prepare_stage, save_run
from character.errors import InvalidInput
from character.pipeline.dag import stage_keys
from character.pipeline.spec import parse_spec
from character.pipeline.stage import StageContext, StageResult
from character.stages import distill, dpo, prompts
from character.store import open_store


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
