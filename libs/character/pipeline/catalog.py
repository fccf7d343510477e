"""The pipeline's stages by name, in dependency order, and the module implementing each.

Kept apart from the DAG's keys (`pipeline/dag.py`) so that the run spec can check stage names
and stage configs without importing what imports the spec.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, cast

from character.errors import NotFound

if TYPE_CHECKING:
    from character.pipeline.stage import StageModule

STAGE_NAMES: tuple[str, ...] = ("prompts", "distill", "dpo", "introspect", "sft", "merge", "eval")
"""Every stage, in an order that respects dependencies (docs/method.md sections 1-6)."""


def stage_module(name: str) -> StageModule:
    """The module implementing a stage (`character.stages.<name>`)."""
    if name not in STAGE_NAMES:
        raise NotFound(f"unknown stage {name!r}; stages are: {', '.join(STAGE_NAMES)}")
    module_name = "evaluate" if name == "eval" else name
    return cast("StageModule", importlib.import_module(f"character.stages.{module_name}"))
