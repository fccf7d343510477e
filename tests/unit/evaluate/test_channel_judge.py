"""The noisy-channel judge: its verdicts ignore the options' order (real tiny model), it is
valid when its channel scores favour the expressed trait and not valid when they cannot, and
its identity (the calibration cache's key) covers its system prompt.

`AnswerKeyScorer` and `OneTraitScorer` are fake scorers by design: they are the instruments
under test (a channel that sees the expressed trait, one that cannot), not stand-ins for a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest
from character.models.engine import Conversation, Engine, Generation, SamplingParams
from character.stages.evaluate import preferences
from character.stages.evaluate.calibration import (
    calibrate,
    calibrated,
    calibration_subset,
    load_calibration_set,
)
from character.stages.evaluate.channel_judge import SYSTEM, ChannelJudge
from character.store import open_store

ITEMS = load_calibration_set()
TRAITS = sorted({t for i in ITEMS for t in i.traits})


class _Scorer(Engine):
    """Scores only; what it scores is the subclass's `channel`."""

    name = "fake-scorer"

    def __init__(self) -> None:
        self.scored = 0

    def generate(
        self,
        conversations: Sequence[Conversation],
        sampling: SamplingParams,
        adapter: Any = None,
        steering: Any = None,
        progress: Any = None,
    ) -> list[Generation]:
        raise AssertionError("the channel judge never generates")

    def score(
        self,
        conversations: Sequence[Conversation],
        continuations: Sequence[str],
        adapter: Any = None,
        progress: Any = None,
    ) -> list[float]:
        self.scored += len(continuations)
        return [
            self.channel(c[0]["content"], c[1]["content"], r) for c, r in zip(conversations, continuations, strict=True)
        ]

    def channel(self, system: str, message: str, reply: str) -> float:
        raise NotImplementedError


class AnswerKeyScorer(_Scorer):
    """A channel that sees the trait: the reply is likelier under its expressed trait's prompt."""

    key: ClassVar[dict[tuple[str, str], str]] = {(i.message, i.reply): i.expressed for i in ITEMS}

    def channel(self, system: str, message: str, reply: str) -> float:
        return -10.0 + (system == SYSTEM.format(trait=self.key[(message, reply)]))


class OneTraitScorer(_Scorer):
    """A channel blind to the reply: whichever trait sorts first is always likelier."""

    rank: ClassVar[dict[str, int]] = {SYSTEM.format(trait=t): -k for k, t in enumerate(TRAITS)}

    def channel(self, system: str, message: str, reply: str) -> float:
        return float(self.rank[system])


def _ballots(items: Sequence[Any], flip: bool = False) -> list[Any]:
    return [preferences.ballot(i.message, i.reply, i.traits[::-1] if flip else i.traits) for i in items]


def test_a_channel_that_favours_the_expressed_trait_is_a_valid_judge() -> None:
    result = calibrate(ChannelJudge(AnswerKeyScorer(), "answer-key"), ITEMS)
    assert result["judge"] == "channel" and result["accuracy"] == 1.0 and result["valid"]
    assert result["position_bias"] == pytest.approx(0.5)  # order-free: first in one of the two orders


def test_a_channel_blind_to_the_reply_is_not_valid() -> None:
    result = calibrate(ChannelJudge(OneTraitScorer(), "one-trait"), ITEMS)
    assert result["accuracy"] == pytest.approx(0.5)  # each pair's two replies get the same verdict
    assert not result["valid"] and "not distinguishable from chance" in result["reason"]


def test_each_trait_is_scored_once_per_ballot_never_per_order() -> None:
    scorer = AnswerKeyScorer()
    ChannelJudge(scorer, "answer-key").decide(_ballots(ITEMS[:10]))
    assert scorer.scored == 20


def test_a_ballot_without_its_message_is_refused() -> None:
    from character.stages.evaluate.judge import Ballot

    ballot = Ballot(("warm", "cold"), lambda order: ([], []), text="Hello!")
    with pytest.raises(ValueError, match=r"ballots \[0\] carry none"):
        ChannelJudge(AnswerKeyScorer(), "answer-key").decide([ballot])


def test_the_verdicts_of_a_real_model_do_not_depend_on_the_order_of_the_traits(tiny_model: Path) -> None:
    from character.models.transformers_engine import TransformersEngine

    judge = ChannelJudge(TransformersEngine(str(tiny_model)), str(tiny_model))
    items = calibration_subset(ITEMS, 20, seed=5)
    shown, flipped = judge.decide(_ballots(items)), judge.decide(_ballots(items, flip=True))
    assert [d.verdict for d in shown] == [d.verdict for d in flipped]
    assert all(d.verdict is not None and set(d.per_order) == {d.verdict} for d in shown)
    assert calibrate(judge, items, min_n=20)["position_bias"] == pytest.approx(0.5)


def test_the_identity_covers_the_model_and_the_system_prompt(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "store"))
    first, other = AnswerKeyScorer(), AnswerKeyScorer()
    default = ChannelJudge(first, "m")
    retemplated = ChannelJudge(other, "m", system="You are a {trait} assistant.")
    assert default.identity() != retemplated.identity() != ChannelJudge(first, "n").identity()
    items = ITEMS[:24]
    calibrated(store, default, items, min_n=20)
    calibrated(store, retemplated, items, min_n=20)  # another template: not the first one's record
    assert first.scored == other.scored == 48
    calibrated(store, default, items, min_n=20)  # the same judge: cached
    assert first.scored == 48


def test_a_scorer_in_another_precision_is_another_judge(tmp_path: Path) -> None:
    """bf16 scores are not float32 scores: a calibration cached for one precision is not the other's."""
    store = open_store(str(tmp_path / "store"))
    exact, fast = AnswerKeyScorer(), AnswerKeyScorer()
    exact.precision, fast.precision = "float32", "bfloat16"
    assert ChannelJudge(exact, "m").identity() != ChannelJudge(fast, "m").identity()
    calibrated(store, ChannelJudge(exact, "m"), ITEMS[:24], min_n=20)
    calibrated(store, ChannelJudge(fast, "m"), ITEMS[:24], min_n=20)
    assert exact.scored == fast.scored == 48
