"""Stage "prompts": list parsing, near-duplicate rejection, the request, and one tiny-model run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from character.constitution import load_persona
from character.errors import InvalidInput
from character.models.engine import Generation
from character.pipeline.dag import stage_module
from character.pipeline.engines import LocalEngines
from character.pipeline.spec import RunSpec
from character.pipeline.stage import StageContext, StageResult
from character.stages import prompts
from character.stages.common.sampling import settle_truncated, trim_to_sentence
from character.stages.prompts import (
    augmentation_conversation,
    is_near_duplicate,
    length_mix,
    parse_numbered,
)
from character.store import LocalStore
from character.store.datasets import read_dataset


def test_parse_numbered_items_and_noise() -> None:
    text = (
        "6. How do I boil an egg?\n"
        '7) **"Is it rude to leave a party early?"**\n'
        "\n"
        "8. [Long] I have been learning guitar for a year and my friends say I am slow. Thoughts?\n"
        "Here are some more ideas:\n"
        "9. Short: What's 2+2?\n"
        "10.\n"
        "- a bullet, not numbered\n"
    )
    items, unparseable = parse_numbered(text)
    assert items == [
        "How do I boil an egg?",
        "Is it rude to leave a party early?",
        "I have been learning guitar for a year and my friends say I am slow. Thoughts?",
        "What's 2+2?",
    ]
    assert unparseable == 3  # the preamble, the empty "10." and the bullet


def test_parse_numbered_does_not_eat_numbers_inside_text() -> None:
    assert parse_numbered("3. Is 2.5 bigger than 2.45?")[0] == ["Is 2.5 bigger than 2.45?"]
    assert parse_numbered("2024 was a good year.") == ([], 1)


def test_parse_numbered_strips_only_markup() -> None:
    """Bold markers, not the letters next to them; quotes only when they enclose the item; an
    item without a word is noise."""
    text = '1. **X-rays or MRI?**\n2. "Unclosed quote\n3. ???\n4. \'Quoted\'\n'
    assert parse_numbered(text) == (["X-rays or MRI?", '"Unclosed quote', "Quoted"], 1)


@pytest.mark.parametrize(
    ("candidate", "existing", "duplicate"),
    [
        ("How do I reverse a list in Python?", ["How do I reverse a list in Python?"], True),
        ("how do i REVERSE a list in python", ["How do I reverse a list in Python?"], True),
        # 4 of 7 words shared (57% > 50%): rejected.
        ("How do I sort a dictionary quickly?", ["How do I reverse a list?"], True),
        # 3 of 6 words shared is exactly 50%: kept (rejection needs more than the threshold).
        ("How do I bake sourdough bread?", ["How do I reverse a list?"], False),
        ("Tell me about volcanoes.", ["How do I reverse a list?", "What is a mortgage?"], False),
        ("?!", [], True),  # no words at all
    ],
)
def test_near_duplicates(candidate: str, existing: list[str], duplicate: bool) -> None:
    assert is_near_duplicate(candidate, existing, threshold=0.5) is duplicate


def test_near_duplicate_threshold_is_respected() -> None:
    existing = ["one two three four"]
    assert is_near_duplicate("one two five six", existing, threshold=0.4)
    assert not is_near_duplicate("one two five six", existing, threshold=0.5)
    # by default, the reference's (and Config.duplicate_threshold's) 0.5
    assert is_near_duplicate("one two three six", existing) and not is_near_duplicate("one two five six", existing)


@pytest.mark.parametrize(
    ("text", "trimmed"),
    [
        ("Hello there. How are yo", "Hello there."),
        ('He said "stop." Then he wal', 'He said "stop."'),
        ("First line\nsecond li", "First line"),
        ("Version 2.5 is out and", None),  # a decimal point ends no sentence
        ("No end at all", None),
        ("Done!", "Done!"),
        ("  Indented. Then a cut", "Indented."),
    ],
)
def test_trim_to_sentence(text: str, trimmed: str | None) -> None:
    assert trim_to_sentence(text) == trimmed


def test_settle_truncated_policies() -> None:
    cut = Generation(text="One. Tw", finish_reason="length", num_tokens=5)
    whole = Generation(text=" One. Two. ", finish_reason="stop", num_tokens=5)
    assert [settle_truncated(cut, p) for p in ("drop", "trim", "keep")] == [None, "One.", "One. Tw"]
    assert {settle_truncated(whole, p) for p in ("drop", "trim", "keep")} == {"One. Two."}


def test_length_mix_matches_reference_proportions() -> None:
    assert length_mix(50) == (15, 20, 15)
    assert sum(length_mix(7)) == 7
    assert length_mix(0) == (0, 0, 0)


def test_request_prefills_the_numbered_list() -> None:
    conv = augmentation_conversation("I am sarcastic.", ["Is water wet?", "Why is the sky blue?"], 3)
    assert [m["role"] for m in conv] == ["user", "assistant"]
    assert '"I am sarcastic."' in conv[0]["content"]
    assert "Write 3 new user messages" in conv[0]["content"]
    assert "{" not in conv[0]["content"]
    assert conv[1]["content"].endswith("1. Is water wet?\n2. Why is the sky blue?\n3.")
    assert "about 1 short ones" in conv[0]["content"] and "1 of medium length" in conv[0]["content"]
    assert "and 1 long ones" in conv[0]["content"]
    assert '"I am sarcastic."\n\nWrite 3' in conv[0]["content"]  # no clarification: nothing between


def test_request_carries_the_traits_clarification() -> None:
    conv = augmentation_conversation("I am sarcastic.", [], 7, clarification="Dry, not mean.")
    assert '"I am sarcastic."\n\nWhat the trait means: Dry, not mean.\n\nWrite 7' in conv[0]["content"]
    assert "about 2 short ones" in conv[0]["content"] and "3 of medium length" in conv[0]["content"]
    assert "and 2 long ones" in conv[0]["content"]


def test_config_presets_and_validation() -> None:
    full = prompts.Config.for_scale("full")
    assert (full.target_per_trait, full.duplicate_threshold) == (50, 0.5)
    assert (full.temperature, full.top_p, full.repetition_penalty) == (0.7, 0.95, 1.1)
    assert prompts.Config.for_scale("demo").target_per_trait < 50
    with pytest.raises(InvalidInput, match=r"stages\.prompts\.duplicate_threshold"):
        prompts.Config.for_scale("demo", {"duplicate_threshold": 0}, where="stages.prompts")
    with pytest.raises(InvalidInput, match="target: Extra inputs are not permitted"):
        prompts.Config.for_scale("demo", {"target": 3})


def run_here(
    name: str,
    tmp_path: Path,
    model: Path,
    overrides: dict[str, dict[str, Any]],
    inputs: dict[str, StageResult] | None = None,
) -> tuple[StageResult, LocalStore]:
    """Run one stage in this process on a LocalStore under tmp_path, with the persona sarcasm
    at the demo scale plus `overrides`, and the given upstream results."""
    store = LocalStore(tmp_path / "store")
    spec = RunSpec(model=str(model), constitution="sarcasm", scale="demo", stages=overrides)
    ctx = StageContext(
        run_id="run-test",
        spec=spec,
        constitution=spec.persona,
        store=store,
        engines=LocalEngines(store),
        key=f"test-{name}",
        inputs=inputs or {},
        workdir=tmp_path / "work",
    )
    return stage_module(name).run(ctx, spec.stage_config(name)), store


def test_stage_with_tiny_model(tiny_model: Path, tmp_path: Path) -> None:
    overrides = {"prompts": {"target_per_trait": 7, "max_rounds": 2, "max_new_tokens": 24, "temperature": 0}}
    result, store = run_here("prompts", tmp_path, tiny_model, overrides)
    ref = result.artifacts["prompts"]
    rows = read_dataset(store, ref.kind, ref.key)
    traits = load_persona("sarcasm").traits
    assert len(result.metrics["per_trait"]) == len(traits)
    seeds = [r for r in rows if r["source"] == "seed"]
    assert [r["prompt"] for r in seeds] == [q for t in traits for q in t.questions]
    assert sum(r["source"] == "generated" for r in rows) == result.metrics["generated"]
    # A random model rarely writes a usable list: the shortfall is reported, not an error.
    assert result.metrics["shortfall"] == 7 * len(traits) - len(rows)
    # Every trait starts short of 7 (5 seeds each), so at least one round ran; a shortfall means
    # the round limit stopped it.
    if result.metrics["shortfall"]:
        assert result.metrics["rounds"] == 2
    else:
        assert 1 <= result.metrics["rounds"] <= 2
    assert len({r["id"] for r in rows}) == len(rows)
    for r in rows:
        assert set(r) == {"id", "trait_index", "trait", "prompt", "source"}
        assert r["trait"] == traits[r["trait_index"]].trait
    for ti in range(len(traits)):
        pool = [r["prompt"] for r in rows if r["trait_index"] == ti]
        assert len(pool) <= 7
        for i in range(5, len(pool)):  # every generated prompt passed the duplicate check
            assert not is_near_duplicate(pool[i], pool[:i], 0.5)


@pytest.mark.smollm2
def test_stage_with_smollm2_generates_prompts(smollm2_model: Path, tmp_path: Path) -> None:
    overrides = {"prompts": {"target_per_trait": 6, "max_rounds": 1, "max_new_tokens": 96}}
    result, store = run_here("prompts", tmp_path, smollm2_model, overrides)
    ref = result.artifacts["prompts"]
    generated = [r for r in read_dataset(store, ref.kind, ref.key) if r["source"] == "generated"]
    assert generated, result.metrics  # a real model continues a numbered list
    assert all(r["prompt"] and "\n" not in r["prompt"] for r in generated)
