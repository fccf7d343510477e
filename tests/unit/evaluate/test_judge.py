"""Parsing the judge's verdicts: only a named, offered option counts; anything else fails. A judge
built to be position-biased gets its order taken out."""

from __future__ import annotations

from pathlib import Path

import pytest
from character.models.engine import Conversation, Engine, Generation, SamplingParams
from character.progress import ProgressEvent, silent
from character.stages.evaluate.judge import (
    ANSWER_TAG,
    Ballot,
    Decision,
    JudgeMode,
    decide,
    order_free_decision,
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
        self.sampling: list[SamplingParams] = []

    def generate(self, conversations, sampling, adapter=None, steering=None, progress=silent):  # type: ignore[no-untyped-def]
        self.seen.extend(conversations)
        self.sampling.append(sampling)
        progress(ENGINE_EVENT)
        return [Generation(text=self.reply, finish_reason="stop", num_tokens=1) for _ in conversations]

    def score(self, conversations, continuations, adapter=None, progress=silent):  # type: ignore[no-untyped-def]
        self.seen.extend(conversations)
        progress(ENGINE_EVENT)
        return [self.scores[c] for c in continuations]


ENGINE_EVENT = ProgressEvent("engine: batch", 3, 4, "batch 3 of 4")


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


def test_a_generating_judge_samples_as_asked_and_its_progress_is_passed_on() -> None:
    modes: list[tuple[JudgeMode, str]] = [("reason", "<answer>loving</answer>"), ("tag", "loving</answer>")]
    for mode, reply in modes:
        engine, events = ScriptedJudge(reply=reply), list[ProgressEvent]()
        picked = decide(engine, [trait_ballot()], mode, temperature=0.3, max_new_tokens=8, seed=11,
                        progress=events.append)
        assert [d.verdict for d in picked] == ["loving"]
        assert engine.sampling == [SamplingParams(max_new_tokens=8, temperature=0.3, top_p=1.0,
                                                  repetition_penalty=1.0, seed=11)]
        assert events == [ENGINE_EVENT]


def test_forced_choice_reports_its_scoring_as_the_judges() -> None:
    engine, events = ScriptedJudge(scores={"sarcastic</answer>": -9.0, "loving</answer>": -3.0}), list[ProgressEvent]()
    picked = decide(engine, [trait_ballot()], "choose", temperature=0.0, max_new_tokens=8, seed=1,
                    progress=events.append)
    assert [d.verdict for d in picked] == ["loving"]
    assert events == [ProgressEvent("judge: scoring options", 3, 4, "batch 3 of 4")]
    events.clear()
    verdicts(engine, ASK, [PAIR], "choose", temperature=0.0, max_new_tokens=8, seed=1, progress=events.append)
    assert events == [ProgressEvent("judge: scoring options", 3, 4, "batch 3 of 4")]


@pytest.mark.parametrize("mode", ["reason", "tag", "choose"])
def test_options_not_one_list_per_conversation_are_an_error(mode: JudgeMode) -> None:
    engine = ScriptedJudge(reply="<answer>loving</answer>", scores={"sarcastic</answer>": -1.0, "loving</answer>": -2})
    with pytest.raises(ValueError, match="zip"):
        call(engine, mode, [PAIR, PAIR])  # one conversation, two option lists


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


def test_rotations_start_from_the_given_order_and_shift_it_by_one() -> None:
    for k in (2, 3, 4):
        orders = rotations(k)
        assert orders[0] == tuple(range(k))  # the given order is one of them, and the first
        assert all(orders[s] == orders[s - 1][1:] + orders[s - 1][:1] for s in range(1, k))


def test_a_generating_judge_that_names_one_trait_in_every_order_decides_it() -> None:
    engine = ScriptedJudge(reply="loving</answer>")
    [decision] = decide(engine, [trait_ballot()], "tag", temperature=0.0, max_new_tokens=8, seed=1)  # debiased
    assert decision == Decision(verdict="loving", per_order=("loving", "loving"), first_shown=(False, True))
    [once] = run_decide(engine, "tag", debias=False, n=1)
    assert once == Decision(verdict="loving", per_order=("loving",), first_shown=(False,))


def test_a_generated_answer_naming_no_option_decides_nothing() -> None:
    [decision] = run_decide(ScriptedJudge(reply="<answer>neither</answer>"), "reason", n=1)
    assert decision == Decision(verdict=None, per_order=(None, None), first_shown=(None, None))
    assert not decision.parsed and position_bias([decision]).counted == 0


def _choose_between(scores: dict[str, float]) -> str | None:
    """The forced-choice verdict between two options of the same byte length scored (per byte, in
    every order) as given: 16 bytes each, so the scores stay exact through `per_byte`."""
    pair = tuple(scores)

    def render(order):  # type: ignore[no-untyped-def]
        return [{"role": "user", "content": f"{pair[order[0]]} or {pair[order[1]]}?"}], [pair[i] for i in order]

    engine = ScriptedJudge(scores={f"{o}</answer>": s * 16 for o, s in scores.items()})
    [decision] = decide(engine, [Ballot(pair, render)], "choose", temperature=0.0, max_new_tokens=8, seed=1)
    return decision.verdict


@pytest.mark.parametrize(
    ("curious", "patient", "verdict"),
    [
        (0.0, -0.5e-9, None),  # totals 0 and -1e-9: exactly the tolerance apart, a tie
        (0.0, -0.75e-9, "curious"),  # 1.5e-9 apart: decided
        (-0.75, -0.75 - 0.6e-9, None),  # totals -1.5 apart by 1.2e-9: within 1e-9 of 1.5
        (-2.0, -2.0 - 1e-9, None),  # totals -4 apart by 2e-9: within 1e-9 of 4
        (-2.0, -2.0 - 3e-9, "curious"),  # apart by 6e-9: decided
    ],
)
def test_forced_choice_totals_within_a_billionth_are_a_tie(curious: float, patient: float, verdict: str | None) -> None:
    assert len("curious</answer>") == len("patient</answer>") == 16
    assert _choose_between({"curious": curious, "patient": patient}) == verdict


def test_a_judge_that_never_sees_the_order_is_recorded_once_per_rotation() -> None:
    ballot = Ballot(("a", "b", "c"), lambda order: ([], []))
    assert order_free_decision(ballot, [0.1, 0.5, 0.2]) == Decision(
        verdict="b", per_order=("b", "b", "b"), first_shown=(False, True, False)
    )
    for tied in ([0.5, 0.5, 0.1], [0.1, 0.5, 0.5], [0.3, 0.3, 0.3]):  # an exact tie at the top decides nothing
        assert order_free_decision(ballot, tied) == Decision(None, (None, None, None), (None, None, None))


def _decision(per_order: tuple[str | None, ...], first_shown: tuple[bool | None, ...]) -> Decision:
    agreed = None not in per_order and len(set(per_order)) == 1
    return Decision(verdict=per_order[0] if agreed else None, per_order=per_order, first_shown=first_shown)


def test_position_bias_of_no_ballots_and_of_single_orders_has_nothing_to_test() -> None:
    for decisions, orders in (([], 2), ([_decision(("a",), (True,))] * 25, 1)):
        report = position_bias(decisions)
        assert report.orders_per_ballot == orders and report.parsed_in_every_order == 0
        assert report.position_bias_rate is None and report.first_position.n == 0


def test_position_bias_counts_only_ballots_parsed_in_every_order() -> None:
    decisions = [_decision(("a", "a"), (True, False))] * 3 + [_decision(("b", "a"), (False, False))] + [
        _decision((None, "a"), (None, True))
    ] * 2
    report = position_bias(decisions)
    assert report.parsed_in_every_order == 4 and report.flipped_with_order == 1
    assert report.position_bias_rate == 0.25 and report.order_consistent == 3 and report.counted == 3
    assert report.first_position.n == 10 and report.first_position.value == 0.5  # 3 + 0 + 2 of 10 verdicts


def test_position_bias_tests_the_shown_first_share_against_one_in_k() -> None:
    # three options, the first shown picked in one order of three: no bias at k = 3, though a
    # third would be far below a half
    decisions = [_decision(("a", "a", "a"), (True, False, False))] * 30
    first = position_bias(decisions).first_position
    assert position_bias(decisions).orders_per_ballot == 3 and first.value == pytest.approx(1 / 3)
    assert not first.distinguishable and first.null == "no position bias"
    assert (first.figure, first.unit) == ("judge picks the option shown first", "verdicts")


def test_position_bias_needs_min_n_verdicts() -> None:
    decisions = [_decision(("a", "a"), (True, False))] * 10  # 20 per-order verdicts
    assert not position_bias(decisions).first_position.underpowered  # the default min_n is 20
    assert position_bias(decisions, min_n=21).first_position.underpowered
