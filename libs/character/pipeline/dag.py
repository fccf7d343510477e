"""The content addresses of a run's stages and its run id.

A stage's key is the digest of its name, its config (resolved once: `pipeline/configs.py`),
the spec fields it uses and its upstream stages' keys. Keys are computed before anything runs,
so a finished stage (whose `stage` artifact exists in the store) is recognised and skipped.
"""

from __future__ import annotations

from collections.abc import Mapping

from character.pipeline.catalog import STAGE_NAMES, stage_module
from character.pipeline.spec import RunSpec
from character.store.digest import digest_of

__all__ = ["STAGE_NAMES", "evaluation_key", "run_id_from_keys", "stage_key", "stage_keys", "stage_module"]


def _spec_field(spec: RunSpec, field: str) -> object:
    if field == "constitution":
        return spec.persona.model_dump(mode="json")
    value = getattr(spec, field)
    if field in ("teacher", "judge") and value in spec.endpoints:
        return spec.endpoints[value].identity(value)
    return value


def stage_key(spec: RunSpec, stage: str, input_keys: Mapping[str, str]) -> str:
    """The content address of one stage: computed from its resolved (or recorded) config, the
    spec fields it uses and its upstream stages' keys."""
    return digest_of(
        {
            "stage": stage,
            "config": spec.stage_configs()[stage].values,
            "uses": {f: _spec_field(spec, f) for f in stage_module(stage).USES},
            "inputs": dict(input_keys),
        }
    )


def stage_keys(spec: RunSpec) -> dict[str, str]:
    """The content address of every stage of a run."""
    keys: dict[str, str] = {}
    for name in STAGE_NAMES:
        keys[name] = stage_key(spec, name, {up: keys[up] for up in stage_module(name).INPUTS})
    return keys


def run_id_from_keys(keys: dict[str, str]) -> str:
    """A run's id is derived from its last stage's key: the same spec is the same run."""
    return "run-" + keys[STAGE_NAMES[-1]][:12]


def evaluation_key(eval_key: str, parts: list[str], other_eval_keys: list[str], classifier: str) -> str:
    """The content address of an evaluation other than the eval stage itself (some parts, more
    runs or another classifier): its report is stored under this key."""
    return digest_of({"eval": eval_key, "parts": parts, "runs": other_eval_keys, "classifier": classifier})
