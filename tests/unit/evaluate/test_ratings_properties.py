"""Bradley-Terry on cases small enough to solve by hand, and what a rating reports.

Two items, a and b, with a beating b `w` times and b beating a `l` times: by symmetry the
penalised fit has s_a = -s_b = x, and setting the derivative of
    w * log(1 + e^(-2x)) + l * log(1 + e^(2x)) + prior * x^2
to zero gives  (w + l) * sigmoid(2x) - w + prior * x = 0, solved here by bisection.
Without the prior (prior -> 0) x = ln(w / l) / 2.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats  # noqa: F401  spearman imports it when called: load it once, not in every mutant's fork
from character.stages.evaluate import ratings


def hand_solution(wins: int, losses: int, prior: float) -> float:
    """The root of (w + l) * sigmoid(2x) - w + prior * x, by bisection on [-10, 10]."""

    def f(x: float) -> float:
        return (wins + losses) / (1.0 + math.exp(-2.0 * x)) - wins + prior * x

    low, high = -10.0, 10.0
    for _ in range(200):
        mid = (low + high) / 2.0
        if f(mid) > 0:
            high = mid
        else:
            low = mid
    return (low + high) / 2.0


def comparisons(wins: int, losses: int) -> list[ratings.Comparison]:
    return [("a", "b")] * wins + [("b", "a")] * losses


@pytest.mark.parametrize(("wins", "losses", "prior"), [(3, 1, 1.0), (3, 1, 0.01), (2, 0, 1.0), (1, 4, 0.5)])
def test_bradley_terry_matches_the_hand_worked_two_item_case(wins: int, losses: int, prior: float) -> None:
    x = hand_solution(wins, losses, prior)
    fitted = ratings.bradley_terry(["a", "b"], comparisons(wins, losses), prior=prior)
    assert fitted == pytest.approx([x, -x], abs=1e-4)


def test_the_prior_shrinks_strengths_by_the_hand_computed_amount() -> None:
    """3 wins to 1: ln(3)/2 = 0.549 with almost no prior, 0.342 with prior 1 (the prior is
    really in the fit, not only in its docstring)."""
    weak = ratings.bradley_terry(["a", "b"], comparisons(3, 1), prior=1e-6)
    strong = ratings.bradley_terry(["a", "b"], comparisons(3, 1), prior=1.0)
    assert weak[0] == pytest.approx(math.log(3) / 2, abs=1e-3)
    assert strong[0] == pytest.approx(0.3422, abs=1e-3)


def test_an_unseen_item_sits_at_zero_and_an_unbeaten_one_is_finite() -> None:
    fitted = ratings.bradley_terry(["a", "b", "c"], comparisons(2, 0), prior=1.0)
    x = hand_solution(2, 0, 1.0)
    assert fitted == pytest.approx([x, -x, 0.0], abs=1e-4)


@pytest.mark.parametrize(("wins", "losses", "prior"), [(2, 0, 1.0), (6, 3, 0.01), (30, 7, 0.01)])
def test_the_fit_converges_tightly(wins: int, losses: int, prior: float) -> None:
    """Ratings are compared across runs and bootstrap draws: the fit stops within 1e-8 of the
    optimum, not at the optimiser's default tolerance (about 1e-6 off on these cases)."""
    x = hand_solution(wins, losses, prior)
    assert ratings.bradley_terry(["a", "b"], comparisons(wins, losses), prior=prior) == pytest.approx([x, -x], abs=1e-8)


def test_no_comparisons_leave_every_strength_at_zero() -> None:
    assert np.array_equal(ratings.bradley_terry(["a", "b"], []), [0.0, 0.0])


def test_a_non_positive_prior_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^prior must be > 0: it keeps unbeaten or unseen items finite$"):
        ratings.bradley_terry(["a", "b"], comparisons(1, 1), prior=0.0)


def test_comparisons_naming_unknown_items_are_refused() -> None:
    with pytest.raises(ValueError, match=r"^comparisons name items outside the list: \['z'\]$"):
        ratings.bradley_terry(["a", "b"], [("a", "z")])
    with pytest.raises(ValueError) as err:  # the first five, sorted
        ratings.bradley_terry(["a"], [("a", name) for name in "zyxwvu"])
    assert str(err.value) == "comparisons name items outside the list: ['u', 'v', 'w', 'x', 'y']"


