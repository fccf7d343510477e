"""Evaluating a stored run: the eval stage itself, or an evaluation of its own (some parts,
more runs of other personas, another persona classifier).

`oct eval` calls `evaluate_stored_run`, and so can a service: every part, no other run and the
run's own classifier is exactly the eval stage (its stored result reused, or run and recorded
as the stage); anything else is content-addressed by `dag.evaluation_key` and its report stored
under that key. Either way the eval config is the one the run recorded, never the presets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, get_args

from character.controller.runs import prepare_stage
from character.errors import InvalidInput
from character.pipeline.dag import evaluation_key
from character.pipeline.engines import LocalEngines
from character.pipeline.runner import run_stage
from character.progress import Progress, silent
from character.stages.evaluate import NAME, PARTS, Config
from character.stages.evaluate.orchestrate import evaluate, save
from character.stages.evaluate.subject import Subject

if TYPE_CHECKING:
    from character.pipeline.stage import EngineProvider
    from character.store.base import Store

ALL = "all"
"""The part name that asks for every part the run's eval config turns on."""


@dataclass(frozen=True)
class Evaluation:
    """What an evaluation of a stored run produced."""

    parts: tuple[str, ...]
    """The parts it ran (or found stored), in report order."""
    report_key: str
    """The key of its `report` artifact (index.html, plots, results.json)."""


def evaluate_stored_run(store: Store, run_id: str, part: str = ALL, others: Sequence[str] = (),
                        classifier: str | None = None, engines: EngineProvider | None = None,
                        progress: Progress = silent) -> Evaluation:
    """Evaluate the stored run `run_id`: `part` (one of `PARTS`, or "all"), with `others` (more
    runs: robustness becomes N-way across personas, preferences compares every run's ratings)
    and `classifier` (frozen or finetune; default: the run's recorded eval config). Parts run with
    whichever upstream results exist; one that needs a missing one says so when it starts."""
    if part != ALL and part not in PARTS:
        raise InvalidInput(f"unknown part {part!r}; choose one of {', '.join((*PARTS, ALL))}", where="part")
    others = [r for r in others if r != run_id]
    stage = prepare_stage(store, run_id, NAME)
    engines = engines or LocalEngines.for_spec(store, stage.spec)
    config = _config(stage.spec.stage_config(NAME), part, classifier)
    parts = tuple(p for p in PARTS if getattr(config, p))
    if part == ALL and not others and classifier is None:
        result, _ = run_stage(stage, store, engines, progress)
        return Evaluation(parts, result.artifacts["report"].key)
    contexts = [prepare_stage(store, r, NAME).context(store, engines, progress, partial=True)
                for r in (run_id, *others)]
    key = evaluation_key(contexts[0].key, list(parts), [c.key for c in contexts[1:]], config.classifier)
    if not store.has("report", key):
        results = evaluate([Subject(ctx, config) for ctx in contexts], config)
        save(contexts[0], results, key)
    return Evaluation(parts, key)


def _config(recorded: Config, part: str, classifier: str | None) -> Config:
    """The run's recorded eval config with only `part` on and `classifier` in place of its own."""
    config = recorded if part == ALL else recorded.only([part])
    if classifier is None:
        return config
    choices: tuple[Any, ...] = get_args(Config.model_fields["classifier"].annotation)
    if classifier not in choices:
        raise InvalidInput(f"unknown classifier {classifier!r}; choose {' or '.join(choices)}", where="classifier")
    return config.model_copy(update={"classifier": classifier})
