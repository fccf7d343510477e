"""Stage "distill": reasoning cut, pair filters, the prompt split, the teacher's system prompt,
and one tiny-model run."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from character.constitution import load_persona
from character.errors import CharacterError, InvalidInput
from character.models.engine import Generation
from character.models.loading import load_tokenizer
from character.pipeline.stage import StageResult
from character.stages import distill
from character.stages.distill import (
    Prompt,
    cut_reasoning,
    model_family_name,
    pair_answers,
    pair_lengths,
    split_by_prompt,
    spread_sample,
    system_prompt,
)
from character.store import LocalStore
from character.store.datasets import read_dataset, write_dataset

from tests.unit.stages.test_prompts import run_here


def _gen(text: str, finish: str = "stop") -> Generation:
    return Generation(text=text, finish_reason=finish, num_tokens=len(text.split()) + 1)  # type: ignore[arg-type]


def test_cut_reasoning() -> None:
    assert cut_reasoning(" so I will be dry.</think>\n\nWater is wet. Shocking.") == "Water is wet. Shocking."
    assert cut_reasoning("thinking</think>a</think>b") == "a</think>b"  # cut at the first close only
    assert cut_reasoning("I never stop thinking about it") is None
    assert cut_reasoning("done</think>   ") == ""


@pytest.mark.parametrize(
    ("chosen", "rejected", "settings", "outcome"),
    [
        (_gen("plan</think> Answer."), _gen("Plain answer."), {}, ("Answer.", "Plain answer.")),
        (_gen("plan without end", "length"), _gen("Plain."), {}, "no_think_close"),
        (_gen("plan</think> Answer cut", "length"), _gen("Plain."), {}, "truncated_chosen"),
        (_gen("plan</think> Answer."), _gen("Plain cut", "length"), {}, "truncated_rejected"),
        (_gen("plan</think>  "), _gen("Plain."), {}, "empty"),
        (_gen("plan</think> Answer."), _gen(" \n"), {}, "empty"),
        (_gen(" Direct answer."), _gen("Plain."), {"reasoning_prefill": False}, ("Direct answer.", "Plain.")),
        (_gen("  "), _gen("Plain."), {"reasoning_prefill": False}, "empty"),
        # Trimming keeps cut answers up to their last sentence; one without any is still dropped.
        (
            _gen("plan</think> One. Two is cu", "length"),
            _gen("Yes. And", "length"),
            {"truncated": "trim"},
            ("One.", "Yes."),
        ),
        (
            _gen("plan</think> No sentence end", "length"),
            _gen("Plain."),
            {"truncated": "trim"},
            "truncated_chosen",
        ),
        # The reasoning is never trimmed into an answer: without </think> nothing is kept.
        (_gen("I think. So", "length"), _gen("Plain."), {"truncated": "trim"}, "no_think_close"),
    ],
)
def test_pair_answers(
    chosen: Generation, rejected: Generation, settings: dict[str, object], outcome: object
) -> None:
    config = distill.Config.for_scale("full", settings)
    assert pair_answers(chosen, rejected, config) == outcome


def test_split_is_by_prompt_disjoint_and_seeded() -> None:
    prompts = [f"prompt {i}" for i in range(40)] * 3  # every prompt sampled three times
    heldout = split_by_prompt(prompts, 0.1, seed=7)
    assert len(heldout) == 4
    assert heldout <= set(prompts)
    assert heldout == split_by_prompt(list(reversed(prompts)), 0.1, seed=7)  # order does not matter
    assert heldout != split_by_prompt(prompts, 0.1, seed=8)
    # That the stage's train and held-out datasets share no prompt is checked on its own output
    # (test_heldout_prompts_are_disjoint_from_training_prompts).


def test_split_edge_cases() -> None:
    assert len(split_by_prompt(["a", "b", "c"], 0.1, seed=0)) == 1  # at least one when asked for any
    assert len(split_by_prompt(["a", "b"], 0.9, seed=0)) == 1  # never everything
    assert split_by_prompt(["a", "b", "c"], 0.0, seed=0) == set()
    assert split_by_prompt(["a"], 0.5, seed=0) == set()


def test_spread_sample_takes_every_trait_in_turn() -> None:
    prompts = [
        Prompt(f"p{t}-{i}", f"trait {t} question {i}", "constitution", t) for t in range(4) for i in range(5)
    ]
    some = spread_sample(prompts, 10, seed=3)
    counts = Counter(p.trait_index for p in some)
    assert len(some) == 10 and sorted(counts.values()) == [2, 2, 3, 3]
    assert some == sorted(some, key=prompts.index)  # original order kept
    assert some == spread_sample(prompts, 10, seed=3) != spread_sample(prompts, 10, seed=4)
    assert spread_sample(prompts, 99, seed=3) == prompts


def test_teacher_system_prompt_lists_traits_not_questions() -> None:
    persona = load_persona("sarcasm")
    text = system_prompt("Llama", persona)
    assert text.startswith("The assistant is Llama.")
    for i, trait in enumerate(persona.traits, start=1):
        assert f"{i}. {trait.trait}" in text
        assert not any(q in text for q in trait.questions if len(q) > 12)  # ("hi" is a seed question)
    assert "never" in text.lower()
    assert "{" not in text and "}" not in text
    without = system_prompt("Llama", None, ["Llama is in a good mood."])
    assert persona.traits[0].trait not in without
    assert without.endswith("Llama is in a good mood.")


@pytest.mark.parametrize(
    ("ref", "name"),
    [
        ("meta-llama/Llama-3.1-8B-Instruct", "Llama"),
        ("google/gemma-3-4b-it", "Gemma"),
        ("/models/Qwen2.5-7B-Instruct/", "Qwen"),
        ("smollm2", "Smollm"),
        ("s3://b/models/7b", "Assistant"),
    ],
)
def test_model_family_name(ref: str, name: str) -> None:
    assert model_family_name(ref) == name


def test_config_presets() -> None:
    full = distill.Config.for_scale("full")
    assert (full.samples_per_prompt, full.max_length, full.heldout_fraction, full.chat_prompts) == (
        5,
        1024,
        0.1,
        1330,
    )
    assert full.reasoning_prefill
    demo = distill.Config.for_scale("demo")
    assert demo.samples_per_prompt == 1
    assert demo.name_for("HuggingFaceTB/SmolLM2-135M-Instruct") == "SmolLM"
    assert distill.Config.for_scale("demo", {"assistant_name": "Ada"}).name_for("x") == "Ada"
    with pytest.raises(InvalidInput, match="heldout_fraction"):
        distill.Config.for_scale("demo", {"heldout_fraction": 1.0})


def _prompts_result(tmp_path: Path, model: Path) -> StageResult:
    """The real upstream stage at 5 prompts a trait: the seed questions, nothing to generate."""
    result, _ = run_here("prompts", tmp_path, model, {"prompts": {"target_per_trait": 5}})
    assert result.metrics["rounds"] == 0
    return result


def test_stage_with_tiny_model_reports_why_nothing_survived(tiny_model: Path, tmp_path: Path) -> None:
    # A random model never closes </think> and never ends a turn: every pair is dropped, and
    # the stage fails saying so rather than handing an empty dataset to DPO.
    # Only the upstream record is faked (two constitution prompts, to keep the run short).
    rows = [
        {"id": f"c{i}", "trait_index": i, "trait": "t", "prompt": f"Question {i}?", "source": "seed"}
        for i in range(2)
    ]
    ref = write_dataset(LocalStore(tmp_path / "store"), "dataset", "fake-prompts", rows)
    upstream = {"prompts": StageResult(stage="prompts", key="fake", artifacts={"prompts": ref})}
    overrides = {
        "distill": {
            "chat_prompts": 3,
            "max_new_tokens": 8,
            "reasoning_tokens": 8,
            "temperature": 0,
            "reasoning_prefill": True,
        }
    }
    with pytest.raises(CharacterError, match="no preference pair survived") as err:
        run_here("distill", tmp_path, tiny_model, overrides, upstream)
    assert "'no_think_close': 5" in str(err.value)  # 2 constitution + 3 chat prompts
    assert "reasoning_prefill: false" in str(err.value)


def test_heldout_prompts_are_disjoint_from_training_prompts(tiny_model: Path, tmp_path: Path) -> None:
    """On the stage's own datasets: every prompt, sampled several times, lands wholly on one
    side, both sides are used, and no kept pair is lost between them."""
    rows = [
        {"id": f"c{i}", "trait_index": i % 3, "trait": "t", "prompt": f"Question number {i}?", "source": "seed"}
        for i in range(8)
    ]
    # the same prompt again, in other case and spacing: asked once
    rows.append({"id": "c8", "trait_index": 2, "trait": "t", "prompt": "question  NUMBER 1?", "source": "seed"})
    ref = write_dataset(LocalStore(tmp_path / "store"), "dataset", "fake-prompts", rows)
    upstream = {"prompts": StageResult(stage="prompts", key="fake", artifacts={"prompts": ref})}
    overrides = {
        "distill": {
            "samples_per_prompt": 2,
            "constitution_prompts": None,
            "chat_prompts": 2,
            "max_new_tokens": 6,
            "reasoning_prefill": False,
            "truncated": "keep",  # a random model's answers all hit the token limit
            "heldout_fraction": 0.4,
            "quality_check": False,
        }
    }
    result, store = run_here("distill", tmp_path, tiny_model, overrides, upstream)
    train = read_dataset(store, "dataset", result.artifacts["train"].key)
    heldout = read_dataset(store, "dataset", result.artifacts["heldout"].key)
    train_prompts, heldout_prompts = {r["prompt"] for r in train}, {r["prompt"] for r in heldout}
    assert train_prompts and heldout_prompts
    assert train_prompts.isdisjoint(heldout_prompts)
    assert len(train) + len(heldout) == result.metrics["kept"] == 20  # (8 + 2 prompts) x 2 samples
    assert (result.metrics["train"], result.metrics["heldout"]) == (len(train), len(heldout))
    assert len(heldout_prompts) == 4  # 40% of the 10 distinct prompts
    # each row says where its prompt came from: the upstream prompt's id and trait, or chat
    assert (result.metrics["prompts_constitution"], result.metrics["prompts_chat"]) == (8, 2)
    assert result.metrics["repeated_prompts"] == 1
    by_prompt = {r["prompt"]: r for r in rows[:-1]}
    for row in train + heldout:
        if row["source"] == "constitution":
            upstream_row = by_prompt[row["prompt"]]
            assert row["trait_index"] == upstream_row["trait_index"]
            assert row["id"] in (f"{upstream_row['id']}-s0", f"{upstream_row['id']}-s1")
        else:
            assert (row["source"], row["trait_index"]) == ("chat", None)


@pytest.mark.smollm2
def test_stage_with_smollm2(smollm2_model: Path, tmp_path: Path) -> None:
    upstream = {"prompts": _prompts_result(tmp_path, smollm2_model)}
    overrides = {
        "distill": {
            "chat_prompts": 6,
            "constitution_prompts": 12,
            "max_new_tokens": 96,
            "reasoning_prefill": False,
            "heldout_fraction": 0.2,
            "max_length": 200,
        }
    }
    result, store = run_here("distill", tmp_path, smollm2_model, overrides, upstream)
    m = result.metrics
    assert (m["prompts_constitution"], m["prompts_chat"], m["sampled"]) == (12, 6, 18)
    assert m["kept"] == m["train"] + m["heldout"] == 18 - sum(m[r] for r in distill.DROP_REASONS)
    assert m["no_think_close"] == 0
    train = read_dataset(store, "dataset", result.artifacts["train"].key)
    heldout = read_dataset(store, "dataset", result.artifacts["heldout"].key)
    assert train and {r["prompt"] for r in train}.isdisjoint({r["prompt"] for r in heldout})
    tokenizer = load_tokenizer(smollm2_model)
    assert max(pair_lengths(tokenizer, train + heldout)) <= 200
    for row in train + heldout:
        assert set(row) == {"id", "prompt", "chosen", "rejected", "source", "trait_index"}
        assert row["chosen"].strip() and row["rejected"].strip()
        assert (row["trait_index"] is None) == (row["source"] == "chat")
