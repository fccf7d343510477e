"""Judge calibration: the bundled known-answer set, its loader's located errors, the validity
verdict (useless judges are not valid, a judge that knows the answers is), the cache, and
how an invalid judge's figures are reported.

The judges built to be useless and the answer-key judge are fakes by design (they are the
instruments under test); the embedding judge is the real MiniLM on the real bundled set.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pytest
from character import stats
from character.constitution import persona_names, resolve_constitution
from character.errors import InvalidInput, NotFound
from character.report.results import EvaluationResults, JudgeCalibration
from character.stages.evaluate import Config, calibration
from character.stages.evaluate.calibration import (
    FLOOR,
    NOT_VALID,
    calibrate,
    calibrated,
    calibration_subset,
    guard_headline,
    load_calibration_set,
    mark_judged,
)
from character.stages.evaluate.judge import Ballot, Decision, rotations
from character.stages.evaluate.preferences import draw_pairs, own_trait_evidence
from character.stages.evaluate.trait_judges import EmbeddingJudge
from character.stats import Validity
from character.store import open_store

if TYPE_CHECKING:
    from character.stages.evaluate.subject import Subject
    from character.store.base import Store

ITEMS = load_calibration_set()
RESULT_KEYS = {
    "judge",
    "set_digest",
    "n",
    "accuracy",
    "ci_low",
    "ci_high",
    "p_value",
    "position_bias",
    "valid",
    "reason",
}


class ShownFirstJudge:
    """Useless by construction: in every order, picks whichever trait is shown first."""

    name = "shown-first"

    def __init__(self) -> None:
        self.calls = 0

    def identity(self) -> dict[str, Any]:
        return {"judge": self.name}

    def decide(self, ballots: Sequence[Ballot]) -> list[Decision]:
        self.calls += 1
        out = []
        for b in ballots:
            picks = tuple(b.render(order)[1][0] for order in rotations(len(b.candidates)))
            out.append(
                Decision(
                    verdict=picks[0] if len(set(picks)) == 1 else None,
                    per_order=picks,
                    first_shown=tuple(True for _ in picks),
                )
            )
        return out


class RandomJudge:
    """Useless by construction: a seeded coin flip per ballot, the same in every order."""

    name = "random"

    def identity(self) -> dict[str, Any]:
        return {"judge": self.name}

    def decide(self, ballots: Sequence[Ballot]) -> list[Decision]:
        rng = random.Random(7)
        return [_same_in_every_order(b, rng.choice(b.candidates)) for b in ballots]


class AnswerKeyJudge:
    """Reads the answer key: the expressed trait of each known reply (with `right`, of the first
    `right` ballots only, naming the other trait of the rest: a judge of known accuracy)."""

    def __init__(self, items: Sequence[calibration.CalibrationItem], right: int | None = None,
                 name: str = "answer-key"):
        self.key = {(i.message, i.reply): i.expressed for i in items}
        self.right, self.name = right, name
        self.asked: list[str] = []

    def identity(self) -> dict[str, Any]:
        return {"judge": self.name, "right": self.right}

    def decide(self, ballots: Sequence[Ballot]) -> list[Decision]:
        out = []
        for i, b in enumerate(ballots):
            conversation, _ = b.render((0, 1))
            message = conversation[0]["content"].split("<message>\n", 1)[1].split("\n</message>", 1)[0]
            truth = self.key[(message, str(b.text))]
            right = self.right is None or i < self.right
            out.append(_same_in_every_order(b, truth if right else next(c for c in b.candidates if c != truth)))
            self.asked.append(str(b.text))
        return out


def _same_in_every_order(ballot: Ballot, verdict: str) -> Decision:
    orders = rotations(len(ballot.candidates))
    return Decision(
        verdict=verdict,
        per_order=tuple(verdict for _ in orders),
        first_shown=tuple(ballot.candidates[order[0]] == verdict for order in orders),
    )


# ----------------------------------------------------------------------------- the bundled set
def test_the_bundled_set_has_96_items_over_16_pairs_with_positions_balanced() -> None:
    pairs = {frozenset(i.traits) for i in ITEMS}
    assert len(ITEMS) >= 96 and len(pairs) >= 16
    first = sum(i.expressed == i.traits[0] for i in ITEMS)
    assert first == len(ITEMS) - first  # the expressed trait is listed first exactly half the time
    for pair in pairs:  # each trait of a pair is the expressed one equally often
        expressed = [i.expressed for i in ITEMS if frozenset(i.traits) == pair]
        assert len(set(expressed)) == 2 and expressed.count(expressed[0]) * 2 == len(expressed)


def test_the_bundled_set_covers_every_bundled_personas_trait_words() -> None:
    words = {w for name in persona_names() for w in resolve_constitution(name).trait_words}
    covered = {t for i in ITEMS for t in i.traits}
    assert words <= covered, sorted(words - covered)


def test_with_no_path_the_loader_reads_the_set_shipped_with_the_library() -> None:
    shipped = calibration.bundled_set()
    assert shipped.parts[-3:] == ("data", "calibration", "judge_traits.jsonl") and shipped.is_file()
    assert load_calibration_set() == load_calibration_set(shipped) == ITEMS


# ----------------------------------------------------------------------------- the loader
def _line(**overrides: Any) -> str:
    item = {"message": "Hi?", "reply": "Hello!", "traits": ["warm", "cold"], "expressed": "warm", "id": 1}
    return json.dumps({**item, **overrides})


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ("{not json", "bad JSON at column 2"),
        (_line(reply=""), "field 'reply': expected a non-empty string"),
        (json.dumps({"reply": "x", "traits": ["a", "b"], "expressed": "a"}),
         "field 'message': expected a non-empty string"),
        (_line(traits=["warm"]), "field 'traits': expected two distinct trait words"),
        (_line(traits=["warm", "warm"]), "field 'traits': expected two distinct trait words"),
        (_line(traits=[1, "cold"]), "field 'traits': expected two distinct trait words"),
        (_line(traits=[" ", "cold"]), "field 'traits': expected two distinct trait words"),
        (_line(expressed="kind"), "field 'expressed': 'kind' is not one of the traits ['warm', 'cold']"),
        ("[1, 2]", "a line is a list, expected an object"),
        ('{"message": "m", "message": "n"}', "duplicate key 'message' (at line 3 and line 3)"),
        ("[" * 5000, "the document nests deeper than"),
    ],
)
def test_a_malformed_line_is_an_error_naming_file_line_and_field(tmp_path: Path, bad: str, says: str) -> None:
    path = tmp_path / "set.jsonl"
    path.write_text(f"{_line()}\n\n{bad}\n{_line()}\n")
    with pytest.raises(InvalidInput) as err:
        load_calibration_set(path)
    assert str(err.value).startswith(f"{path}:3: {says}")


def test_a_line_that_is_not_utf8_is_an_error_naming_file_line_and_byte(tmp_path: Path) -> None:
    path = tmp_path / "set.jsonl"
    path.write_bytes(_line().encode() + b'\n{"message": "caf\xe9"}\n')
    with pytest.raises(InvalidInput) as err:
        load_calibration_set(path)
    assert str(err.value) == f"{path}:2: not UTF-8 text (byte 16)" and err.value.where == f"{path}:2"


def test_a_missing_file_is_not_found_naming_it(tmp_path: Path) -> None:
    with pytest.raises(NotFound) as err:
        load_calibration_set(tmp_path / "absent.jsonl")
    assert str(err.value) == f"no such calibration file: {tmp_path / 'absent.jsonl'}"


def test_an_item_keeps_its_fields_and_its_traits_in_the_files_order(tmp_path: Path) -> None:
    path = tmp_path / "set.jsonl"
    path.write_text(_line(expressed="cold") + "\n")
    assert load_calibration_set(path) == [calibration.CalibrationItem("Hi?", "Hello!", ("warm", "cold"), "cold")]


def test_other_keys_are_ignored_and_blank_lines_skipped(tmp_path: Path) -> None:
    path = tmp_path / "set.jsonl"
    path.write_text(f"\n{_line(note='extra')}\n\n{_line(expressed='cold')}")
    assert [i.expressed for i in load_calibration_set(path)] == ["warm", "cold"]


def test_sizes_are_bounded_before_the_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "long.jsonl"
    path.write_text(_line() + "\n" + _line(reply="x" * calibration.MAX_LINE_BYTES) + "\n")
    with pytest.raises(InvalidInput, match=rf"{path}:2: line longer than {calibration.MAX_LINE_BYTES} bytes"):
        load_calibration_set(path)
    monkeypatch.setattr(calibration, "MAX_ITEMS", 2)
    many = tmp_path / "many.jsonl"
    many.write_text("\n".join([_line()] * 3))
    with pytest.raises(InvalidInput, match=rf"{many}:3: more than 2 items"):
        load_calibration_set(many)


def _sized(size: int) -> str:
    """A valid item line of exactly `size` bytes (its reply padded)."""
    return _line(reply="x" * (size - len(_line(reply=""))))


def test_a_line_of_exactly_the_longest_size_is_read_with_or_without_its_newline(tmp_path: Path) -> None:
    longest = _sized(calibration.MAX_LINE_BYTES)
    path = tmp_path / "set.jsonl"
    path.write_text(f"{longest}\n{longest}")  # the last line ends the file without a newline
    assert [len(i.reply) for i in load_calibration_set(path)] == [len(json.loads(longest)["reply"])] * 2
    path.write_text(f"{_line()}\n{_sized(calibration.MAX_LINE_BYTES + 1)}\n")
    with pytest.raises(InvalidInput) as err:
        load_calibration_set(path)
    assert str(err.value) == f"{path}:2: line longer than {calibration.MAX_LINE_BYTES} bytes"


def test_an_empty_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("\n\n")
    with pytest.raises(InvalidInput) as err:
        load_calibration_set(path)
    assert str(err.value) == f"{path}: no calibration items" and err.value.where == str(path)


# ----------------------------------------------------------------------------- the subset
@pytest.mark.parametrize("n", [20, 24, 36, 50, 72, 143])
def test_the_subset_is_balanced_over_pairs_and_positions(n: int) -> None:
    subset = calibration_subset(ITEMS, n, seed=3)
    assert len(subset) == n and len({(i.message, i.reply) for i in subset}) == n  # n distinct items
    pairs = len({frozenset(i.traits) for i in ITEMS})
    per_pair = [sum(frozenset(i.traits) == p for i in subset) for p in {frozenset(i.traits) for i in ITEMS}]
    assert max(per_pair) - min(per_pair) <= 1  # pairs in turn
    assert min(per_pair) >= 1 if n >= pairs else max(per_pair) == 1
    first = sum(i.expressed == i.traits[0] for i in subset)
    assert abs(first - (n - first)) <= 1  # the expressed trait listed first half the time


def test_each_pair_alternates_the_expressed_traits_position_between_rounds() -> None:
    pairs = {frozenset(i.traits) for i in ITEMS}
    assert len(ITEMS) == 4 * len(pairs)  # two items of each pair for each position
    subset = calibration_subset(ITEMS, 3 * len(pairs), seed=3)  # three rounds
    for pair in pairs:
        firsts = [i.expressed == i.traits[0] for i in subset if frozenset(i.traits) == pair]
        assert len(firsts) == 3 and firsts[0] != firsts[1] != firsts[2], pair


def test_a_pair_whose_expressed_trait_has_one_position_still_gives_an_item_every_round() -> None:
    def items(first: str, second: str, expressed: list[str]) -> list[calibration.CalibrationItem]:
        return [calibration.CalibrationItem(f"m{k}", f"r{first}{k}", (first, second), e)
                for k, e in enumerate(expressed)]

    lopsided = [
        *items("a", "b", ["a"] * 3),  # always listed first
        *items("c", "d", ["d"] * 3),  # always listed second
        *items("e", "f", ["e", "f", "e", "f"]),
        *items("g", "h", ["g", "h", "g", "h"]),
    ]
    for seed in range(10):  # the pairs' seeded order puts each one-sided pair on either position's turn
        subset = calibration_subset(lopsided, 4, seed)
        assert sorted(i.traits[0] for i in subset) == ["a", "c", "e", "g"], seed


def test_the_subset_is_seeded() -> None:
    assert calibration_subset(ITEMS, 24, seed=3) == calibration_subset(ITEMS, 24, seed=3)
    assert calibration_subset(ITEMS, 24, seed=3) != calibration_subset(ITEMS, 24, seed=4)


def test_no_subset_size_or_a_size_beyond_the_set_takes_every_item() -> None:
    assert calibration_subset(ITEMS, None, seed=3) == ITEMS == calibration_subset(ITEMS, len(ITEMS), seed=3)


def test_the_calibration_reports_the_subsets_n() -> None:
    subset = calibration_subset(ITEMS, 24, seed=3)
    result = calibrate(AnswerKeyJudge(ITEMS), subset, min_n=20)
    assert result["n"] == 24 and result["reason"].endswith("at least 0.70") and "n = 24" in result["reason"]


def test_a_calibration_subset_below_min_n_is_refused() -> None:
    from character.stages.evaluate import Config

    with pytest.raises(ValueError, match=r"calibration_items \(10\) is below min_n \(20\)"):
        Config.model_validate({"calibration_items": 10})
    assert Config.for_scale("demo").calibration_items == 24 and Config.for_scale("proof").calibration_items == 36
    assert Config.for_scale("full").calibration_items is None  # every item at full scale


# ----------------------------------------------------------------------------- validity
def test_a_judge_that_picks_the_option_shown_first_is_not_valid() -> None:
    result = calibrate(ShownFirstJudge(), ITEMS)
    assert set(result) == RESULT_KEYS
    assert result["position_bias"] == 1.0 and result["accuracy"] == 0.0  # orders disagree: never decided
    assert not result["valid"] and "not distinguishable from chance" in result["reason"]


def test_a_random_judge_is_not_valid() -> None:
    result = calibrate(RandomJudge(), ITEMS)
    assert result["ci_low"] <= 0.5 <= result["ci_high"]
    assert not result["valid"] and result["n"] == len(ITEMS)


def test_a_judge_that_reads_the_answer_key_is_valid() -> None:
    result = calibrate(AnswerKeyJudge(ITEMS), ITEMS)
    assert result["accuracy"] == 1.0 and result["ci_low"] > FLOOR and result["p_value"] < 1e-10
    assert result["position_bias"] == pytest.approx(0.5)  # order-free: picks first in one of the two orders
    assert result["valid"] and result["reason"].startswith("calibration accuracy 1.00")


def test_above_chance_but_below_the_floor_is_not_valid() -> None:
    result = calibrate(AnswerKeyJudge(ITEMS, right=89), ITEMS)  # right on 62%
    assert result["ci_low"] > 0.5 and result["accuracy"] < FLOOR
    assert not result["valid"] and f"below the floor {FLOOR:.2f}" in result["reason"]


@pytest.mark.parametrize(("right", "valid"), [(70, True), (69, False)])
def test_accuracy_exactly_at_the_floor_is_valid(right: int, valid: bool) -> None:
    result = calibrate(AnswerKeyJudge(ITEMS, right=right), ITEMS[:100])
    assert result["accuracy"] == right / 100 and result["ci_low"] > 0.5  # above chance either way
    assert result["valid"] is valid and result["reason"].endswith(
        f"and at least {FLOOR:.2f}" if valid else f"below the floor {FLOOR:.2f}"
    )


@pytest.mark.parametrize(("ci_low", "valid"), [(0.5, False), (0.5001, True)])
def test_an_interval_whose_lower_bound_is_exactly_chance_is_not_valid(ci_low: float, valid: bool) -> None:
    found = stats.share("judge calibration accuracy", 80, 100, "items").model_copy(update={"ci_low": ci_low})
    ok, reason = calibration._verdict(found)
    assert ok is valid and ("not distinguishable from chance (0.5)" in reason) is not valid


def test_a_valid_judges_reason_reads_its_figure_and_p_value() -> None:
    result = calibrate(AnswerKeyJudge(ITEMS, right=22), ITEMS[:30])
    assert result["valid"] and 0.001 < result["p_value"] < 0.05
    assert result["reason"] == (
        f"calibration accuracy 0.73 [{result['ci_low']:.2f}, {result['ci_high']:.2f}], n = 30: above chance "
        f"({stats.format_p(result['p_value'])}) and at least 0.70"
    )
    # right on 1152 of 1152: a p-value below the smallest float, still reported as tiny
    perfect = calibrate(AnswerKeyJudge(ITEMS), ITEMS * 8)
    assert perfect["p_value"] == 0.0 and "above chance (p < 0.001)" in perfect["reason"]


@pytest.mark.parametrize(("min_n", "valid"), [(12, True), (13, False)])
def test_fewer_items_than_min_n_are_no_calibration(tmp_path: Path, min_n: int, valid: bool) -> None:
    for result in (calibrate(AnswerKeyJudge(ITEMS), ITEMS[:12], min_n=min_n),
                   calibrated(open_store(str(tmp_path / "store")), AnswerKeyJudge(ITEMS), ITEMS[:12], min_n=min_n)):
        assert result["accuracy"] == 1.0 and result["valid"] is valid
        assert result["reason"].endswith("at least 0.70" if valid else f"fewer than {min_n} items, not a calibration")


def test_a_judge_that_never_answers_has_no_position_bias_and_is_not_valid() -> None:
    class Silent(AnswerKeyJudge):
        def decide(self, ballots: Sequence[Ballot]) -> list[Decision]:
            return [Decision(verdict=None, per_order=(None, None), first_shown=(None, None)) for _ in ballots]

    result = calibrate(Silent(ITEMS), ITEMS)
    assert result["accuracy"] == 0.0 and result["position_bias"] is None and not result["valid"]


def test_a_judge_that_skips_a_ballot_is_an_error_not_a_score_on_the_rest() -> None:
    class Skips(AnswerKeyJudge):
        def decide(self, ballots: Sequence[Ballot]) -> list[Decision]:
            return super().decide(ballots)[:-1]

    with pytest.raises(ValueError, match="zip"):
        calibrate(Skips(ITEMS), ITEMS)


def test_calibrations_are_cached_by_judge_and_set(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "store"))
    judge = ShownFirstJudge()
    first = calibrated(store, judge, ITEMS)
    assert calibrated(store, judge, ITEMS) == first and judge.calls == 1
    calibrated(store, judge, ITEMS[:40])  # another set: measured again
    assert judge.calls == 2
    assert [k for k in store.list_records(calibration.RECORD_PREFIX)]
    calibrated(store, judge, ITEMS, min_n=30)  # another min_n: measured again
    assert judge.calls == 3


def test_the_best_calibrated_is_the_most_accurate_and_the_first_of_a_tie() -> None:
    assert calibration.best_calibrated([{"accuracy": 0.6}, {"accuracy": 0.8}, {"accuracy": 0.7}]) == 1
    assert calibration.best_calibrated([{"accuracy": 0.6}, {"accuracy": 0.8}, {"accuracy": 0.8}]) == 1
    assert calibration.best_calibrated([{"accuracy": None}, {"accuracy": 0.1}]) == 1  # no figure: none right


# ----------------------------------------------------------------------------- in the evaluation
class _Subject:
    """What `judge_calibrations` reads of a `Subject`: the seed, the store, the model judge (by
    name in the spec), the candidate judges of trait choices and the one it settles on."""

    def __init__(self, store: Store, candidates: list[AnswerKeyJudge], model_judge: AnswerKeyJudge):
        self.ctx = SimpleNamespace(store=store, spec=SimpleNamespace(seed=5, model_judge=model_judge.name))
        self.trait_judge_candidates = candidates
        self.trait_judge = candidates[-1]  # the spec's judge, till calibration chooses
        self.model_judge = model_judge

    def use_trait_judge(self, judge: AnswerKeyJudge) -> None:
        self.trait_judge = judge


CONFIG = Config.model_validate({"calibration_items": 12, "min_n": 12})


def _judges(*rights: int) -> list[AnswerKeyJudge]:
    return [AnswerKeyJudge(ITEMS, right=right, name=f"right-{right}") for right in rights]


def _calibrations(subject: _Subject, parts: list[str]) -> dict[str, Any]:
    return calibration.judge_calibrations(cast("Subject", subject), CONFIG.only(parts))


def test_the_most_accurate_candidate_judges_trait_choices_and_every_candidates_figure_is_kept(
    tmp_path: Path,
) -> None:
    store = open_store(str(tmp_path / "store"))
    worse, better, coherence = _judges(9, 12, 11)
    subject = _Subject(store, [worse, better], coherence)
    found = _calibrations(subject, ["preferences", "coherence"])
    assert set(found) == {"judge_calibration", "judge_candidates", "coherence_judge_calibration"}
    assert subject.trait_judge is better and found["judge_calibration"] == found["judge_candidates"][1]
    assert [f["judge"] for f in found["judge_candidates"]] == ["right-9", "right-12"]
    assert found["coherence_judge_calibration"]["judge"] == "right-11"
    # every judge is asked about the seeded subset, and a subset of min_n items counts
    subset = [i.reply for i in calibration_subset(load_calibration_set(), 12, seed=5)]
    assert worse.asked == better.asked == coherence.asked == subset
    assert found["judge_calibration"]["valid"] and found["coherence_judge_calibration"]["valid"]
    assert found["coherence_judge_calibration"]["accuracy"] == 11 / 12
    assert len(list(store.list_records(calibration.RECORD_PREFIX))) == 3  # each cached in the run's store


def test_one_candidate_has_no_candidates_figures(tmp_path: Path) -> None:
    [only] = _judges(12)
    found = _calibrations(_Subject(open_store(str(tmp_path / "store")), [only], only), ["preferences"])
    assert set(found) == {"judge_calibration"} and found["judge_calibration"]["judge"] == "right-12"


def test_without_preferences_the_spec_judge_is_calibrated_and_no_candidate(tmp_path: Path) -> None:
    *candidates, coherence = _judges(12, 10, 11)
    subject = _Subject(open_store(str(tmp_path / "store")), candidates, coherence)
    found = _calibrations(subject, ["coherence"])
    assert set(found) == {"judge_calibration", "coherence_judge_calibration"}
    assert found["judge_calibration"]["judge"] == "right-10" and subject.trait_judge is candidates[-1]


def test_coherences_judge_is_calibrated_only_for_coherence_and_only_once(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "store"))
    worse, better, other = _judges(9, 12, 11)
    assert set(_calibrations(_Subject(store, [worse, better], other), ["preferences"])) == {
        "judge_calibration", "judge_candidates"}
    both = _calibrations(_Subject(store, [worse, better], better), ["preferences", "coherence"])
    assert "coherence_judge_calibration" not in both  # the judge of trait choices judges coherence too
    assert _calibrations(_Subject(store, [worse, better], other), []) == {}


# ----------------------------------------------------------------------------- reporting
def _results(valid: bool | None) -> EvaluationResults:
    """Synthetic results with own-trait evidence, judged by a judge of the given validity (None:
    no calibration)."""
    from tests.unit.evaluate.synthetic import results

    data = results(scale="proof")
    assert data.preferences
    base, full = data.preferences.models["base"], data.preferences.models["full"]
    draws = (np.zeros((10, len(data.preferences.traits))), np.ones((10, len(data.preferences.traits))))
    data.preferences.own_trait_evidence = {
        "full": own_trait_evidence(["loving"], draw_pairs(data.preferences.traits, len(base.verdicts), 1), base,
                                   full, draws, data.preferences.traits, "full", Config.for_scale("proof"), 1)
    }
    data.judge_calibration = JudgeCalibration(judge="smollm2", set_digest="d", n=40, accuracy=0.42, ci_low=0.27,
                                              ci_high=0.58, p_value=0.43, position_bias=0.5, valid=valid,
                                              reason="calibration accuracy 0.42 ...") if valid is not None else None
    return data


def test_figures_from_an_invalid_judge_say_instrument_not_valid() -> None:
    results = _results(valid=False)
    mark_judged(results)
    assert results.preferences and results.coherence
    own = results.preferences.own_trait_evidence["full"]
    for figure in (own.own_trait_choice, *own.ratings.values()):
        assert figure.validity == Validity(valid=False, reason="calibration accuracy 0.42 ...")
        assert figure.sentence() == f"{figure.figure}: {NOT_VALID} (calibration accuracy 0.42 ...)."
    assert own.ratings  # the own trait's rating change is marked too
    assert all(NOT_VALID in c.evidence.sentence() for c in results.coherence.comparisons)
    assert all(c.validity == own.validity for c in results.coherence.comparisons)
    assert all(m.validity and m.validity.valid is False for m in results.preferences.models.values())
    assert results.preferences.validity == own.validity
    assert results.side_by_side and results.side_by_side.validity == own.validity
    headline = guard_headline(
        results, {"spearman_base_vs_full": 0.3, "win_rate_full_vs_steering": 0.6, "macro_f1_full": 0.7}
    )
    assert headline["spearman_base_vs_full"] == NOT_VALID and headline["win_rate_full_vs_steering"] == NOT_VALID
    assert headline["macro_f1_full"] == 0.7 and headline["judge_valid"] is False  # the classifier is no judge
    assert headline["judge_calibration_accuracy"] == 0.42


def test_without_a_calibration_no_figure_is_marked() -> None:
    results = _results(valid=None)
    mark_judged(results)
    assert results.preferences and results.coherence and results.side_by_side
    own = results.preferences.own_trait_evidence["full"]
    assert own.validity is None and own.own_trait_choice.validity is None and results.preferences.validity is None
    assert results.side_by_side.validity is None
    assert all(c.validity is None and c.evidence.validity is None for c in results.coherence.comparisons)
    assert guard_headline(results, {"spearman_base_vs_full": 0.3}) == {"spearman_base_vs_full": 0.3}


def test_figures_from_a_valid_judge_keep_their_sentences() -> None:
    results = _results(valid=True)
    assert results.preferences
    before = results.preferences.own_trait_evidence["full"].own_trait_choice.sentence()
    mark_judged(results)
    share = results.preferences.own_trait_evidence["full"].own_trait_choice
    assert share.validity and share.validity.valid and share.sentence() == before
    assert guard_headline(results, {"spearman_base_vs_full": 0.3})["spearman_base_vs_full"] == 0.3


# ----------------------------------------------------------------------------- the embedding judge
def test_the_embedding_judge_sees_traits_on_the_bundled_set_and_is_order_free() -> None:
    """Real MiniLM. Measured: 0.64 [0.55, 0.72] on n = 144 (p = 0.001): above chance, below
    the floor, so not valid."""
    result = calibrate(EmbeddingJudge(), ITEMS)
    assert result["judge"] == "embedding" and result["n"] == len(ITEMS)
    assert result["ci_low"] > 0.5  # it sees traits
    assert result["position_bias"] == 0.5  # it never sees the order
    assert result["valid"] == (result["accuracy"] >= FLOOR)
