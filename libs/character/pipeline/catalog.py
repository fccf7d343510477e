"""The pipeline's stages by name, in dependency order, and the module implementing each.

This is the one plugin point between the pipeline and the stages: the pipeline (spec, keys,
runner) names a stage by its `STAGE_MODULES` entry and loads it with importlib, because the
stages sit in the layer above the pipeline and may not be imported from below. Import-linter
cannot see these imports, so `tests/unit/pipeline/test_catalog.py` checks instead that every
entry loads as a stage of its own name whose inputs come earlier, and that the catalog lists
every stage module of `character.stages` (all but the shared helpers of `stages/common`).
A new stage is a module under `character/stages/` and one entry here.

Kept apart from the DAG's keys (`pipeline/dag.py`) so that the run spec can check stage names
and stage configs without importing what imports the spec.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, cast

from character.errors import NotFound

if TYPE_CHECKING:
    from character.pipeline.stage import StageModule

STAGE_MODULES: dict[str, str] = {
    "prompts": "character.stages.prompts",
    "distill": "character.stages.distill",
    "dpo": "character.stages.dpo",
    "introspect": "character.stages.introspect",
    "sft": "character.stages.sft",
    "merge": "character.stages.merge",
    "eval": "character.stages.evaluate",
}
"""Every stage and its module, in an order that respects dependencies (docs/method.md
sections 1-6)."""

STAGE_NAMES: tuple[str, ...] = tuple(STAGE_MODULES)


def stage_module(name: str) -> StageModule:
    """The module implementing a stage (its `STAGE_MODULES` entry)."""
    if name not in STAGE_MODULES:
        raise NotFound(f"unknown stage {name!r}; stages are: {', '.join(STAGE_NAMES)}")
    return cast("StageModule", importlib.import_module(STAGE_MODULES[name]))
