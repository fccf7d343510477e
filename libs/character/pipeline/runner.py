"""Run stages in this process: one stage (`oct stage`) or the whole DAG (`oct run`).

A stage whose result is already stored is skipped; a failing stage raises `StageFailed`
naming the stage and its inputs, and leaves every finished artifact in place so the
next run continues from there.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from character.errors import CharacterError, NotFound
from character.home import oct_home
from character.pipeline.dag import STAGE_NAMES, stage_keys, stage_module
from character.pipeline.spec import RunSpec
from character.pipeline.stage import EngineProvider, StageContext, StageResult
from character.progress import Progress, silent
from character.store.base import Store

RESULT_KIND = "stage"


class StageFailed(CharacterError):
    """A stage raised; finished stages stay stored."""

    def __init__(self, stage: str, inputs: dict[str, str], cause: BaseException):
        self.stage, self.cause = stage, cause
        where = ", ".join(f"{k}={v[:12]}" for k, v in inputs.items()) or "no inputs"
        super().__init__(
            f"stage {stage!r} failed (inputs: {where}): {type(cause).__name__}: {cause}. "
            "Finished stages are kept; run again to continue from here."
        )


def load_result(store: Store, key: str) -> StageResult:
    folder = store.materialize(RESULT_KIND, key)
    return StageResult.model_validate_json((folder / "result.json").read_text())


def save_result(store: Store, result: StageResult) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "result.json").write_text(result.model_dump_json(indent=2))
        store.put_dir(RESULT_KIND, result.key, Path(tmp), meta={"stage": result.stage})


def run_stage(
    spec: RunSpec,
    stage: str,
    store: Store,
    engines: EngineProvider,
    run_id: str,
    progress: Progress = silent,
) -> tuple[StageResult, bool]:
    """Run one stage unless its result is stored. Returns (result, skipped)."""
    keys = stage_keys(spec)
    key = keys[stage]
    if store.has(RESULT_KIND, key):
        return load_result(store, key), True
    module = stage_module(stage)
    inputs: dict[str, StageResult] = {}
    for upstream in module.INPUTS:
        if not store.has(RESULT_KIND, keys[upstream]):
            raise NotFound(
                f"stage {stage!r} needs the output of stage {upstream!r} (key {keys[upstream][:12]}), "
                f"which is not in the store {store.uri}; run `oct stage {upstream}` first or `oct run`"
            )
        inputs[upstream] = load_result(store, keys[upstream])
    ctx = StageContext(
        run_id=run_id,
        spec=spec,
        constitution=spec.persona,
        store=store,
        engines=engines,
        key=key,
        inputs=inputs,
        workdir=oct_home() / "work" / f"{stage}-{key[:16]}",
        progress=progress,
    )
    ctx.workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        result = module.run(ctx, spec.stage_config(stage))
    except CharacterError:
        raise
    except Exception as err:
        raise StageFailed(stage, {u: keys[u] for u in module.INPUTS}, err) from err
    result.metrics.setdefault("wall_seconds", round(time.monotonic() - started, 2))
    save_result(store, result)
    return result, False


def run_pipeline(
    spec: RunSpec,
    store: Store,
    engines: EngineProvider,
    run_id: str,
    progress: Progress = silent,
    on_stage: Callable[[str, StageResult, bool], None] | None = None,
    stages: tuple[str, ...] = STAGE_NAMES,
) -> dict[str, StageResult]:
    """Run the stages in order; `on_stage(name, result, skipped)` after each."""
    results: dict[str, StageResult] = {}
    for name in stages:
        result, skipped = run_stage(spec, name, store, engines, run_id, progress)
        results[name] = result
        if on_stage:
            on_stage(name, result, skipped)
    return results


def stage_report(results: dict[str, StageResult]) -> str:
    """A compact JSON summary of a run's stages (artifacts, metrics)."""
    return json.dumps({k: v.model_dump(mode="json") for k, v in results.items()}, indent=2)