def test_rate_traits_reports_the_hand_worked_fit_on_the_elo_scale() -> None:
    """Counts, wins, the rating (1000 + 400 / ln 10 * x), an interval around it, and the
    online Elo of the same comparisons."""
    x = hand_solution(3, 1, 1.0)
    rated, draws = ratings.rate_traits(["a", "b", "c"], comparisons(3, 1), min_comparisons=4,
                                       bootstrap=50, prior=1.0, seed=3)
    a, b, c = rated
    assert (a.trait, a.comparisons, a.wins, b.comparisons, b.wins) == ("a", 4, 3, 4, 1)
    assert a.rating == pytest.approx(1000 + 400 / math.log(10) * x, abs=0.05)
    assert b.rating == pytest.approx(1000 - 400 / math.log(10) * x, abs=0.05)
    assert a.rating is not None and a.ci_low is not None and a.ci_high is not None
    assert a.ci_low <= a.rating <= a.ci_high and a.ci_low < a.ci_high
    assert draws.shape == (50, 3)
    expected_elo = ratings.elo(["a", "b", "c"], comparisons(3, 1))
    assert (a.elo, b.elo, c.elo) == (expected_elo["a"], expected_elo["b"], 1000.0)
    assert c.insufficient and c.comparisons == 0 and (c.rating, c.ci_low, c.ci_high) == (None, None, None)
    assert not a.insufficient and not b.insufficient


def test_the_interval_level_sets_its_width() -> None:
    rated_95, _ = ratings.rate_traits(["a", "b"], comparisons(6, 3), bootstrap=200, seed=1)
    rated_50, _ = ratings.rate_traits(["a", "b"], comparisons(6, 3), bootstrap=200, seed=1, level=0.5)
    wide, narrow = rated_95[0], rated_50[0]
    assert wide.ci_low < narrow.ci_low < narrow.ci_high < wide.ci_high  # type: ignore[operator]


def test_no_comparisons_rates_nobody() -> None:
    rated, draws = ratings.rate_traits(["a", "b"], [], min_comparisons=0, bootstrap=10)
    assert [r.rating for r in rated] == [1000.0, 1000.0] and draws.shape == (10, 2)


def test_elo_matches_hand_computed_numbers() -> None:
    """a beats b, then b beats a: 1016 / 984, then b gains 32 * (1 - 1 / (1 + 10^(-32/400)))."""
    first = ratings.elo(["a", "b"], [("a", "b")])
    assert first == {"a": 1016.0, "b": 984.0}
    both = ratings.elo(["a", "b"], [("a", "b"), ("b", "a")])
    assert both["b"] == pytest.approx(1001.4695, abs=1e-3)
    assert both["a"] == pytest.approx(998.5305, abs=1e-3)
    assert ratings.elo(["a", "b"], [("a", "b")], k=10.0, start=1500.0) == {"a": 1505.0, "b": 1495.0}


def test_spearman_matches_the_textbook_formula() -> None:
    """One swapped pair among four: rho = 1 - 6 * 2 / (4 * 15) = 0.8; unrated traits are left out."""
    agreement = ratings.spearman([1.0, 2.0, 3.0, 4.0, None], [10.0, 20.0, 40.0, 30.0, 5.0])
    assert agreement.rho == pytest.approx(0.8) and agreement.traits == 4
    assert ratings.spearman([1.0, 2.0, None], [1.0, 2.0, 3.0]).rho is None
    assert ratings.spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]).rho is None


def test_spearman_interval_comes_from_paired_draws() -> None:
    draws_a = np.array([[1.0, 2.0, 3.0], [1.0, 3.0, 2.0], [3.0, 2.0, 1.0]])
    draws_b = np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    agreement = ratings.spearman([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], draws_a, draws_b, level=0.0)
    # rhos of the draws: 1, 0.5, -1; a 0% interval is the median
    assert agreement.ci_low == pytest.approx(0.5) and agreement.ci_high == pytest.approx(0.5)


def test_the_default_prior_is_the_documented_tiny_one() -> None:
    assert ratings.bradley_terry(["a", "b"], comparisons(3, 1)) == pytest.approx(
        [hand_solution(3, 1, 0.01), -hand_solution(3, 1, 0.01)], abs=1e-4)
    full, draws = ratings.bootstrap_bradley_terry(["a", "b"], comparisons(3, 1))
    assert full == pytest.approx([hand_solution(3, 1, 0.01), -hand_solution(3, 1, 0.01)], abs=1e-4)
    assert draws.shape == (200, 2)


def test_the_bootstrap_is_reproducible_by_seed() -> None:
    comps = comparisons(5, 3)
    assert np.array_equal(ratings.bootstrap_bradley_terry(["a", "b"], comps, 30, seed=4)[1],
                          ratings.bootstrap_bradley_terry(["a", "b"], comps, 30, seed=4)[1])
    assert not np.array_equal(ratings.bootstrap_bradley_terry(["a", "b"], comps, 30, seed=4)[1],
                              ratings.bootstrap_bradley_terry(["a", "b"], comps, 30, seed=5)[1])
    assert np.array_equal(ratings.bootstrap_bradley_terry(["a", "b"], comps, 30)[1],
                          ratings.bootstrap_bradley_terry(["a", "b"], comps, 30, seed=0)[1])


