"""Running stages: a finished stage is never run again, and a failing stage says which stage
and which inputs failed while every finished artifact stays in the store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from character.pipeline.dag import stage_keys
from character.pipeline.engines import LocalEngines
from character.pipeline.runner import StageFailed, run_pipeline
from character.pipeline.spec import parse_spec
from character.pipeline.stage import StageContext, StageResult
from character.stages import distill, prompts
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

    monkeypatch.setattr(prompts, "run", finished)
    monkeypatch.setattr(distill, "run", broken)
    engines = LocalEngines.for_spec(store, spec)
    with pytest.raises(StageFailed) as failure:
        run_pipeline(spec, store, engines, "run-test", stages=("prompts", "distill"))
    keys = stage_keys(spec)
    message = str(failure.value)
    assert "stage 'distill' failed" in message and f"prompts={keys['prompts'][:12]}" in message
    assert "RuntimeError: the teacher fell over" in message and "Finished stages are kept" in message
    assert store.has("stage", keys["prompts"]) and not store.has("stage", keys["distill"])

    monkeypatch.setattr(distill, "run", lambda ctx, config: StageResult(stage="distill", key=ctx.key))
    results = run_pipeline(spec, store, engines, "run-test", stages=("prompts", "distill"))
    assert calls == [keys["prompts"]]  # prompts ran once: the rerun took its stored result
    assert results["prompts"].metrics["rows"] == 3 and store.has("stage", keys["distill"])
