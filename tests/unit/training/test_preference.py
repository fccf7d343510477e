"""Preference accuracy against the real engine on the tiny model: the numbers are the engine's
own log-probabilities compared pair by pair, and ties are not counted as wins."""

from __future__ import annotations

from pathlib import Path

import pytest
from character.models import get_engine
from character.training.preference import preference_accuracy


@pytest.fixture(scope="module")
def engine(tiny_model: Path):  # type: ignore[no-untyped-def]
    return get_engine("transformers", str(tiny_model))


def test_accuracy_and_margins_follow_the_engine_scores(engine) -> None:  # type: ignore[no-untyped-def]
    pairs = [
        {"prompt": "Hi!", "chosen": "Hello there, friend.", "rejected": "Go."},
        {"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "A deep and calm shade of blue."},
        {"prompt": "Count to three.", "chosen": "One, two, three.", "rejected": "Three, two, one."},
    ]
    result = preference_accuracy(engine, pairs)
    convs = [[{"role": "user", "content": p["prompt"]}] for p in pairs]
    chosen = engine.score(convs, [p["chosen"] for p in pairs])
    rejected = engine.score(convs, [p["rejected"] for p in pairs])
    margins = [c - r for c, r in zip(chosen, rejected, strict=True)]
    per_byte = [c / len(p["chosen"]) - r / len(p["rejected"])
                for c, r, p in zip(chosen, rejected, pairs, strict=True)]
    assert result["pairs"] == 3
    assert result["accuracy"] == pytest.approx(sum(m > 0 for m in margins) / 3)
    assert result["mean_margin"] == pytest.approx(sum(margins) / 3, rel=1e-4)
    assert result["accuracy_per_byte"] == pytest.approx(sum(m > 0 for m in per_byte) / 3)
    assert result["mean_margin_per_byte"] == pytest.approx(sum(per_byte) / 3, rel=1e-4)


def test_identical_answers_tie_and_no_pairs_give_no_numbers(engine) -> None:  # type: ignore[no-untyped-def]
    same = preference_accuracy(engine, [{"prompt": "Hi", "chosen": "Hello.", "rejected": "Hello."}])
    assert same["accuracy"] == 0.0 and same["mean_margin"] == pytest.approx(0.0, abs=1e-5)
    assert preference_accuracy(engine, []) == {"pairs": 0, "accuracy": None, "mean_margin": None,
                                               "accuracy_per_byte": None, "mean_margin_per_byte": None,
                                               "correct": [], "correct_per_byte": []}
