"""The content addresses of a run's stages and its run id.

A stage's key is the digest of its name, its config, the spec fields it uses and its
upstream stages' keys. Keys are computed before anything runs, so a finished stage
(whose `stage` artifact exists in the store) is recognised and skipped.
"""

from __future__ import annotations

from character.pipeline.catalog import STAGE_NAMES, stage_module
from character.pipeline.spec import RunSpec
from character.store.digest import digest_of

__all__ = ["STAGE_NAMES", "run_id_for", "run_id_from_keys", "stage_keys", "stage_module"]


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


def run_id_from_keys(keys: dict[str, str]) -> str:
    """A run's id is derived from its last stage's key: the same spec is the same run."""
    return "run-" + keys[STAGE_NAMES[-1]][:12]


def run_id_for(spec: RunSpec) -> str:
    return run_id_from_keys(stage_keys(spec))
