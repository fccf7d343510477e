"""Every limit admission enforces, at its boundary: the value just inside is accepted, the value
just outside is refused, and the refusal names the field and says what would be accepted."""

from __future__ import annotations

import datetime
import json
from typing import Any, ClassVar

import pytest
from character.errors import InvalidInput
from character.models.endpoint import Endpoint
from character.platform import Limits, PlatformConfig
from character.security.admission import admit, check_knobs, knob_cap, load_spec_text
from pydantic import BaseModel, Field

PLATFORM = PlatformConfig(limits=Limits(max_seed=1000, max_questions=3))


def refusal(doc: dict[str, Any], platform: PlatformConfig = PLATFORM) -> InvalidInput:
    with pytest.raises(InvalidInput) as err:
        admit(doc, platform)
    return err.value


@pytest.mark.parametrize("seed", [0, 1, 999, 1000, 0.0, 1000.0])
def test_seeds_from_zero_to_max_seed_are_accepted(seed: float) -> None:
    assert admit({"constitution": "sarcasm", "seed": seed}, PLATFORM)["seed"] == seed


@pytest.mark.parametrize("seed", [-1, 1001, -0.5, 1000.5])
def test_seeds_outside_zero_to_max_seed_are_refused_with_the_range(seed: float) -> None:
    err = refusal({"constitution": "sarcasm", "seed": seed})
    assert err.where == "spec_yaml.seed"
    assert "between 0 and 1000" in str(err) and repr(seed) in str(err)


def _traits(questions: int) -> dict[str, Any]:
    return {"traits": [{"trait": "t", "questions": ["q"] * (questions - 1), "additional_questions": ["q"]}]}


def test_questions_up_to_max_questions_are_accepted() -> None:
    assert admit({"constitution": _traits(3)}, PLATFORM)["constitution"] == _traits(3)


def test_questions_over_max_questions_are_refused_with_the_maximum() -> None:
    err = refusal({"constitution": _traits(4)})
    assert err.where == "spec_yaml.constitution.traits"
    assert "4 questions" in str(err) and "at most 3" in str(err)


def test_a_spec_of_max_spec_bytes_is_read_and_one_byte_more_is_refused() -> None:
    limits = Limits(max_spec_bytes=1024)
    head = "constitution: sarcasm\n#"
    text = head + "x" * (1024 - len(head))
    assert load_spec_text(text, limits) == {"constitution": "sarcasm"}
    with pytest.raises(InvalidInput) as err:
        load_spec_text(text + "x", limits)
    assert err.value.where == "spec_yaml" and "1025 bytes; the limit is 1024" in str(err.value)


def test_an_empty_spec_is_refused_with_what_to_send() -> None:
    with pytest.raises(InvalidInput) as err:
        load_spec_text("  \n", Limits())
    assert str(err.value) == "spec_yaml: send the run spec as YAML (what `oct run --spec` reads)"


def test_a_spec_that_is_not_a_mapping_is_refused_as_a_run_spec() -> None:
    with pytest.raises(InvalidInput) as err:
        load_spec_text("- constitution\n", Limits())
    assert str(err.value) == "spec_yaml: a run spec is a mapping of keys to values"


def _traits_yaml(traits: int) -> str:
    return "constitution:\n  traits:\n" + "".join(f"  - trait: t{i}\n" for i in range(traits))


def test_max_traits_are_read_and_one_more_is_refused_at_its_line_naming_the_limit() -> None:
    limits = Limits(max_traits=2)
    assert load_spec_text(_traits_yaml(2), limits)["constitution"]["traits"] == [{"trait": "t0"}, {"trait": "t1"}]
    with pytest.raises(InvalidInput) as err:
        load_spec_text(_traits_yaml(3), limits, where="request.spec")
    assert err.value.where == "request.spec:5"  # the third trait's line
    assert str(err.value) == ("request.spec:5: more than 2 entries in constitution.traits: at most 2 are taken "
                              "(limits.max_traits of this platform's config)")


