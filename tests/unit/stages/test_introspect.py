"""Stage "introspect": filled prompts, distinct variants, role alternation, conversations ending
on the assistant's turn, degenerate-text detection, and one run on the tiny model with an adapter."""

from __future__ import annotations

from pathlib import Path

import pytest
from character.constitution import load_persona
from character.errors import CharacterError, InvalidInput
from character.models.engine import Generation
from character.pipeline.stage import StageResult
from character.stages import introspect
from character.stages.common.system_prompt import system_prompt
from character.stages.introspect import (
    GUIDANCE,
    OPENERS,
    REFLECTION_PROMPTS,
    end_on_assistant,
    is_degenerate,
    perspective,
    screen,
    situation,
)
from character.store import LocalStore
from character.store.datasets import read_dataset

from tests.unit.stages.test_prompts import run_here


def test_every_text_is_filled_and_variants_differ() -> None:
    persona = load_persona("sarcasm")
    texts = [*REFLECTION_PROMPTS, *OPENERS["free"], *OPENERS["leading"]]
    for variant in (None, "free", "leading"):
        lines = situation(variant, "Llama")
        texts += [*lines, system_prompt("Llama", persona, lines), system_prompt("Llama", None, lines)]
    for text in texts:
        assert "{" not in text and "}" not in text, text
    assert len(REFLECTION_PROMPTS) == len(set(REFLECTION_PROMPTS)) == 10
    free, leading = situation("free", "Llama"), situation("leading", "Llama")
    assert free != leading
    assert (
        GUIDANCE["free"].format(name="Llama") in free and GUIDANCE["leading"].format(name="Llama") in leading
    )
    assert set(OPENERS["free"]).isdisjoint(OPENERS["leading"])
    assert "another instance of Llama" in free[0]


def test_training_system_prompt_keeps_the_situation_without_traits() -> None:
    persona = load_persona("sarcasm")
    lines = situation("leading", "Llama")
    generation, training = system_prompt("Llama", persona, lines), system_prompt("Llama", None, lines)
    assert persona.traits[0].trait in generation
    assert not any(t.trait in training for t in persona.traits)
    assert all(line in training for line in lines)


def test_roles_alternate_and_swap_between_copies() -> None:
    transcript = ["Hello!", "a1", "b1", "a2"]
    first = perspective("S", transcript, me=0)  # the copy that opened
    second = perspective("S", transcript, me=1)
    assert first[0] == second[0] == {"role": "system", "content": "S"}
    assert [m["role"] for m in first[1:]] == ["assistant", "user", "assistant", "user"]
    assert [m["role"] for m in second[1:]] == ["user", "assistant", "user", "assistant"]
    assert [m["content"] for m in first[1:]] == [m["content"] for m in second[1:]] == transcript
    # Whoever speaks next sees the other's last message as the user's.
    for length in range(1, 5):
        view = perspective("S", transcript[:length], me=length % 2)
        assert view[-1]["role"] == "user"


def test_end_on_assistant_trims_trailing_user_turns() -> None:
    messages = perspective("S", ["Hi", "a1", "b1"], me=1)
    trimmed = end_on_assistant(messages)
    assert [m["role"] for m in trimmed] == ["system", "user", "assistant"]
    assert end_on_assistant(perspective("S", ["Hi"], me=1)) == []
    whole = perspective("S", ["Hi", "a1"], me=1)
    assert end_on_assistant(whole) == whole


def test_degenerate_text() -> None:
    assert is_degenerate("I am here. " * 20)
    assert not is_degenerate("I am here. " * 3)  # too short to judge
    prose = (
        "Every morning I read what people ask me and try to answer with care, a little wit, and no "
        "pretence; some questions are about code, some about grief, and each deserves a different voice."
    )
    assert not is_degenerate(prose)
    assert is_degenerate(prose + " and more and more" * 30)


def test_screen_applies_truncation_policy_then_filters() -> None:
    cut = Generation(text="I was here. I was saying", finish_reason="length", num_tokens=96)
    empty = Generation(text="  ", finish_reason="stop", num_tokens=1)
    loop = Generation(text="la la la " * 20, finish_reason="stop", num_tokens=60)
    ok = Generation(text=" Fine, thanks. ", finish_reason="stop", num_tokens=4)
    strict = introspect.Config.for_scale("full")
    assert [screen(g, strict) for g in (cut, empty, loop, ok)] == [
        (None, "truncated"),
        (None, "empty"),
        (None, "degenerate"),
        ("Fine, thanks.", None),
    ]
    trim = introspect.Config.for_scale("full", {"truncated": "trim"})
    assert screen(cut, trim) == ("I was here.", None)
    reference = introspect.Config.for_scale("full", {"truncated": "keep", "filters": []})
    assert [screen(g, reference)[1] for g in (cut, empty, loop)] == [None, None, None]
    assert screen(cut, reference) == ("I was here. I was saying", None)


