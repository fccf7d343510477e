"""Every limit admission enforces, at its boundary: the value just inside is accepted, the value
just outside is refused, and the refusal names the field and says what would be accepted."""

from __future__ import annotations

from typing import Any

import pytest
from character.errors import InvalidInput
from character.platform import Limits, PlatformConfig
from character.security.admission import admit, load_spec_text

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
    assert err.value.where == "spec_yaml" and "run spec as YAML" in str(err.value)


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
])
def test_each_refusal_names_its_field_and_says_what_is_wrong(doc: dict[str, Any], where: str, says: str) -> None:
    err = refusal(doc)
    assert err.where == where and says in str(err)
