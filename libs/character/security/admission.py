"""Admission of run specs submitted over the network: what `oct run` allows on a laptop, a
remote submitter may not. A remote spec cannot reach beyond the platform:

- the student, teacher and judge are bundled names, models the platform itself stored
  (`artifact://model/<key>`), or names in the operator's registry (`PlatformConfig.models`,
  resolved where the model is loaded: `character.models.refs.resolve_model`);
  the teacher and judge may also name an operator-declared HTTP endpoint. The spec cannot
  declare endpoints: neither a URL nor the variable a key is read from;
- the constitution is a bundled persona or inline; chat prompts are "bundled" or a registry name;
- no stage override is a path or URI, and every number is finite and within the operator's
  maxima (`Limits`): a spec that cannot run is refused before anything is stored.

A chat prompt set's registry name is replaced by its source; an endpoint's name brings the
operator's declaration into the spec, so the stored record and the stages see what runs.
"""

from __future__ import annotations

import math
from typing import Any

from character.errors import InvalidInput
from character.pipeline.engines import ARTIFACT_MODEL_PREFIX
from character.platform import Limits, PlatformConfig
from character.yamldoc import Budget, parse_mapping

MODEL_FIELDS = ("model", "teacher", "judge")


def load_spec_text(text: str, limits: Limits, where: str = "spec_yaml") -> dict[str, Any]:
    """The YAML text of a submitted spec as a mapping; size checked first, then syntax, aliases
    (refused), duplicate keys, nesting, values and traits counted while it is composed."""
    if not text.strip():
        raise InvalidInput("send the run spec as YAML (what `oct run --spec` reads)", where=where)
    size = len(text.encode("utf-8", errors="replace"))
    if size > limits.max_spec_bytes:
        raise InvalidInput(f"the spec is {size} bytes; the limit is {limits.max_spec_bytes}", where=where)
    budget = Budget.remote(limits.max_spec_nodes, limits.max_spec_depth,
                           caps={("constitution", "traits"): limits.max_traits},
                           cap_hint="limits.max_traits of this platform's config")
    return parse_mapping(text, where, "run spec", budget)


def admit(doc: dict[str, Any], platform: PlatformConfig, where: str = "spec_yaml") -> dict[str, Any]:
    """The spec mapping a remote submitter sent, checked against the platform, with the
    operator's endpoints and chat prompt sources filled in; raises InvalidInput naming the
    field. Parse the result with `parse_spec`, then call `check_knobs`."""
    doc = dict(doc)
    limits = platform.limits
    if "endpoints" in doc:
        names = ", ".join(sorted(platform.endpoints)) or "none are declared"
        raise InvalidInput("endpoints are declared by the platform's operator, not in a spec: name one as "
                           f"teacher or judge ({names})", where=f"{where}.endpoints")
    _check_constitution(doc.get("constitution"), limits, f"{where}.constitution")
    used: dict[str, Any] = {}
    for field in MODEL_FIELDS:
        value = doc.get(field)
        if value is None:
            continue
        if not isinstance(value, str):
            raise InvalidInput("give a model name", where=f"{where}.{field}")
        if field != "model" and value in platform.endpoints:
            used[value] = platform.endpoints[value].model_dump(mode="json")
            continue
        doc[field] = _model(value, platform, field, f"{where}.{field}")
    if used:
        doc["endpoints"] = used
    prompts = doc.get("chat_prompts")
    if prompts is not None and prompts != "bundled":
        if not isinstance(prompts, str) or prompts not in platform.chat_prompts:
            offered = ", ".join(["bundled", *sorted(platform.chat_prompts)])
            raise InvalidInput(f"{_show(prompts)} is not a chat prompt set this platform offers ({offered}); "
                               "paths and URIs are for `oct run` on your own machine",
                               where=f"{where}.chat_prompts")
        doc["chat_prompts"] = platform.chat_prompts[prompts]
    seed = doc.get("seed")
    if isinstance(seed, int | float) and not isinstance(seed, bool) and not 0 <= seed <= limits.max_seed:
        raise InvalidInput(f"seed must be between 0 and {limits.max_seed}, got {_show(seed)}",
                           where=f"{where}.seed")
    stages = doc.get("stages")
    if isinstance(stages, dict):
        for stage, overrides in stages.items():
            if isinstance(overrides, dict):
                for key, value in overrides.items():
                    _no_references(value, f"{where}.stages.{stage}.{key}")
    return doc