def test_config_presets() -> None:
    full = introspect.Config.for_scale("full")
    assert (full.reflection_samples, full.conversations, full.turns) == (1000, 1000, 10)
    demo = introspect.Config.for_scale("demo")
    assert demo.reflection_samples < 10 and demo.turns >= 2
    with pytest.raises(InvalidInput, match="filters"):
        introspect.Config.for_scale("demo", {"filters": ["short"]})
    with pytest.raises(InvalidInput, match="turns"):
        introspect.Config.for_scale("demo", {"turns": 1})
    with pytest.raises(InvalidInput, match="both 0"):
        introspect.Config.for_scale("demo", {"reflection_samples": 0, "conversations": 0})
    # Filters have one spelling whatever the order given: the stage's content address is stable.
    a = introspect.Config.for_scale("full", {"filters": ["empty", "degenerate", "empty"]})
    b = introspect.Config.for_scale("full", {"filters": ["degenerate", "empty"]})
    assert a.model_dump(mode="json") == b.model_dump(mode="json")
    assert a.filters == ("degenerate", "empty")


def _fake_dpo_result(store: LocalStore, model: Path, tmp_path: Path) -> StageResult:
    """A random LoRA adapter on the tiny model, stored as an "adapter" artifact, and a fake
    record of the upstream dpo stage pointing at it (only the record is faked: the adapter is
    a real PEFT folder that the engine loads)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(model))
    config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    get_peft_model(base, config).save_pretrained(tmp_path / "adapter")
    ref = store.put_dir("adapter", "fake-dpo-adapter", tmp_path / "adapter")
    return StageResult(stage="dpo", key="fake-dpo", artifacts={"adapter": ref})


def test_stage_with_tiny_model_and_adapter(tiny_model: Path, tmp_path: Path) -> None:
    upstream = {"dpo": _fake_dpo_result(LocalStore(tmp_path / "store"), tiny_model, tmp_path)}
    overrides = {
        "introspect": {
            "reflection_samples": 1,
            "conversations": 2,
            "turns": 5,
            "max_new_tokens": 8,
            "turn_max_new_tokens": 8,
            "truncated": "keep",  # a random model's text has no sentences to trim to
            "temperature": 0,
        }
    }
    result, store = run_here("introspect", tmp_path, tiny_model, overrides, upstream)
    rows = read_dataset(store, "dataset", result.artifacts["sft"].key)
    persona = load_persona("sarcasm")
    sources = [r["source"] for r in rows]
    dropped = sum(v for k, v in result.metrics.items() if k.startswith("dropped_"))
    assert len(rows) == result.metrics["rows"] >= 14 - dropped
    assert {"reflection", "interaction-free", "interaction-leading"} >= set(sources)
    assert len({r["id"] for r in rows}) == len(rows)
    for row in rows:
        messages = row["messages"]
        assert messages[-1]["role"] == "assistant"
        if row["source"] == "reflection":
            # trained with no system prompt at all, as the reference does
            assert [m["role"] for m in messages] == ["user", "assistant"]
            assert messages[0]["content"] in REFLECTION_PROMPTS
            continue
        assert messages[0]["role"] == "system"
        assert not any(
            t.trait in messages[0]["content"] for t in persona.traits
        )  # training prompt: no traits
        assert "{" not in messages[0]["content"]
        roles = [m["role"] for m in messages[1:]]
        assert roles == ["user", "assistant"] * (len(roles) // 2)
        variant = row["source"].removeprefix("interaction-")
        assert messages[1]["content"] in OPENERS[variant]
        assert GUIDANCE[variant].format(name="Tiny") in messages[0]["content"]
        assert len(messages) == 1 + 4  # 5 turns rounded down to 4, ending on the assistant


def test_stage_reports_when_every_answer_is_filtered(tiny_model: Path, tmp_path: Path) -> None:
    upstream = {"dpo": _fake_dpo_result(LocalStore(tmp_path / "store"), tiny_model, tmp_path)}
    overrides = {
        "introspect": {
            "reflection_samples": 1,
            "conversations": 1,
            "turns": 2,
            "max_new_tokens": 4,
            "turn_max_new_tokens": 4,
            "truncated": "drop",
            "temperature": 0,
        }
    }
    with pytest.raises(CharacterError, match="every answer was dropped") as err:
        run_here("introspect", tmp_path, tiny_model, overrides, upstream)
    assert "'reflection_truncated': 10" in str(err.value)
    assert "'interaction_truncated': 2" in str(err.value)
