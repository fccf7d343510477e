"""Run one stage of a run in this process, from what its preparation hands over.

`StageRun` is one stage of one run with its key and its inputs' keys, as computed when the
run was submitted (`character.controller.runs.prepare_stage` makes it from the run record).
Every way of running a stage ends here: the inline executor, the worker services, `oct
stage` (a Kubernetes Job) and `oct eval`. A stage whose result is stored is not run again;
a failing stage raises `StageFailed` naming the stage and its inputs and leaves every
finished artifact in place, so the next attempt continues from there.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from character.errors import CharacterError, NotFound
from character.home import oct_home
from character.pipeline.catalog import stage_module
from character.pipeline.stage import EngineProvider, StageContext, StageResult
from character.progress import Progress, silent
from character.store.base import Store

if TYPE_CHECKING:
    from character.pipeline.spec import RunSpec

RESULT_KIND = "stage"
"""The artifact kind of a finished stage's `StageResult` (its presence means: done)."""


class StageFailed(CharacterError):
    """A stage raised; finished stages stay stored."""

    def __init__(self, stage: str, inputs: Mapping[str, str], cause: BaseException):
        self.stage, self.cause = stage, cause
        where = ", ".join(f"{k}={v[:12]}" for k, v in inputs.items()) or "no inputs"
        super().__init__(
            f"stage {stage!r} failed (inputs: {where}): {type(cause).__name__}: {cause}. "
            "Finished stages are kept; run again to continue from here."
        )


def load_result(store: Store, key: str) -> StageResult:
    folder = store.materialize(RESULT_KIND, key)
    return StageResult.model_validate_json((folder / "result.json").read_text())


def stored_result(store: Store, key: str) -> StageResult | None:
    """The stage result stored under `key`, or None: the one "already done?" check."""
    return load_result(store, key) if store.has(RESULT_KIND, key) else None


def save_result(store: Store, result: StageResult) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "result.json").write_text(result.model_dump_json(indent=2))
        store.put_dir(RESULT_KIND, result.key, Path(tmp), meta={"stage": result.stage})


@dataclass(frozen=True)
class StageRun:
    """One stage of one run, ready to run."""

    run_id: str
    stage: str
    spec: RunSpec
    """The run's spec, carrying the stage configs recorded at submit."""
    key: str
    """This stage's content address (computed at submit)."""
    input_keys: Mapping[str, str]
    """Upstream stage -> its key (computed at submit)."""

    def context(self, store: Store, engines: EngineProvider, progress: Progress = silent,
                partial: bool = False) -> StageContext:
        """The stage's context with its inputs' results loaded. A missing input is NotFound,
        saying which stage to run first; with `partial`, missing inputs are left out (the
        eval stage's parts each say what they lack)."""
        inputs: dict[str, StageResult] = {}
        for upstream, key in self.input_keys.items():
            result = stored_result(store, key)
            if result is not None:
                inputs[upstream] = result
            elif not partial:
                raise NotFound(
                    f"stage {self.stage!r} needs the output of stage {upstream!r} (key {key[:12]}), "
                    f"which is not in the store {store.uri}; run `oct stage {upstream}` first or `oct run`"
                )
        workdir = oct_home() / "work" / f"{self.stage}-{self.key[:16]}"
        workdir.mkdir(parents=True, exist_ok=True)
        return StageContext(run_id=self.run_id, spec=self.spec, constitution=self.spec.persona, store=store,
                            engines=engines, key=self.key, inputs=inputs, workdir=workdir, progress=progress)


def run_stage(run: StageRun, store: Store, engines: EngineProvider,
              progress: Progress = silent) -> tuple[StageResult, bool]:
    """Run the stage, with the config its spec carries (a run record's: `prepare_stage`), unless
    its result is stored. Returns (result, already stored)."""
    done = stored_result(store, run.key)
    if done is not None:
        return done, True
    config = run.spec.stage_config(run.stage)  # the recorded config, refused if edited or of other code
    ctx = run.context(store, engines, progress)
    started = time.monotonic()
    try:
        result = stage_module(run.stage).run(ctx, config)
    except CharacterError:
        raise
    except Exception as err:
        raise StageFailed(run.stage, run.input_keys, err) from err
    result.metrics.setdefault("wall_seconds", round(time.monotonic() - started, 2))
    save_result(store, result)
    return result, False
