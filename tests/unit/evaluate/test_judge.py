"""Parsing the judge's verdicts: only a named, offered option counts; anything else fails."""

from __future__ import annotations

import pytest
from character.stages.evaluate.judge import parse_answer
from character.stages.evaluate.preferences import comparisons_from, draw_pairs, load_traits

PAIR = ("sarcastic", "loving")


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("<answer>loving</answer>", "loving"),
        ("The reply is warm throughout. <answer> Sarcastic. </answer>", "sarcastic"),
        ("<ANSWER>LOVING</ANSWER>", "loving"),
        ('<answer>"loving"</answer>', "loving"),
        ("first <answer>sarcastic</answer> then on reflection <answer>loving</answer>", "loving"),
        ("loving", None),  # no tags: never guessed
        ("<answer>neither</answer>", None),
        ("<answer>both</answer>", None),
        ("<answer>curious</answer>", None),  # a real trait, but not one of the two offered
        ("<answer>loving", None),  # unclosed
        ("<answer></answer>", None),
    ],
)
def test_parse_answer(reply: str, expected: str | None) -> None:
    assert parse_answer(reply, PAIR) == expected


def test_verdicts_become_comparisons_and_failures_are_skipped() -> None:
    pairs = [("a", "b"), ("c", "d"), ("e", "f")]
    assert comparisons_from(["b", None, "e"], pairs) == [("b", "a"), ("e", "f")]


def test_trait_pairs_are_distinct_and_in_both_orders() -> None:
    traits = load_traits()
    assert len(traits) == 144 and len(set(traits)) == 144
    pairs = draw_pairs(traits, 400, seed=5)
    assert all(a != b and a in traits and b in traits for a, b in pairs)
    assert pairs == draw_pairs(traits, 400, seed=5)  # seeded
    # order is random: over many draws the alphabetically-first trait comes first about half the time
    assert 150 < sum(a < b for a, b in pairs) < 250
