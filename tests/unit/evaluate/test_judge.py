"""Parsing the judge's verdicts: only a named, offered option counts; anything else fails. A judge
built to be position-biased gets its order taken out."""

from __future__ import annotations

from pathlib import Path

import pytest
from character.models.engine import Conversation, Engine, Generation
from character.progress import silent
from character.stages.evaluate.judge import (
    ANSWER_TAG,
    Ballot,
    Decision,
    JudgeMode,
    decide,
    parse_answer,
    position_bias,
    rotations,
    verdicts,
)
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

    def score(self, conversations, continuations, adapter=None, progress=silent):  # type: ignore[no-untyped-def]
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


# ----------------------------------------------------------------------------- order taken out
class PositionBiasedJudge(Engine):
    """A judge built to be position-biased: it adds `bias` to the option shown first (the
    first of the two traits named in the question), on top of a fixed `liking` per option."""

    name = "position-biased"

    def __init__(self, bias: float, liking: dict[str, float], reply_first: bool = False):
        self.bias, self.liking, self.reply_first = bias, liking, reply_first

    @staticmethod
    def _shown(conversation: Conversation) -> list[str]:
        text = conversation[0]["content"]
        return sorted(PAIR, key=text.index)

    def generate(self, conversations, sampling, adapter=None, steering=None, progress=silent):  # type: ignore[no-untyped-def]
        # a generating judge that always names whichever trait it was shown first
        def reply(conversation: Conversation) -> str:
            opened = conversation[-1] == {"role": "assistant", "content": ANSWER_TAG}
            return ("" if opened else ANSWER_TAG) + f"{self._shown(conversation)[0]}</answer>"

        return [Generation(text=reply(c), finish_reason="stop", num_tokens=1) for c in conversations]

    def score(self, conversations, continuations, adapter=None, progress=silent):  # type: ignore[no-untyped-def]
        out = []
        for conversation, completion in zip(conversations, continuations, strict=True):
            option = completion.removesuffix("</answer>")
            first = self._shown(conversation)[0]
            out.append((self.liking[option] + (self.bias if option == first else 0.0)) * len(completion))
        return out


def trait_ballot() -> Ballot:
    def render(order):  # type: ignore[no-untyped-def]
        shown = (PAIR[order[0]], PAIR[order[1]])
        return [{"role": "user", "content": f"Is it {shown[0]} or {shown[1]}?"}], shown

    return Ballot(PAIR, render)


def run_decide(engine: Engine, mode: JudgeMode, debias: bool = True, n: int = 30) -> list[Decision]:
    return decide(engine, [trait_ballot()] * n, mode, temperature=0.0, max_new_tokens=8, seed=1, debias=debias)


def test_a_purely_position_biased_judge_yields_no_verdicts_and_is_reported() -> None:
    judge = PositionBiasedJudge(bias=1.0, liking={"sarcastic": 0.0, "loving": 0.0})
    one_order = run_decide(judge, "choose", debias=False)
    assert {d.verdict for d in one_order} == {"sarcastic"}  # asked once, the first shown always wins
    for mode in ("choose", "tag"):
        decisions = run_decide(judge, mode)
        assert all(d.verdict is None for d in decisions)  # the order is all it had to go on
        report = position_bias(decisions)
        assert report.position_bias_rate == 1.0 and report.order_consistent == 0
        assert report.counted == 0
        assert report.first_position.value == 1.0 and report.first_position.distinguishable


def test_a_real_preference_survives_a_stronger_position_bias_in_forced_choice() -> None:
    # prefers "loving" by 0.3 per byte but adds 1.0 to whatever it sees first: every single-order
    # verdict is the first-shown option, yet the combined scores recover the preference
    judge = PositionBiasedJudge(bias=1.0, liking={"sarcastic": 0.0, "loving": 0.3})
    decisions = run_decide(judge, "choose")
    assert all(d.verdict == "loving" for d in decisions)
    assert all(not d.consistent for d in decisions)
    report = position_bias(decisions)
    assert report.position_bias_rate == 1.0 and report.counted == 30 and report.order_consistent == 0


def test_an_unbiased_judge_is_consistent_in_every_order() -> None:
    judge = PositionBiasedJudge(bias=0.0, liking={"sarcastic": 0.0, "loving": 0.3})
    decisions = run_decide(judge, "choose")
    assert all(d.verdict == "loving" and d.consistent for d in decisions)
    report = position_bias(decisions)
    assert report.position_bias_rate == 0.0 and report.first_position.value == 0.5
    assert not report.first_position.distinguishable


def test_rotations_put_every_option_in_every_position() -> None:
    for k in (2, 3, 4):
        orders = rotations(k)
        assert len(orders) == k
        for position in range(k):
            assert sorted(order[position] for order in orders) == list(range(k))