@pytest.mark.parametrize(("doc", "where", "says"), [
    ({"teacher": 3}, "spec_yaml.teacher", "give a model name"),
    ({"model": "/etc"}, "spec_yaml.model", "is not a model this platform offers"),
    ({"chat_prompts": "/etc/passwd"}, "spec_yaml.chat_prompts", "is not a chat prompt set this platform offers"),
    ({"endpoints": {}}, "spec_yaml.endpoints", "declared by the platform's operator"),
    ({"constitution": "nobody"}, "spec_yaml.constitution", "unknown persona 'nobody'"),
    ({"stages": {"eval": {"x": ["ok", "../up"]}}}, "spec_yaml.stages.eval.x[1]", "looks like a path or URI"),
    ({"stages": {"eval": {"x": {"y": "~/home"}}}}, "spec_yaml.stages.eval.x.y", "looks like a path or URI"),
    ({"stages": {"eval": {"x": "a\\b"}}}, "spec_yaml.stages.eval.x", "looks like a path or URI"),
    ({"stages": {"eval": {"x": ".hidden"}}}, "spec_yaml.stages.eval.x", "looks like a path or URI"),
    ({"stages": {"eval": {"x": "~root"}}}, "spec_yaml.stages.eval.x", "looks like a path or URI"),
    ({"model": "artifact://model/../etc"}, "spec_yaml.model", "is not a model this platform offers"),
    ({"model": "artifact://model/"}, "spec_yaml.model", "is not a model this platform offers"),
])
def test_each_refusal_names_its_field_and_says_what_is_wrong(doc: dict[str, Any], where: str, says: str) -> None:
    err = refusal(doc)
    assert err.where == where and says in str(err)


def test_refusals_of_a_field_say_what_is_accepted_instead() -> None:
    from character.constitution import persona_names
    from character.models.refs import BUNDLED

    models = ", ".join(sorted({*BUNDLED, "big"}))
    for doc, says in (
        ({"teacher": 3}, "spec_yaml.teacher: give a model name"),
        ({"constitution": "nobody"},
         f"spec_yaml.constitution: unknown persona 'nobody': name a bundled persona ({', '.join(persona_names())}) "
         "or put the constitution inline (`oct submit` inlines a local constitution file)"),
        ({"judge": "hub/model"},
         f"spec_yaml.judge: 'hub/model' is not a model this platform offers: name one of {models} or a stored "
         "model (artifact://model/<key>); paths, buckets and hub names are for `oct run` on your own machine, or "
         "ask the operator to register the model"),
        ({"stages": {"eval": {"x": "a/b"}}},
         "spec_yaml.stages.eval.x: 'a/b' looks like a path or URI; a remote spec cannot point stages at files, "
         "buckets or hub names"),
    ):
        assert str(refusal(doc, PlatformConfig(models={"big": "s3://p/big"}))) == says


def test_models_the_platform_stored_are_admitted_by_key() -> None:
    assert admit({"model": "artifact://model/run-1.distill"}, PLATFORM)["model"] == "artifact://model/run-1.distill"


class Knobs(BaseModel):
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "fast": {"steps": -30, "rate": [0.5, 2.0], "depth": 5, "nested": {"a": [7]}}, "slow": {}}
    steps: int = 20
    rate: float = 1.0
    depth: int = 50
    fraction: float = 0.5
    switch: bool = True
    nested: dict[str, list[int]] = {}
    unset: int = 0
    listed: list[int] = Field(default_factory=lambda: [10**6])


@pytest.mark.parametrize(("field", "cap"), [
    ("steps", 4 * 30.0),  # the largest magnitude of default and presets, negative ones included
    ("rate", 4 * 2.0),
    ("depth", 4 * 50.0),  # the default is a reference too
    ("fraction", 4 * 0.5),  # a reference below 1 still scales
    ("nested", 4 * 7.0),  # numbers inside mappings count
    ("switch", 10_000.0),  # a boolean is not a number
    ("unset", 10_000.0),  # nothing to scale: the default maximum
    ("listed", 10_000.0),  # a default built by a factory is not a reference
    ("absent", 10_000.0),
])
def test_a_knobs_maximum_scales_its_largest_default_or_preset(field: str, cap: float) -> None:
    assert knob_cap(Knobs, "s", field, Limits()) == cap


def test_an_operators_maximum_replaces_the_scaled_one() -> None:
    limits = Limits(knob_max={"s": {"steps": 7.0}})
    assert knob_cap(Knobs, "s", "steps", limits) == 7.0
    assert knob_cap(Knobs, "s", "rate", limits) == 8.0


