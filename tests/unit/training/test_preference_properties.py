"""Preference accuracy measures the model it is asked about: with an adapter, the adapted
model's log-probabilities, pair by pair."""

from __future__ import annotations

from pathlib import Path

import pytest
from character.models import get_engine
from character.training.preference import preference_accuracy

PAIRS = [
    {"prompt": "Hi!", "chosen": "Hello there, friend.", "rejected": "Go."},
    {"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "A deep and calm shade of blue."},
    {"prompt": "Count to three.", "chosen": "One, two, three.", "rejected": "Three, two, one."},
    {"prompt": "Say yes.", "chosen": "Yes.", "rejected": "No."},
    {"prompt": "Greet me.", "chosen": "Good morning!", "rejected": "Good evening!"},
    {"prompt": "Same?", "chosen": "Same answer.", "rejected": "Same answer."},
]


def test_the_adapter_is_what_is_measured(tiny_model: Path, random_adapter: Path) -> None:
    engine = get_engine("transformers", str(tiny_model))
    convs = [[{"role": "user", "content": p["prompt"]}] for p in PAIRS]
    chosen = engine.score(convs, [p["chosen"] for p in PAIRS], adapter=random_adapter)
    rejected = engine.score(convs, [p["rejected"] for p in PAIRS], adapter=random_adapter)
    adapted = preference_accuracy(engine, PAIRS, adapter=random_adapter)
    plain = preference_accuracy(engine, PAIRS)
    expected = sum(c - r for c, r in zip(chosen, rejected, strict=True)) / len(PAIRS)
    assert adapted["mean_margin"] == pytest.approx(expected, rel=1e-4)
    assert adapted["mean_margin"] != pytest.approx(plain["mean_margin"], rel=1e-3)
    margins = [c - r for c, r in zip(chosen, rejected, strict=True)]
    per_byte = [c / len(p["chosen"].encode()) - r / len(p["rejected"].encode())
                for c, r, p in zip(chosen, rejected, PAIRS, strict=True)]
    assert adapted["correct"] == [m > 0 for m in margins]
    assert adapted["correct_per_byte"] == [m > 0 for m in per_byte]
    assert adapted["correct"][-1] is False and adapted["correct_per_byte"][-1] is False  # a tie is a miss
    # the cases that tell "> 0" from ">= 0" and "> 1" are there
    assert any(0 < m <= 1 for m in per_byte) and any(m > 0 for m in margins)
