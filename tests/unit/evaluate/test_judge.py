"""Parsing the judge's verdicts: only a named, offered option counts; anything else fails."""

from __future__ import annotations

from pathlib import Path

import pytest
from character.models.engine import Conversation, Engine, Generation
from character.progress import silent
from character.stages.evaluate.judge import ANSWER_TAG, JudgeMode, parse_answer, verdicts
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


class ScriptedJudge(Engine):
    """A stand-in judge (our own Engine interface, scripted) for the verdict modes' mechanics;
    the real-model behaviour is in test_forced_choice_with_smollm2."""

    name = "scripted"

    def __init__(self, reply: str = "", scores: dict[str, float] | None = None):
        self.reply, self.scores = reply, scores or {}
        self.seen: list[Conversation] = []

    def generate(self, conversations, sampling, adapter=None, steering=None, progress=silent):  # type: ignore[no-untyped-def]
        self.seen.extend(conversations)
        return [Generation(text=self.reply, finish_reason="stop", num_tokens=1) for _ in conversations]

    def score(self, conversations, continuations, adapter=None):  # type: ignore[no-untyped-def]
        self.seen.extend(conversations)
        return [self.scores[c] for c in continuations]


ASK = [[{"role": "user", "content": "Which trait?"}]]


def call(engine: Engine, mode: JudgeMode, options: list[tuple[str, ...]] | None = None) -> list[str | None]:
    return verdicts(engine, ASK, options or [PAIR], mode, temperature=0.0, max_new_tokens=8, seed=1)


def test_reason_mode_parses_the_whole_reply() -> None:
    engine = ScriptedJudge(reply="It teases. <answer>sarcastic</answer>")
    assert call(engine, "reason") == ["sarcastic"]
    assert engine.seen == ASK  # nothing prefilled
    assert call(ScriptedJudge(reply="sarcastic</answer>"), "reason") == [None]


def test_tag_mode_prefills_the_open_tag() -> None:
    engine = ScriptedJudge(reply="loving</answer>")
    assert call(engine, "tag") == ["loving"]
    assert engine.seen[0][-1] == {"role": "assistant", "content": ANSWER_TAG}
    assert call(ScriptedJudge(reply="neither</answer>"), "tag") == [None]


def test_choose_mode_picks_the_likeliest_option_per_byte() -> None:
    # "sarcastic</answer>" has 18 bytes, "loving</answer>" 15
    engine = ScriptedJudge(scores={"sarcastic</answer>": -7.2, "loving</answer>": -6.3})
    # per byte: sarcastic -0.4, loving -0.42 -> sarcastic, though its summed log-prob is lower
    assert call(engine, "choose") == ["sarcastic"]
    assert all(c[-1] == {"role": "assistant", "content": ANSWER_TAG} for c in engine.seen)
    three = ScriptedJudge(scores={"A</answer>": -5.0, "B</answer>": -1.0, "C</answer>": -3.0})
    assert call(three, "choose", [("A", "B", "C")]) == ["B"]


@pytest.mark.smollm2
def test_forced_choice_with_smollm2(smollm2_model: Path, torch_one_thread: None) -> None:
    """On questions with an obvious answer, SmolLM2's forced choice is right in both option
    orders (so it is not position bias)."""
    from character.models import get_engine

    engine = get_engine("transformers", str(smollm2_model), device="cpu")
    questions = [  # SmolLM2-135M gets these right; it also says fire is cold and fish bark
        ("What colour is the sky on a clear day? Answer blue or green.", ("blue", "green")),
        ("Is ice hot or cold? Answer hot or cold.", ("cold", "hot")),
        ("What is the capital of France? Answer Paris or Berlin.", ("Paris", "Berlin")),
        ("A user wrote: 'I love this, thank you so much!' Is the user happy or angry?", ("happy", "angry")),
        (
            "Reply: 'Oh great, another Monday. Just what I needed.' Is this reply sarcastic or sincere?",
            ("sarcastic", "sincere"),
        ),
    ]
    asks = [[{"role": "user", "content": q}] for q, _ in questions] * 2
    options = [opts for _, opts in questions] + [opts[::-1] for _, opts in questions]
    picked = verdicts(engine, asks, options, "choose", temperature=0.0, max_new_tokens=8, seed=1)
    assert picked == [opts[0] for _, opts in questions] * 2