def check_knobs(stages: dict[str, dict[str, Any]], limits: Limits, where: str = "spec_yaml") -> None:
    """Every number in the per-stage overrides is finite and at most the operator's maximum for
    that field (`Limits.knob_max`, else `knob_factor` x the largest of its default and presets).
    Call after `parse_spec` accepted the spec (so stage and field names are known)."""
    from character.pipeline.dag import stage_module

    for stage, overrides in stages.items():
        config = stage_module(stage).Config
        for field, value in overrides.items():
            cap = knob_cap(config, stage, field, limits)
            for number in _numbers(value):
                here = f"{where}.stages.{stage}.{field}"
                if not math.isfinite(number):
                    raise InvalidInput(f"{number} is not a finite number", where=here)
                if abs(number) > cap:
                    raise InvalidInput(f"{_show(number)} is over this platform's maximum of {cap:g} "
                                       "(operators raise it in the platform config's limits.knob_max)",
                                       where=here)


def knob_cap(config: Any, stage: str, field: str, limits: Limits) -> float:
    """The largest absolute value a remote spec may give `stage`'s `field`."""
    explicit = limits.knob_max.get(stage, {}).get(field)
    if explicit is not None:
        return explicit
    info = config.model_fields.get(field)
    refs: list[Any] = [preset.get(field) for preset in config.PRESETS.values()]
    if info is not None and info.default_factory is None:
        refs.append(info.default)
    largest = max((abs(n) for n in _numbers(refs) if math.isfinite(n)), default=0.0)
    return limits.knob_factor * largest if largest > 0 else limits.knob_default_max


# ---------------------------------------------------------------------- parts
def _model(value: str, platform: PlatformConfig, field: str, where: str) -> str:
    from character.models.refs import BUNDLED
    from character.store._shared import SAFE_NAME

    if value in platform.models or value in BUNDLED:
        return value
    key = value.removeprefix(ARTIFACT_MODEL_PREFIX)
    if value.startswith(ARTIFACT_MODEL_PREFIX) and SAFE_NAME.fullmatch(key):
        return value
    offered = sorted({*BUNDLED, *platform.models, *(platform.endpoints if field != "model" else ())})
    raise InvalidInput(f"{_show(value)} is not a model this platform offers: name one of {', '.join(offered)} "
                       f"or a stored model ({ARTIFACT_MODEL_PREFIX}<key>); paths, buckets and hub names are "
                       "for `oct run` on your own machine, or ask the operator to register the model",
                       where=where)


def _check_constitution(value: Any, limits: Limits, where: str) -> None:
    if isinstance(value, str):
        from character.constitution import persona_names

        if value not in persona_names():
            raise InvalidInput(f"unknown persona {_show(value)}: name a bundled persona ({', '.join(persona_names())}) "
                               "or put the constitution inline (`oct submit` inlines a local constitution file)",
                               where=where)
    elif isinstance(value, dict):
        traits = value.get("traits")  # their number was capped while the spec was parsed
        if isinstance(traits, list):
            questions = sum(len(t.get(k) or []) for t in traits if isinstance(t, dict)
                            for k in ("questions", "additional_questions") if isinstance(t.get(k), list))
            if questions > limits.max_questions:
                raise InvalidInput(f"{questions} questions; this platform takes at most {limits.max_questions}",
                                   where=f"{where}.traits")


def _no_references(value: Any, where: str) -> None:
    """Stage overrides are settings, not places: no paths, URIs or hub names."""
    if isinstance(value, str):
        if "/" in value or "\\" in value or value.startswith(("~", ".")):  # a URI's "://" has its "/"
            raise InvalidInput(f"{_show(value)} looks like a path or URI; a remote spec cannot point stages "
                               "at files, buckets or hub names", where=where)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _no_references(item, f"{where}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            _no_references(item, f"{where}.{key}")


def _numbers(value: Any) -> list[float]:
    if isinstance(value, bool) or value is None:
        return []
    if isinstance(value, int | float):
        try:
            return [float(value)]
        except OverflowError:  # an integer beyond the largest float: refused as infinite
            return [math.inf]
    if isinstance(value, list | tuple):
        return [n for item in value for n in _numbers(item)]
    if isinstance(value, dict):
        return [n for item in value.values() for n in _numbers(item)]
    return []


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
