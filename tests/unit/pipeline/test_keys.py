"""Content addresses, field by field: every stage config field, every spec field a stage uses
and every edit of the constitution changes that stage's key and every key downstream of it,
and nothing else. A field left out of a key would let an edited setting silently reuse a stale
result from the store."""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml
from character.constitution import resolve_constitution
from character.errors import InvalidInput
from character.pipeline.dag import STAGE_NAMES, stage_keys, stage_module
from character.pipeline.spec import RunSpec, parse_spec

SCALE = "demo"

# Fields that only apply together with another setting (validators refuse them alone).
CONTEXT: dict[str, dict[str, Any]] = {"merge": {"mode": "weighted"}}


def keys(**doc: Any) -> dict[str, str]:
    return stage_keys(parse_spec({"constitution": "sarcasm", **doc}))


def downstream(stage: str) -> set[str]:
    """`stage` and every stage that reads it, directly or through others."""
    reached = {stage}
    for name in STAGE_NAMES:  # dependency order: inputs come first
        if reached & set(stage_module(name).INPUTS):
            reached.add(name)
    return reached


def changed(a: dict[str, str], b: dict[str, str]) -> set[str]:
    return {name for name in STAGE_NAMES if a[name] != b[name]}


def _alternatives(value: Any, annotation: Any) -> list[Any]:
    """Valid-looking values other than `value` for a field of type `annotation`."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return [choice for choice in typing.get_args(annotation) if choice != value]
    if origin in (typing.Union, types.UnionType):
        return [alt for arg in typing.get_args(annotation) if arg is not type(None)
                for alt in _alternatives(value, arg)] + ([None] if value is not None else [])
    if annotation is bool:
        return [not value]
    if annotation is int:
        base = value if isinstance(value, int) else 1
        return [base + 1, base * 2, base * 2 + 3, base - 1, 1, 2]
    if annotation is float:
        base = value if isinstance(value, float | int) else 0.5
        return [base * 0.5, base * 1.5 + 0.01, base + 0.1, 0.5, 0.1, 0.9]
    if annotation is str:
        return [f"{value}x" if value else "x", "other"]
    if origin in (list, tuple) and isinstance(value, list | tuple):
        return [list(value)[:-1], [*value, *value[:1]], list(reversed(value))] if value else []
    if origin is dict and isinstance(value, dict):
        return [{k: v for k, v in list(value.items())[:-1]}] if value else []
    return []


def _changed_config(stage: str, field: str) -> dict[str, Any]:
    """Overrides for `stage` that change `field` alone, from the first alternative value the
    stage's config accepts."""
    config_cls = stage_module(stage).Config
    info = config_cls.model_fields[field]
    for context in ({}, CONTEXT.get(stage, {})):
        current = getattr(config_cls.for_scale(SCALE, context), field)
        for value in _alternatives(current, info.annotation):
            if value == current:
                continue
            try:
                config_cls.for_scale(SCALE, {**context, field: value})
            except InvalidInput:
                continue
            return {"context": context, "changed": {**context, field: value}}
    pytest.fail(f"no other valid value found for {stage}.{field} (current {current!r}); extend _alternatives")


CONFIG_FIELDS = [(stage, field) for stage in STAGE_NAMES for field in stage_module(stage).Config.model_fields]


@pytest.mark.parametrize(("stage", "field"), CONFIG_FIELDS, ids=[f"{s}.{f}" for s, f in CONFIG_FIELDS])
def test_every_config_field_changes_its_stage_and_downstream_keys(stage: str, field: str) -> None:
    change = _changed_config(stage, field)
    before = keys(stages={stage: change["context"]}) if change["context"] else keys()
    after = keys(stages={stage: change["changed"]})
    assert changed(before, after) == downstream(stage), f"{stage}.{field} -> {change['changed'][field]!r}"


SPEC_CHANGES: dict[str, dict[str, Any]] = {
    "model": {"model": "tiny"},
    "teacher": {"teacher": "tiny"},
    "judge": {"judge": "tiny"},
    "seed": {"seed": 7},
    "chat_prompts": {"chat_prompts": "other-prompts.jsonl"},
    "dtype": {"dtype": "float32"},
}


@pytest.mark.parametrize("field", sorted(SPEC_CHANGES))
def test_every_spec_field_changes_the_stages_that_use_it_and_downstream(field: str) -> None:
    users = [name for name in STAGE_NAMES if field in stage_module(name).USES]
    assert users, f"no stage uses {field}"
    expected = set().union(*(downstream(name) for name in users))
    assert changed(keys(), keys(**SPEC_CHANGES[field])) == expected


