"""The statistics against independent references on many random cases: exact binomial and
McNemar against statsmodels and the binomial distribution's definition, Clopper-Pearson against
statsmodels' `proportion_confint`, bootstrap intervals and p-values against a direct
computation from their definitions; and every verdict at its boundaries (alpha, `min_n`,
n = 0 and 1)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from character import stats
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

CASES = settings(max_examples=150, deadline=None, derandomize=True,
                 suppress_health_check=[HealthCheck.too_slow])


def _percentile_interval(draws: np.ndarray) -> tuple[object, object]:
    """The 95% percentile interval of bootstrap draws, as numpy computes it."""
    return pytest.approx(np.percentile(draws, 2.5)), pytest.approx(np.percentile(draws, 97.5))


def _binomial_p_by_definition(k: int, n: int, p0: float) -> float:
    """Two-sided exact binomial p: the probability of every outcome at most as likely as k."""
    pmf = [math.comb(n, i) * p0**i * (1 - p0) ** (n - i) for i in range(n + 1)]
    return min(1.0, sum(q for q in pmf if q <= pmf[k] * (1 + 1e-7)))


@CASES
@given(st.integers(1, 60).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))),
       st.sampled_from([0.5, 0.25, 0.1, 0.75]))
def test_binomial_p_equals_the_definition(case: tuple[int, int], p0: float) -> None:
    k, n = case
    assert stats.binomial_p(k, n, p0) == pytest.approx(_binomial_p_by_definition(k, n, p0), rel=1e-6, abs=1e-12)


def test_binomial_p_of_no_trials_is_none() -> None:
    assert stats.binomial_p(0, 0) is None


@CASES
@given(st.integers(1, 200).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_clopper_pearson_equals_statsmodels(case: tuple[int, int]) -> None:
    from statsmodels.stats.proportion import proportion_confint

    k, n = case
    low, high = proportion_confint(k, n, alpha=0.05, method="beta")
    ours = stats.clopper_pearson(k, n)
    assert ours == (pytest.approx(0.0 if k == 0 else low, abs=1e-9), pytest.approx(1.0 if k == n else high, abs=1e-9))


@CASES
@given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=80))
def test_mcnemar_equals_statsmodels_exact(pairs: list[tuple[bool, bool]]) -> None:
    from statsmodels.stats.contingency_tables import mcnemar

    before, after = [b for b, _ in pairs], [a for _, a in pairs]
    b, c, p = stats.mcnemar(before, after)
    assert b == sum(x and not y for x, y in pairs) and c == sum(y and not x for x, y in pairs)
    table = [[sum(x and y for x, y in pairs), b], [c, sum(not x and not y for x, y in pairs)]]
    expected = mcnemar(table, exact=True).pvalue if b + c else 1.0
    assert p == pytest.approx(min(1.0, expected), abs=1e-12)


@CASES
@given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=60), st.integers(0, 10**6))
def test_paired_shares_is_the_mean_change_with_its_bootstrap_and_mcnemar(
    pairs: list[tuple[bool, bool]], seed: int
) -> None:
    before, after = [b for b, _ in pairs], [a for _, a in pairs]
    e = stats.paired_shares("change", before, after, "pairs", min_n=5, seed=seed, resamples=300)
    n = len(pairs)
    diffs = np.array(after, dtype=float) - np.array(before, dtype=float)
    draws = diffs[np.random.default_rng(seed).integers(0, n, (300, n))].mean(axis=1)
    assert e.value == pytest.approx(sum(after) / n - sum(before) / n)
    assert (e.ci_low, e.ci_high) == _percentile_interval(draws)
    assert e.p_value == stats.mcnemar(before, after)[2]
    assert (e.n, e.unit, e.min_n, e.test, e.null) == (n, "pairs", 5, "McNemar exact test", "no change")
    assert e.underpowered == (n < 5)


def test_paired_shares_of_no_items_is_no_figure() -> None:
    e = stats.paired_shares("change", [], [], "pairs")
    assert (e.value, e.n, e.p_value, e.ci_low, e.ci_high) == (None, 0, None, None, None)
    assert e.underpowered and not e.distinguishable and e.test == "McNemar exact test"


def _bootstrap_p_by_definition(draws: np.ndarray) -> float:
    """Twice the smaller share of draws on either side of zero (zero counts on both sides),
    plus one draw's worth, capped at 1."""
    below = sum(1 for d in draws if d <= 0) / len(draws)
    above = sum(1 for d in draws if d >= 0) / len(draws)
    return min(1.0, 2 * min(below, above) + 1 / (len(draws) + 1))


@CASES
@given(st.lists(st.sampled_from([-2.0, -1.0, -0.5, 0.0, 0.25, 0.5, 1.0, 1.5, 3.0]), min_size=1, max_size=300),
       st.integers(1, 100))
def test_from_draws_p_value_and_interval_equal_their_definitions(values: list[float], n: int) -> None:
    draws = np.array(values)
    e = stats.from_draws("rating change", 1.0, draws, n, "comparisons", min_n=10)
    assert e.p_value == pytest.approx(_bootstrap_p_by_definition(draws))
    assert (e.ci_low, e.ci_high) == _percentile_interval(draws)
    assert (e.value, e.n, e.unit, e.min_n, e.test) == (1.0, n, "comparisons", 10, "bootstrap test")


def test_from_draws_with_every_draw_on_one_side_has_the_smallest_p() -> None:
    draws = np.full(999, 0.5)  # all above zero, all below one
    assert stats.from_draws("x", 0.5, draws, 40, "items").p_value == pytest.approx(1 / 1000)
    assert stats.from_draws("x", -0.5, -draws, 40, "items").p_value == pytest.approx(1 / 1000)


