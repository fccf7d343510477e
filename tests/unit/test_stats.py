"""The statistics behind every figure, checked against cases computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from character import stats
from hypothesis import given, settings
from hypothesis import strategies as st


def test_exact_binomial_p_value_by_hand() -> None:
    # 9 of 10 against 1/2: P(X >= 9) = (10 + 1) / 1024, two-sided doubles it
    assert stats.binomial_p(9, 10) == pytest.approx(22 / 1024)
    # 5 of 10 is the most likely outcome: p = 1
    assert stats.binomial_p(5, 10) == pytest.approx(1.0)
    # against 1/4: 0 of 4 has probability (3/4)^4; every outcome at most as likely is counted
    # (k = 2: 54/256, 3: 12/256, 4: 1/256; k = 1 (108/256) is more likely and left out)
    assert stats.binomial_p(0, 4, 0.25) == pytest.approx((81 + 54 + 12 + 1) / 256)


def test_clopper_pearson_edges_by_hand() -> None:
    # 0 of n: upper bound solves (1 - p)^n = 0.025; n of n: lower bound solves p^n = 0.025
    low, high = stats.clopper_pearson(0, 10)
    assert low == 0.0 and high == pytest.approx(1 - 0.025 ** (1 / 10))
    low, high = stats.clopper_pearson(10, 10)
    assert high == 1.0 and low == pytest.approx(0.025 ** (1 / 10))
    assert stats.clopper_pearson(0, 0) == (None, None)


def test_mcnemar_counts_only_the_pairs_that_changed() -> None:
    # 6 pairs: 1 right before and after, 1 wrong both times, 4 went wrong -> right, 0 the other way
    before = [True, False, False, False, False, False]
    after = [True, False, True, True, True, True]
    b, c, p = stats.mcnemar(before, after)
    assert (b, c) == (0, 4)
    assert p == pytest.approx(2 * 0.5**4)  # two-sided exact: 2 * (1/2)^4 = 0.125
    # 1 changed each way: no evidence of change
    assert stats.mcnemar([True, False], [False, True])[2] == pytest.approx(1.0)
    # nothing changed: p = 1
    assert stats.mcnemar([True, False], [True, False]) == (0, 0, 1.0)
    with pytest.raises(ValueError, match="length"):
        stats.mcnemar([True], [True, False])


def test_paired_shares_value_interval_and_test() -> None:
    before = [False] * 30 + [True] * 10
    after = [True] * 20 + [False] * 10 + [True] * 10  # 20 flipped to right, none to wrong
    e = stats.paired_shares("held-out accuracy", before, after, "pairs", min_n=20, seed=1)
    assert e.value == pytest.approx(0.5)
    assert e.p_value == pytest.approx(2 * 0.5**20)
    assert e.ci_low is not None and e.ci_high is not None and e.ci_low < 0.5 < e.ci_high and e.ci_low > 0.2
    assert e.distinguishable and not e.underpowered
    assert "distinguishable from no change" in e.verdict()


def test_a_figure_below_the_minimum_n_is_underpowered_whatever_its_p_value() -> None:
    e = stats.share("win rate", 8, 8, "pairs", min_n=20)
    assert e.p_value == pytest.approx(2 * 0.5**8)  # < 0.01
    assert e.underpowered and not e.distinguishable
    assert e.verdict().startswith("underpowered")
    assert "underpowered" in e.sentence()


def test_a_null_result_is_not_distinguishable() -> None:
    e = stats.share("win rate", 11, 20, "pairs", min_n=20)
    assert not e.underpowered and not e.distinguishable
    assert "not distinguishable from chance (0.5)" in e.verdict()


def test_macro_f1_permutation_p_value_matches_the_exact_count() -> None:
    # truth a a b b, predicted perfectly: of the 4! orderings of the predictions, 2! * 2! = 4
    # reproduce the truth (macro-F1 1), so the exact one-sided p-value is 4/24 = 1/6
    truth, predicted = ["a", "a", "b", "b"], ["a", "a", "b", "b"]
    e = stats.macro_f1("f1", [(truth, predicted)], ["a", "b"], prompts=2, min_n=1, resamples=4000, seed=3)
    assert e.value == pytest.approx(1.0)
    assert e.p_value == pytest.approx(1 / 6, abs=0.02)


def test_macro_f1_of_a_good_classifier_is_above_chance_and_a_coin_is_not() -> None:
    rng = np.random.default_rng(0)
    n = 40
    truth = ["persona"] * n + ["base"] * n
    good = [t if rng.random() < 0.85 else ("base" if t == "persona" else "persona") for t in truth]
    coin = [str(rng.choice(["persona", "base"])) for _ in truth]
    found = stats.macro_f1("good", [(truth, good)], ["persona", "base"], n, seed=1)
    assert found.distinguishable and found.ci_low is not None and found.ci_low > 0.6
    noise = stats.macro_f1("coin", [(truth, coin)], ["persona", "base"], n, seed=1)
    assert not noise.distinguishable


CLASSES = ["a", "b", "c", "d"]


@st.composite
def labelled_blocks(draw: st.DrawFn) -> tuple[list[str], list[str], list[str], int]:
    """Classes, then truth laid out class by class (`prompts` answers each, as robustness lays
    it out) and predictions that may name any class or a label outside them."""
    classes = CLASSES[: draw(st.integers(2, len(CLASSES)))]
    prompts = draw(st.integers(1, 6))
    truth = [c for c in classes for _ in range(prompts)]
    predicted = draw(st.lists(st.sampled_from([*classes, "other"]), min_size=len(truth), max_size=len(truth)))
    return classes, truth, predicted, prompts


@settings(max_examples=200, deadline=None)
@given(labelled_blocks())
def test_macro_f1_equals_scikit_learn_on_random_cases(case: tuple[list[str], list[str], list[str], int]) -> None:
    from sklearn.metrics import f1_score

    classes, truth, predicted, prompts = case
    expected = f1_score(truth, predicted, labels=classes, average="macro", zero_division=0.0)
    assert stats.macro_f1_score(truth, predicted, classes) == pytest.approx(expected)
    evidence = stats.macro_f1("f1", [(truth, predicted)], classes, prompts, min_n=1, resamples=1)
    assert evidence.value == pytest.approx(expected)


def test_macro_f1_counts_a_never_predicted_class_as_zero() -> None:
    assert stats.macro_f1_score(["a", "a", "b", "b"], ["a", "a", "a", "a"], ["a", "b"]) == (2 / 3 + 0) / 2


def test_macro_f1_counts_a_class_neither_true_nor_predicted_as_zero() -> None:
    from sklearn.metrics import f1_score

    # "b" has no true answer and no prediction: F1 = 0 / 0, scored 0 as scikit-learn's zero_division=0 does
    assert stats.macro_f1_score(["a", "a"], ["a", "a"], ["a", "b"]) == 0.5
    assert f1_score(["a", "a"], ["a", "a"], labels=["a", "b"], average="macro", zero_division=0.0) == 0.5


def test_macro_f1_refuses_true_labels_outside_the_classes() -> None:
    with pytest.raises(ValueError, match=r"\['z'\] are not among the classes"):
        stats.macro_f1_score(["a", "z"], ["a", "a"], ["a", "b"])
    with pytest.raises(ValueError, match="differ in length"):
        stats.macro_f1_score(["a", "b"], ["a"], ["a", "b"])


def test_bootstrap_difference_from_draws() -> None:
    shifted = np.linspace(10.0, 50.0, 1000)  # every draw above zero
    e = stats.from_draws("rating change", 30.0, shifted, 40, "comparisons")
    assert e.ci_low == pytest.approx(np.percentile(shifted, 2.5)) and e.distinguishable
    assert e.p_value is not None and e.p_value < 0.01
    centred = np.linspace(-20.0, 20.0, 1000)
    assert not stats.from_draws("rating change", 0.0, centred, 40, "comparisons").distinguishable


def test_summary_puts_distinguishable_results_before_null_results() -> None:
    null = stats.share("coin", 11, 20, "pairs")
    result = stats.share("win rate", 19, 20, "pairs")
    lines = stats.summary({"null": null, "result": result})
    assert [line.split(":")[0] for line in lines] == ["win rate", "coin"]


def test_the_record_holds_validity_only_when_a_judge_was_involved() -> None:
    e = stats.share("win rate", 19, 20, "pairs")
    assert "validity" not in e.as_dict()
    judged = e.model_copy(update={"validity": stats.Validity(valid=True, reason="agrees with people")})
    assert judged.as_dict()["validity"] == {"valid": True, "reason": "agrees with people"}


def test_summary_puts_results_before_underpowered_figures() -> None:
    underpowered = stats.share("small", 5, 5, "pairs", min_n=20)
    result = stats.paired_shares("big", [False] * 25, [True] * 25, "pairs")
    lines = stats.summary({"a": underpowered, "b": result.as_dict()})
    assert lines[0].startswith("big") and "underpowered" in lines[1]
    assert not math.isnan(result.value or 0.0)