def test_every_spec_field_that_decides_output_is_used_by_some_stage() -> None:
    """A new RunSpec field is either in some stage's USES (and so in its key) or declared
    here as not deciding any output."""
    not_deciding = {"store", "stages", "scale", "endpoints", "constitution", "engine", "publish"}
    used = {f for name in STAGE_NAMES for f in stage_module(name).USES}
    assert set(RunSpec.model_fields) - not_deciding <= used


def _constitution_edits(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """One edited copy of the constitution per place a persona can change."""
    import copy

    edits = []
    edit = copy.deepcopy(doc)
    edit["description"] = doc.get("description", "") + " Edited."
    edits.append(("description", edit))
    for i, trait in enumerate(doc["traits"][:2]):
        edit = copy.deepcopy(doc)
        edit["traits"][i]["trait"] = trait["trait"] + " Always."
        edits.append((f"trait {i}", edit))
        if trait.get("questions"):
            edit = copy.deepcopy(doc)
            edit["traits"][i]["questions"][-1] += " Please?"
            edits.append((f"trait {i} question", edit))
            edit = copy.deepcopy(doc)
            edit["traits"][i]["questions"].append("A question nobody asked before?")
            edits.append((f"trait {i} new question", edit))
    edit = copy.deepcopy(doc)
    edit["traits"] = list(reversed(doc["traits"]))
    edits.append(("trait order", edit))
    edit = copy.deepcopy(doc)
    edit["traits"] = doc["traits"][:-1]
    edits.append(("trait removed", edit))
    return edits


def test_every_constitution_edit_changes_every_stage_that_reads_it_and_downstream(tmp_path: Path) -> None:
    """The persona is addressed by its content: a file edited under the same name and path
    gives new keys (else a changed persona would reuse the old persona's results)."""
    doc = resolve_constitution("sarcasm").model_dump(mode="json", exclude_defaults=True)
    path = tmp_path / "persona.yaml"
    path.write_text(yaml.safe_dump(doc))
    before = stage_keys(parse_spec({"constitution": str(path)}))
    users = [name for name in STAGE_NAMES if "constitution" in stage_module(name).USES]
    expected = set().union(*(downstream(name) for name in users))
    for what, edited in _constitution_edits(doc):
        path.write_text(yaml.safe_dump(edited))
        after = stage_keys(parse_spec({"constitution": str(path)}))
        assert changed(before, after) == expected, what


def test_the_same_constitution_inline_or_from_a_file_has_the_same_keys(tmp_path: Path) -> None:
    persona = resolve_constitution("sarcasm")
    path = tmp_path / "renamed-file.yaml"
    path.write_text(yaml.safe_dump(persona.model_dump(mode="json")))
    assert keys() == stage_keys(parse_spec({"constitution": str(path)}))
    assert keys() == stage_keys(parse_spec({"constitution": persona.model_dump(mode="json")}))


@pytest.mark.parametrize("role", ["teacher", "judge"])
def test_a_served_model_is_addressed_by_its_endpoint_not_its_name(role: str) -> None:
    """Pointing the same name at another server, or at another served model, is a new input."""
    users = [name for name in STAGE_NAMES if role in stage_module(name).USES]
    expected = set().union(*(downstream(name) for name in users))

    def served(**endpoint: Any) -> dict[str, str]:
        return keys(**{role: "big"}, endpoints={"big": {"base_url": "http://a:8000/v1", **endpoint}})

    first = served()
    assert changed(first, served(base_url="http://b:8000/v1")) == expected
    # under another name the same server serves another model (the name is the served model)
    renamed = keys(**{role: "other"}, endpoints={"other": {"base_url": "http://a:8000/v1"}})
    assert changed(first, renamed) == expected
    assert changed(first, served(served_model="other-model")) == expected
    assert changed(first, served(tokenizer="other/tokenizer")) == expected


def test_an_unresolved_spec_is_addressed_by_its_constitution_content(tmp_path: Path) -> None:
    """A spec built directly (not through parse_spec) names its persona by a path; its keys are
    still those of the persona's content."""
    doc = resolve_constitution("sarcasm").model_dump(mode="json")
    path = tmp_path / "persona.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert stage_keys(RunSpec(constitution=str(path))) == keys()
    doc["traits"][0]["trait"] += " Always."
    path.write_text(yaml.safe_dump(doc))
    assert changed(keys(), stage_keys(RunSpec(constitution=str(path)))) == set(STAGE_NAMES)


def test_an_unknown_stage_is_refused_with_the_known_ones() -> None:
    from character.errors import NotFound

    stages = "prompts, distill, dpo, introspect, sft, merge, eval"
    with pytest.raises(NotFound, match=rf"^unknown stage 'nope'; stages are: {stages}$"):
        stage_module("nope")