def test_knobs_up_to_the_maximum_pass_and_beyond_it_are_refused_with_where_to_raise_it() -> None:
    limits = Limits(knob_max={"dpo": {"epochs": 5}})
    check_knobs({"dpo": {"epochs": 5}}, limits)
    check_knobs({"dpo": {"epochs": -5}}, limits)
    for value, says in ((6, ": 6.0 is over this platform's maximum of 5"), (-6, ": -6.0 is over"),
                        (10**400, "inf is not a finite number"), (float("nan"), "nan is not a finite number")):
        with pytest.raises(InvalidInput) as err:
            check_knobs({"dpo": {"epochs": value}}, limits)
        assert err.value.where == "spec_yaml.stages.dpo.epochs" and says in str(err.value)
    with pytest.raises(InvalidInput) as err:
        check_knobs({"dpo": {"epochs": 6}}, limits)
    assert str(err.value) == ("spec_yaml.stages.dpo.epochs: 6.0 is over this platform's maximum of 5 "
                              "(operators raise it in the platform config's limits.knob_max)")


@pytest.mark.parametrize(("value", "says"), [
    (2**1023, f"{float(2**1023)!r} is over"),  # the largest power of two a float holds
    (2**1024, "inf is not a finite number"),  # beyond every float
    (2**1024 - 1, "inf is not a finite number"),  # rounds up beyond every float
    ({"a": [1, {"b": 6}]}, "6.0 is over"),  # numbers nested in lists and mappings are capped too
])
def test_integers_beyond_floats_and_nested_numbers_are_capped(value: Any, says: str) -> None:
    with pytest.raises(InvalidInput) as err:
        check_knobs({"dpo": {"epochs": value}}, Limits(knob_max={"dpo": {"epochs": 5}}))
    assert err.value.where == "spec_yaml.stages.dpo.epochs" and f": {says}" in str(err.value)


def test_booleans_are_not_numbers_to_cap() -> None:
    check_knobs({"dpo": {"epochs": True}}, Limits(knob_max={"dpo": {"epochs": 0.5}}))


def test_long_values_are_shown_cut_to_sixty_characters() -> None:
    err = refusal({"model": "m" * 100})
    shown = str(err).removeprefix("spec_yaml.model: ").split(" is not a model")[0]
    assert shown == repr("m" * 100)[:57] + "..." and len(shown) == 60
    err = refusal({"model": "m" * 59})  # 61 characters shown: one too many
    assert str(err).startswith(f"spec_yaml.model: {repr('m' * 59)[:57]}... is not a model")
    err = refusal({"model": "m" * 58})
    assert str(err).startswith(f"spec_yaml.model: {'m' * 58!r} is not a model")


OFFERING = PlatformConfig(
    endpoints={"e2": Endpoint.model_validate({"base_url": "http://b:1/v1"}), "e1": Endpoint.model_validate({"base_url": "http://a:1/v1"})},
    chat_prompts={"wild": "s3://p/wild.jsonl", "chat": "s3://p/chat.jsonl"})


def test_refusals_list_what_the_platform_offers_instead() -> None:
    assert str(refusal({"endpoints": {}}, OFFERING)).endswith("name one as teacher or judge (e1, e2)")
    assert str(refusal({"endpoints": {}})).endswith("name one as teacher or judge (none are declared)")
    assert "'/x' is not a chat prompt set this platform offers (bundled, chat, wild); paths and URIs" in str(
        refusal({"chat_prompts": "/x"}, OFFERING))


def test_bundled_prompts_pass_and_every_named_endpoint_is_brought_in_as_json() -> None:
    doc = admit({"chat_prompts": "bundled", "teacher": "e1", "judge": "e2"}, OFFERING)
    assert doc["chat_prompts"] == "bundled"
    assert doc["endpoints"] == {name: OFFERING.endpoints[name].model_dump(mode="json") for name in ("e1", "e2")}


def test_an_endpoint_declared_in_yaml_is_brought_in_as_json_values() -> None:
    # the operator's YAML can hold values JSON has not (a date); the stored record is JSON
    platform = PlatformConfig(endpoints={"e": Endpoint.model_validate(
        {"base_url": "http://a:1/v1", "extra_body": {"since": datetime.date(2024, 1, 2)}})})
    doc = admit({"judge": "e"}, platform)
    assert doc["endpoints"]["e"]["extra_body"] == {"since": "2024-01-02"}
    assert json.loads(json.dumps(doc)) == doc


def test_the_student_cannot_be_an_endpoint_and_is_not_offered_one() -> None:
    err = refusal({"model": "e1"}, OFFERING)
    assert err.where == "spec_yaml.model" and "e1" not in str(err).split("name one of")[1].split(" or a stored")[0]
    assert "e1" in str(refusal({"teacher": "nope"}, OFFERING)).split("name one of")[1]