def test_from_draws_with_no_draws_is_no_test() -> None:
    e = stats.from_draws("x", 0.3, np.array([]), 40, "items")
    assert e.p_value is None and (e.ci_low, e.ci_high) == (None, None) and not e.distinguishable
    assert e.verdict() == "no test possible"


def _evidence(p: float | None, n: int = 30, min_n: int = 20, alpha: float = 0.05) -> stats.Evidence:
    return stats.evidence("fig", 0.4, n, "items", (0.1, 0.7), "Clopper-Pearson 95%", "exact binomial test",
                          "chance (0.5)", p, min_n, alpha)


def test_a_p_value_exactly_at_alpha_is_not_distinguishable_and_just_below_is() -> None:
    assert not _evidence(0.05).distinguishable
    assert _evidence(0.0499999).distinguishable
    assert not _evidence(0.01, alpha=0.01).distinguishable and _evidence(0.0099, alpha=0.01).distinguishable


def test_n_at_min_n_counts_and_one_below_is_underpowered() -> None:
    assert not _evidence(0.001, n=20).underpowered and _evidence(0.001, n=20).distinguishable
    low = _evidence(0.001, n=19)
    assert low.underpowered and not low.distinguishable
    assert low.verdict() == "underpowered (n = 19 items < 20): not a result"


def test_the_record_keeps_every_field_it_was_given() -> None:
    record = _evidence(0.02).as_dict()
    assert {k: record[k] for k in ("figure", "value", "n", "unit", "ci_low", "ci_high", "interval", "test", "null",
                                   "p_value", "min_n", "underpowered", "distinguishable")} == {
        "figure": "fig", "value": 0.4, "n": 30, "unit": "items", "ci_low": 0.1, "ci_high": 0.7,
        "interval": "Clopper-Pearson 95%", "test": "exact binomial test", "null": "chance (0.5)", "p_value": 0.02,
        "min_n": 20, "underpowered": False, "distinguishable": True}
    assert record["sentence"] == ("fig: 0.40 [0.10, 0.70], n = 30 items, exact binomial test: "
                                  "distinguishable from chance (0.5) (p = 0.020).")
    assert stats.Evidence.model_validate(record) == _evidence(0.02)


def test_verdict_words_for_each_outcome() -> None:
    assert _evidence(0.2).verdict() == "not distinguishable from chance (0.5) (p = 0.200)"
    assert _evidence(None).verdict() == "no test possible"
    assert stats.format_p(0.001) == "p = 0.001" and stats.format_p(0.000999) == "p < 0.001"


def test_a_figure_from_an_invalid_instrument_says_so_instead_of_its_value() -> None:
    invalid = _evidence(0.001).model_copy(update={"validity": stats.Validity(valid=False, reason="judge at chance")})
    assert invalid.sentence() == f"fig: {stats.NOT_VALID} (judge at chance)."
    valid = _evidence(0.001).model_copy(update={"validity": stats.Validity(valid=True, reason="ok")})
    assert valid.sentence() == _evidence(0.001).sentence()


@CASES
@given(st.integers(0, 80).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))),
       st.sampled_from([0.5, 0.25]))
def test_share_is_k_over_n_with_its_exact_interval_and_test(case: tuple[int, int], chance: float) -> None:
    k, n = case
    e = stats.share("accuracy", k, n, "items", chance=chance, min_n=10)
    assert e.value == (k / n if n else None)
    assert (e.ci_low, e.ci_high) == stats.clopper_pearson(k, n)
    assert e.p_value == stats.binomial_p(k, n, chance)
    assert (e.n, e.unit, e.min_n, e.null) == (n, "items", 10, f"chance ({chance:g})")
    assert e.underpowered == (n < 10)


def test_share_of_one_item_is_underpowered_at_the_default_minimum() -> None:
    e = stats.share("accuracy", 1, 1, "items")
    assert e.value == 1.0 and e.underpowered and e.min_n == stats.MIN_N and e.p_value == pytest.approx(1.0)
    assert stats.share("accuracy", 3, 4, "items", null="no judge preference").null == "no judge preference"


@CASES
@given(st.integers(2, 4), st.integers(2, 6), st.integers(0, 10**6), st.data())
def test_macro_f1_evidence_is_the_mean_over_blocks_with_a_bounded_permutation_p(
    k: int, prompts: int, seed: int, data: st.DataObject
) -> None:
    from sklearn.metrics import f1_score

    classes = [f"c{i}" for i in range(k)]
    truth = [c for c in classes for _ in range(prompts)]
    blocks = [(truth, data.draw(st.lists(st.sampled_from(classes), min_size=len(truth), max_size=len(truth))))
              for _ in range(2)]
    e = stats.macro_f1("f1", blocks, classes, prompts, min_n=3, seed=seed, resamples=50)
    expected = np.mean([f1_score(t, p, labels=classes, average="macro", zero_division=0.0) for t, p in blocks])
    assert e.value == pytest.approx(expected)
    assert 1 / 51 <= (e.p_value or 0) <= 1.0
    assert e.ci_low is not None and e.ci_high is not None and e.ci_low <= e.ci_high
    assert (e.n, e.unit, e.min_n, e.test) == (prompts, "held-out prompts", 3, "permutation test")


def test_macro_f1_refuses_a_block_of_the_wrong_size_and_gives_no_figure_for_no_blocks() -> None:
    with pytest.raises(ValueError, match="expected 2 classes x 3 prompts"):
        stats.macro_f1("f1", [(["a"] * 3 + ["b"] * 2, ["a"] * 5)], ["a", "b"], 3)
    empty = stats.macro_f1("f1", [], ["a", "b"], 3)
    assert empty.value is None and empty.p_value is None and empty.n == 3
