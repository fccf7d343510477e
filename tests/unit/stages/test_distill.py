"""Stage "distill": reasoning cut, pair filters, the prompt split, the teacher's system prompt,
and one tiny-model run."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from character.constitution import load_persona
from character.data.chat_prompts import load_chat_prompts
from character.errors import CharacterError, InvalidInput
from character.models.engine import Generation
from character.models.loading import load_tokenizer
from character.pipeline.engines import LocalEngines
from character.pipeline.spec import RunSpec
from character.pipeline.stage import StageContext, StageResult
from character.stages import distill
from character.stages.common.system_prompt import system_prompt
from character.stages.distill import (
    Prompt,
    cut_reasoning,
    model_family_name,
    pair_answers,
    pair_lengths,
    split_by_prompt,
    spread_sample,
)
from character.store import LocalStore
from character.store.base import Store
from character.store.datasets import read_dataset, write_dataset
from character.store.s3 import S3Store

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


def _candidates(tmp_path: Path, constitution: list[dict[str, Any]], chat: list[dict[str, Any]],
                store: Store | None = None, **config: Any) -> tuple[list[Prompt], int]:
    """distill's prompt list (no model needed) from an upstream prompts dataset and a chat
    prompt file (in the store when it is an S3 one, else local), at seed 7 (not the library's
    default seed)."""
    store = store or LocalStore(tmp_path / "store")
    ref = write_dataset(store, "dataset", "fake-prompts", constitution)
    lines = "".join(json.dumps(r) + "\n" for r in chat).encode()
    if isinstance(store, S3Store):
        store._put_bytes("sources/chat.jsonl", lines)
        source = f"s3://{store.bucket}/{store._name('sources/chat.jsonl')}"
    else:
        (tmp_path / "chat.jsonl").write_bytes(lines)
        source = str(tmp_path / "chat.jsonl")
    spec = RunSpec(model="tiny", constitution="sarcasm", seed=7, chat_prompts=source)
    ctx = StageContext(run_id="run-test", spec=spec, constitution=spec.persona, store=store,
                       engines=LocalEngines(store), key="test-distill",
                       inputs={"prompts": StageResult(stage="prompts", key="fake", artifacts={"prompts": ref})},
                       workdir=tmp_path / "work")
    return distill._prompts(ctx, distill.Config.for_scale("demo", config))


def test_prompt_list_is_the_seeded_constitution_sample_then_the_seeded_chat_draw(tmp_path: Path) -> None:
    constitution: list[dict[str, Any]] = [
        {"id": i, "prompt": f"Trait {i % 3} question {i}?", "trait_index": i % 3} for i in range(12)
    ]
    chat = [{"id": f"lima-{i}", "prompt": f"Chat prompt {i}"} for i in range(10)]
    prompts, repeats = _candidates(tmp_path, constitution, chat, constitution_prompts=6, chat_prompts=3)
    every = [Prompt(str(r["id"]), str(r["prompt"]), "constitution", int(r["trait_index"])) for r in constitution]
    drawn = load_chat_prompts(str(tmp_path / "chat.jsonl"), limit=3, seed=7)
    assert prompts == spread_sample(every, 6, seed=7) + [Prompt(p.id, p.prompt, "chat", None) for p in drawn]
    assert repeats == 0
    one, _ = _candidates(tmp_path / "one", constitution, chat, constitution_prompts=0, chat_prompts=1)
    (first,) = load_chat_prompts(str(tmp_path / "chat.jsonl"), limit=1, seed=7)
    assert [(p.id, p.source) for p in one] == [(first.id, "chat")]
    none, _ = _candidates(tmp_path / "none", constitution, chat, constitution_prompts=0, chat_prompts=0)
    assert none == []


@pytest.mark.s3
def test_an_s3_chat_prompt_file_is_read_through_the_runs_store(
    s3_env: object, s3_store: S3Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the run's store's endpoint and credentials, whatever the environment says."""
    monkeypatch.setenv("OCT_S3_SECRET_KEY", "not-the-secret")
    chat = [{"id": "x", "prompt": "Hello from S3"}]
    prompts, _ = _candidates(tmp_path, [], chat, store=s3_store, constitution_prompts=None, chat_prompts=1)
    assert prompts == [Prompt("x", "Hello from S3", "chat", None)]


def test_a_repeated_prompt_is_asked_once(tmp_path: Path) -> None:
    """Repeats differ only in case and spacing; different spellings are different prompts."""
    constitution = [
        {"id": "c0", "prompt": "Is  water WET?", "trait_index": 0},
        {"id": "c1", "prompt": "Straße or street?", "trait_index": 1},
        {"id": "c2", "prompt": "STRASSE or street?", "trait_index": 1},
    ]
    chat = [{"id": "x", "prompt": "is water wet?"}, {"id": "y", "prompt": "Something else"}]
    prompts, repeats = _candidates(tmp_path, constitution, chat, constitution_prompts=None, chat_prompts=2)
    assert [p.id for p in prompts] == ["c0", "c1", "c2", "y"] and repeats == 1


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