def test_every_comparison_can_be_drawn_by_the_bootstrap() -> None:
    """c's only win is the first comparison: resamples that draw it rate c above the unseen
    level (0), the others exactly at it."""
    comps: list[ratings.Comparison] = [("c", "a"), ("a", "b"), ("a", "b")]
    _, draws = ratings.bootstrap_bradley_terry(["a", "b", "c"], comps, samples=100, prior=1.0, seed=2)
    assert (draws[:, 2] > 0.01).any() and (np.abs(draws[:, 2]) < 1e-6).any()


def test_rate_traits_defaults_are_the_documented_ones() -> None:
    """Five comparisons make a trait rated (c has five, d four), the prior is 0.01, 200
    bootstrap draws from seed 0, and a 95% percentile interval of the draws."""
    comps = [*comparisons(9, 4), ("c", "a"), ("c", "a"), ("a", "c"), ("a", "c"), ("b", "c")]
    comps += [("d", "a"), ("d", "b"), ("a", "d"), ("b", "d")]
    rated, draws = ratings.rate_traits(["a", "b", "c", "d"], comps)
    assert [(r.comparisons, r.insufficient) for r in rated] == [(19, False), (16, False), (5, False), (4, True)]
    full, expected = ratings.bootstrap_bradley_terry(["a", "b", "c", "d"], comps, 200, 0.01, 0)
    assert np.array_equal(draws, ratings.to_elo_scale(expected))
    for i, r in enumerate(rated[:3]):
        assert r.rating == pytest.approx(float(ratings.to_elo_scale(full)[i]), abs=1e-9)
        low, high = np.percentile(draws[:, i], [2.5, 97.5])
        assert (r.ci_low, r.ci_high) == (pytest.approx(low, abs=1e-9), pytest.approx(high, abs=1e-9))


def test_rate_traits_draws_come_from_its_seed() -> None:
    comps = comparisons(6, 3)
    _, draws = ratings.rate_traits(["a", "b"], comps, bootstrap=20, seed=7)
    _, expected = ratings.bootstrap_bradley_terry(["a", "b"], comps, 20, seed=7)
    assert np.array_equal(draws, ratings.to_elo_scale(expected))


def test_without_bootstrap_the_interval_is_the_rating() -> None:
    (a, _), draws = ratings.rate_traits(["a", "b"], comparisons(6, 3), bootstrap=0, prior=1.0)
    assert draws.shape == (0, 2)
    assert a.ci_low == a.ci_high == a.rating == pytest.approx(1000 + 400 / math.log(10) * hand_solution(6, 3, 1.0))


def test_spearman_needs_three_traits_rated_on_both_sides() -> None:
    assert ratings.spearman([1.0, 2.0, 3.0, None], [3.0, 2.0, 1.0, 4.0]) == ratings.RankAgreement(-1.0, None, None, 3)
    assert ratings.spearman([1.0, 2.0, 3.0], [3.0, None, 1.0]) == ratings.RankAgreement(None, None, None, 2)
    assert ratings.spearman([1.0, 2.0, 3.0], [5.0, 5.0, 5.0]) == ratings.RankAgreement(None, None, None, 3)
    with pytest.raises(ValueError):  # the lists are aligned trait by trait
        ratings.spearman([1.0, 2.0, 3.0], [1.0, 2.0])


def test_spearman_interval_defaults_to_95_percent_of_the_draws_that_rank() -> None:
    """Draw rhos 1, 0.5, -1 (a constant draw has none and is dropped): the 2.5th and 97.5th
    percentiles interpolate to -1 + 0.05 * 1.5 = -0.925 and 0.5 + 0.95 * 0.5 = 0.975."""
    draws_a = np.array([[1.0, 2.0, 3.0], [1.0, 3.0, 2.0], [3.0, 2.0, 1.0], [2.0, 2.0, 2.0]])
    draws_b = np.array([[1.0, 2.0, 3.0]] * 5)  # one draw more than a: the extra one is not paired
    agreement = ratings.spearman([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], draws_a, draws_b)
    assert agreement == ratings.RankAgreement(1.0, pytest.approx(-0.925), pytest.approx(0.975), 3)  # type: ignore[arg-type]
    assert ratings.spearman([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], draws_a[3:], draws_b[3:]).ci_low is None
    assert ratings.spearman([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], draws_a, None).ci_low is None
    assert ratings.spearman([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], None, draws_b).ci_high is None
