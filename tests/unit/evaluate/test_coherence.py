"""Coherence counts only verdicts that agree when the two answers swap places."""

from __future__ import annotations

import pytest
from character.stages.evaluate.coherence import tally


def test_only_consistent_verdicts_count() -> None:
    # forward: contender shown as A; backward: contender shown as B
    forward = ["A", "A", "B", "A", "B", None, "A"]
    backward = ["B", "B", "A", "A", "B", "B", None]
    # pair 1, 2: contender wins both orders; 3: loses both; 4: always "A" (position bias);
    # 5: always "B"; 6, 7: a parse failure in one order
    result = tally(forward, backward)
    assert result["wins"] == 2 and result["losses"] == 1
    assert result["consistent"] == 3 and result["inconsistent"] == 2 and result["parse_failures"] == 2
    assert result["win_rate"] == pytest.approx(2 / 3)
    assert result["stderr"] == pytest.approx(((2 / 3) * (1 / 3) / 3) ** 0.5)


def test_a_judge_that_always_picks_the_first_answer_gives_no_win_rate() -> None:
    result = tally(["A"] * 10, ["A"] * 10)
    assert result["consistent"] == 0 and result["inconsistent"] == 10
    assert result["win_rate"] is None and result["stderr"] is None
