"""The pipeline's stages, their order and dependencies, and their content addresses.

A stage's key is the digest of its name, its config, the spec fields it uses and its
upstream stages' keys. Keys are computed before anything runs, so a finished stage
(whose `stage` artifact exists in the store) is recognised and skipped.
"""

from __future__ import annotations

import importlib
from typing import cast

from character.pipeline.spec import RunSpec
from character.pipeline.stage import StageModule
from character.store.digest import digest_of

STAGE_NAMES: tuple[str, ...] = ("prompts", "distill", "dpo", "introspect", "sft", "merge", "eval")
"""Every stage, in an order that respects dependencies (method.md sections 1-6)."""


def stage_module(name: str) -> StageModule:
    """The module implementing a stage (`character.stages.<name>`)."""
    if name not in STAGE_NAMES:
        from character.errors import NotFound

        raise NotFound(f"unknown stage {name!r}; stages are: {', '.join(STAGE_NAMES)}")
    module_name = "evaluate" if name == "eval" else name
    return cast(StageModule, importlib.import_module(f"character.stages.{module_name}"))


def _spec_field(spec: RunSpec, field: str) -> object:
    if field == "constitution":
        return spec.persona.model_dump(mode="json")
    value = getattr(spec, field)
    if field in ("teacher", "judge") and value in spec.endpoints:
        return spec.endpoints[value].identity(value)
    return value


def stage_keys(spec: RunSpec) -> dict[str, str]:
    """The content address of every stage of a run."""
    keys: dict[str, str] = {}
    for name in STAGE_NAMES:
        module = stage_module(name)
        keys[name] = digest_of(
            {
                "stage": name,
                "config": spec.stage_config(name).model_dump(mode="json"),
                "uses": {f: _spec_field(spec, f) for f in module.USES},
                "inputs": {up: keys[up] for up in module.INPUTS},
            }
        )
    return keys


def run_id_for(spec: RunSpec) -> str:
    """A run's id is derived from its last stage's key: the same spec is the same run."""
    return "run-" + stage_keys(spec)[STAGE_NAMES[-1]][:12]
