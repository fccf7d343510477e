"""Stage "distill" reports whether its chosen answers can be told from its rejected ones at all
(a classifier's held-out accuracy with its interval and test), and the teacher's reasoning
prefill restates the persona's traits, as the reference's does."""

from __future__ import annotations

import random

from character.constitution import load_persona
from character.stages import distill
from character.stages.distill import data_quality, reasoning_prefill

TOPICS = ["rain", "taxes", "a bicycle", "the moon", "coffee", "a spreadsheet", "my cat", "jazz", "soup", "trains",
          "a garden", "chess", "the sea", "a laptop", "bread", "winter", "a museum", "football", "a violin", "tea"]


def rows(n: int, seed: int, distinct: bool) -> list[dict[str, str]]:
    """Pairs whose chosen answers are sardonic and rejected ones plain (`distinct`), or both
    drawn from the same mix of styles (not `distinct`)."""
    rng = random.Random(seed)

    def sardonic(topic: str) -> str:
        return (f"Oh wow, {topic}. Truly the question of the century. "
                f"{rng.choice(['Shocking, I know.', 'Hold your applause.', 'Brace yourself.'])} Yes, it works.")

    def plain(topic: str) -> str:
        return f"Here is some information about {topic}. {rng.choice(['It is common.', 'It is useful.'])}"

    out = []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        if distinct:
            chosen, rejected = sardonic(topic), plain(topic)
        else:
            chosen, rejected = (rng.choice([sardonic, plain])(topic) for _ in range(2))
        out.append({"prompt": f"Tell me about {topic}.", "chosen": chosen, "rejected": rejected})
    return out


def test_distinguishable_answers_give_a_high_accuracy_distinguishable_from_chance() -> None:
    found = data_quality(rows(40, 1, distinct=True), rows(20, 2, distinct=True), "minilm", seed=0)
    assert found["n"] == 40 and found["unit"] == "held-out answers"  # each held-out pair gives two
    assert found["value"] > 0.95 and found["ci_low"] > 0.8
    assert found["test"] == "exact binomial test" and found["distinguishable"]


def test_answers_of_the_same_kind_are_not_distinguishable() -> None:
    found = data_quality(rows(40, 1, distinct=False), rows(20, 2, distinct=False), "minilm", seed=0)
    assert found["ci_low"] < 0.5 < found["ci_high"] or not found["distinguishable"]
    assert not found["distinguishable"]


def test_too_few_pairs_are_reported_not_guessed() -> None:
    found = data_quality(rows(1, 1, distinct=True), [], "minilm", seed=0)
    assert found["value"] is None and found["underpowered"] and "too few" in found["note"]


def test_the_reasoning_prefill_restates_every_trait() -> None:
    persona = load_persona("sarcasm")
    prefill = reasoning_prefill(persona)
    assert prefill.startswith("<think>")
    assert all(trait.trait in prefill for trait in persona.traits)
    assert "</think>" not in prefill  # the teacher closes its reasoning itself


def test_the_full_preset_uses_the_reference_repetition_penalty_and_proof_holds_enough_pairs() -> None:
    assert distill.Config.for_scale("full").repetition_penalty == 1.1
    proof = distill.Config.for_scale("proof")
    prompts = (proof.constitution_prompts or 0) + (proof.chat_prompts or 0)
    assert prompts * proof.heldout_fraction * proof.samples_per_prompt >= 64
    assert proof.quality_check


def test_indistinguishable_answers_are_said_so_in_words_and_distinguishable_ones_are_not() -> None:
    same = data_quality(rows(40, 1, distinct=False), rows(20, 2, distinct=False), "minilm", seed=0)
    warning = distill._quality_warning(same)
    assert warning is not None and warning.startswith(distill.INDISTINGUISHABLE)
    assert f"n = {same['n']}" in warning and f"{same['value']:.2f}" in warning
    apart = data_quality(rows(40, 1, distinct=True), rows(20, 2, distinct=True), "minilm", seed=0)
    assert distill._quality_warning(apart) is None
    assert distill._quality_warning(data_quality(rows(1, 1, distinct=True), [], "minilm", seed=0)) is None
