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
@given(st.integers(1, 200).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))),
       st.sampled_from([0.95, 0.9, 0.99]))
def test_clopper_pearson_equals_statsmodels(case: tuple[int, int], level: float) -> None:
    from statsmodels.stats.proportion import proportion_confint

    k, n = case
    low, high = proportion_confint(k, n, alpha=1 - level, method="beta")
    ours = stats.clopper_pearson(k, n) if level == stats.LEVEL else stats.clopper_pearson(k, n, level)
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
    assert e.interval == "bootstrap over items 95%"
    assert e.underpowered == (n < 5)


def test_paired_shares_of_no_items_is_no_figure() -> None:
    e = stats.paired_shares("change", [], [], "pairs", min_n=5)
    assert (e.value, e.n, e.p_value, e.ci_low, e.ci_high) == (None, 0, None, None, None)
    assert e.underpowered and not e.distinguishable and e.min_n == 5
    assert (e.interval, e.test, e.null) == ("bootstrap 95%", "McNemar exact test", "no change")


def test_a_figure_without_value_or_interval_reads_a_dash_and_no_brackets() -> None:
    assert stats.paired_shares("change", [], [], "pairs", min_n=5).sentence() == (
        "change: –, n = 0 pairs, McNemar exact test: underpowered (n = 0 pairs < 5): not a result.")
    assert stats.from_draws("x", 0.3, np.array([]), 40, "items").sentence() == (
        "x: 0.30, n = 40 items, bootstrap test: no test possible.")
    assert stats.macro_f1("f1", [], ["a", "b"], 3, min_n=2).sentence() == (
        "f1: –, n = 3 held-out prompts, permutation test: no test possible.")


def test_the_default_seed_is_zero_so_a_run_draws_the_same_resamples() -> None:
    before = [False] * 12 + [True] * 8 + [False] * 5
    after = [True] * 12 + [True] * 8 + [False] * 5
    drawn = {seed: stats.paired_shares("change", before, after, "pairs", seed=seed, resamples=200) for seed in (0, 1)}
    assert stats.paired_shares("change", before, after, "pairs", resamples=200) == drawn[0] != drawn[1]
    truth = ["a"] * 8 + ["b"] * 8
    predicted = ["a", "a", "b", "a", "a", "b", "a", "a", "b", "b", "a", "b", "b", "b", "a", "b"]
    blocks = [(truth, predicted)]
    f1 = {seed: stats.macro_f1("f1", blocks, ["a", "b"], 8, seed=seed, resamples=200) for seed in (0, 1)}
    assert stats.macro_f1("f1", blocks, ["a", "b"], 8, resamples=200) == f1[0] != f1[1]


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
    assert (e.value, e.n, e.unit, e.min_n) == (1.0, n, "comparisons", 10)
    assert (e.interval, e.test, e.null) == ("bootstrap 95%", "bootstrap test", "no change")


def test_from_draws_with_every_draw_on_one_side_has_the_smallest_p() -> None:
    draws = np.full(999, 0.5)  # all above zero, all below one
    assert stats.from_draws("x", 0.5, draws, 40, "items").p_value == pytest.approx(1 / 1000)
    assert stats.from_draws("x", -0.5, -draws, 40, "items").p_value == pytest.approx(1 / 1000)


def test_from_draws_reads_half_precision_draws_in_double_precision() -> None:
    # numpy interpolates float16 percentiles in float16: the 2.5% point would come out as -2.5, not -2.49976
    draws = np.array([0.8, -0.7, 0.6, 0.6, -3.1, 0.3, -0.7, -0.2, 1.9, 0.5, 0.0], dtype=np.float16)
    e = stats.from_draws("rating change", 0.2, draws, 40, "comparisons")
    exact = draws.astype(np.float64)
    assert (e.ci_low, e.ci_high) == (pytest.approx(np.percentile(exact, 2.5), rel=1e-12),
                                     pytest.approx(np.percentile(exact, 97.5), rel=1e-12))


def test_from_draws_with_no_draws_is_no_test() -> None:
    e = stats.from_draws("x", 0.3, np.array([]), 40, "items", min_n=10)
    assert e.p_value is None and (e.ci_low, e.ci_high) == (None, None) and not e.distinguishable
    assert (e.value, e.n, e.unit, e.min_n) == (0.3, 40, "items", 10)
    assert (e.interval, e.test, e.null) == ("bootstrap 95%", "bootstrap test", "no change")
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
    assert (e.interval, e.test) == ("Clopper-Pearson 95%", "exact binomial test")
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
    no_blocks = stats.macro_f1("f1", [], ["a", "b"], 3, min_n=2)
    no_prompts = stats.macro_f1("f1", [([], [])], ["a", "b"], 0, min_n=2)
    for empty in (no_blocks, no_prompts):
        assert empty.value is None and empty.p_value is None and (empty.ci_low, empty.ci_high) == (None, None)
        assert (empty.unit, empty.min_n, empty.interval, empty.test, empty.null) == (
            "held-out prompts", 2, "bootstrap 95%", "permutation test", "chance")
    assert no_prompts.verdict() == "underpowered (n = 0 held-out prompts < 2): not a result"


def _macro_f1_by_definition(
    blocks: list[tuple[list[str], list[str]]], classes: list[str], prompts: int, seed: int, resamples: int
) -> tuple[float, float, np.ndarray]:
    """scikit-learn's macro-F1 (mean over blocks); the one-sided permutation p-value (each block's
    predictions shuffled, then as many resamples of held-out prompts, prompt j of every class
    together, drawn in that order from one generator) and the resampled macro-F1s."""
    from sklearn.metrics import f1_score

    def mean_f1(pairs: list[tuple[list[str], list[str]]]) -> float:
        return float(np.mean([f1_score(t, p, labels=classes, average="macro", zero_division=0.0) for t, p in pairs]))

    observed = mean_f1(blocks)
    rng = np.random.default_rng(seed)
    shuffled = [mean_f1([(t, [p[i] for i in rng.permutation(len(p))]) for t, p in blocks]) for _ in range(resamples)]
    p_value = (1 + sum(f >= observed - 1e-9 for f in shuffled)) / (1 + resamples)
    draws = []
    for _ in range(resamples):
        picks = rng.integers(0, prompts, prompts)
        rows = [c * prompts + j for c in range(len(classes)) for j in picks]
        draws.append(mean_f1([([t[r] for r in rows], [p[r] for r in rows]) for t, p in blocks]))
    return observed, p_value, np.array(draws)


@settings(max_examples=20, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(2, 3), st.integers(1, 5), st.integers(1, 3), st.integers(0, 10**6), st.data())
def test_macro_f1_p_value_and_interval_equal_their_definitions(
    k: int, prompts: int, n_blocks: int, seed: int, data: st.DataObject
) -> None:
    classes = [f"c{i}" for i in range(k)]
    truth = [c for c in classes for _ in range(prompts)]
    labels = st.sampled_from([*classes, "other"])
    blocks = [(truth, data.draw(st.lists(labels, min_size=len(truth), max_size=len(truth)))) for _ in range(n_blocks)]
    e = stats.macro_f1("f1", blocks, classes, prompts, min_n=3, seed=seed, resamples=15)
    observed, p_value, draws = _macro_f1_by_definition(blocks, classes, prompts, seed, 15)
    assert e.value == pytest.approx(observed)
    assert e.p_value == p_value
    assert (e.ci_low, e.ci_high) == _percentile_interval(draws)
    assert (e.interval, e.test, e.null) == ("bootstrap over prompts 95%", "permutation test", "chance")
