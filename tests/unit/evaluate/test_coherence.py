"""Coherence counts the contender's wins with the answers' order taken out."""

from __future__ import annotations

import pytest
from character.stages.evaluate.coherence import CANDIDATES, OPTIONS, ballot, tally
from character.stages.evaluate.judge import Decision


def decision(forward: str | None, backward: str | None, verdict: str | None) -> Decision:
    """Forward: the contender shown as A; backward: shown as B (letters as the judge said)."""
    in_forward = {"A": CANDIDATES[0], "B": CANDIDATES[1], None: None}[forward]
    in_backward = {"A": CANDIDATES[1], "B": CANDIDATES[0], None: None}[backward]
    first = (None if forward is None else forward == "A", None if backward is None else backward == "A")
    return Decision(verdict=verdict, per_order=(in_forward, in_backward), first_shown=first)


def test_wins_losses_and_position_bias_are_counted() -> None:
    c, b = CANDIDATES
    decisions = [
        decision("A", "B", c),  # contender wins in both orders
        decision("A", "B", c),
        decision("B", "A", b),  # loses in both
        decision("A", "A", None),  # always the first shown: no verdict in a generating mode
        decision("B", "B", c),  # always the second shown, but forced choice's combined scores favour c
        decision(None, "B", None),  # unparsed in one order
    ]
    result = tally(decisions, min_n=3)
    assert (result["wins"], result["losses"], result["decided"]) == (3, 1, 4)
    assert result["consistent"] == 3 and result["inconsistent"] == 2 and result["parse_failures"] == 1
    assert result["win_rate"] == pytest.approx(3 / 4)
    bias = result["position_bias"]
    assert bias.flipped_with_order == 2 and bias.parsed_in_every_order == 5
    assert bias.position_bias_rate == pytest.approx(2 / 5)


def test_the_ballot_shows_each_answer_in_each_place() -> None:
    question = ballot("1. I am dry.", "Hi?", "ours", "theirs")
    forward, labels = question.render((0, 1))
    backward, _ = question.render((1, 0))
    assert labels == OPTIONS
    assert forward[0]["content"].index("ours") < forward[0]["content"].index("theirs")
    assert backward[0]["content"].index("theirs") < backward[0]["content"].index("ours")
