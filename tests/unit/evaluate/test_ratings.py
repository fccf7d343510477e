"""Bradley-Terry, Elo and Spearman on comparisons whose truth is known."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from character.stages.evaluate import ratings

ITEMS = ["a", "b", "c", "d", "e", "f"]
TRUE = {"a": -1.5, "b": -0.8, "c": -0.2, "d": 0.3, "e": 0.9, "f": 1.3}


def simulate(n: int, seed: int) -> list[ratings.Comparison]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        x, y = rng.sample(ITEMS, 2)
        p_x = 1.0 / (1.0 + math.exp(TRUE[y] - TRUE[x]))
        out.append((x, y) if rng.random() < p_x else (y, x))
    return out


def test_bradley_terry_recovers_known_strengths_within_bootstrap_intervals() -> None:
    rated, _ = ratings.rate_traits(ITEMS, simulate(2000, seed=7), bootstrap=200, seed=1)
    # Strengths are identified up to a shift: compare on the Elo scale after centring both.
    truth = np.array([TRUE[i] for i in ITEMS]) * ratings.ELO_SCALE
    truth += ratings.ELO_START - truth.mean()
    estimate = {r.trait: r for r in rated}
    shift = np.mean([estimate[i].rating for i in ITEMS]) - ratings.ELO_START
    inside = sum(
        estimate[i].ci_low - shift <= t <= estimate[i].ci_high - shift
        for i, t in zip(ITEMS, truth, strict=True)
    )
    assert inside >= 5, [
        (i, estimate[i].ci_low, t, estimate[i].ci_high) for i, t in zip(ITEMS, truth, strict=True)
    ]
    assert sorted(ITEMS, key=lambda i: estimate[i].rating) == ITEMS  # the true order
    assert all(not r.insufficient and r.ci_low < r.rating < r.ci_high for r in rated)


def test_unbeaten_and_unseen_items_stay_finite() -> None:
    strengths = ratings.bradley_terry(["x", "y", "z"], [("x", "y")] * 20)
    assert np.all(np.isfinite(strengths))
    assert strengths[0] > strengths[2] > strengths[1]  # the unseen z sits between, at the prior's centre
    with pytest.raises(ValueError):
        ratings.bradley_terry(["x", "y"], [("x", "y")], prior=0.0)


def test_elo_matches_a_hand_computed_sequence() -> None:
    # 1) a beats b, both 1000: expected 0.5, a += 32 * 0.5 -> a 1016, b 984.
    # 2) a beats c: E_a = 1 / (1 + 10^((1000 - 1016) / 400)) = 0.523010, a += 32 * 0.476990 = 15.264
    #    -> a 1031.264, c 984.736.
    # 3) c beats b: E_c = 1 / (1 + 10^((984 - 984.736) / 400)) = 0.501060, c += 32 * 0.498940 = 15.966
    #    -> c 1000.702, b 968.034.
    # 4) b beats a: E_b = 1 / (1 + 10^((1031.264 - 968.034) / 400)) = 0.409996, b += 32 * 0.590004
    #    = 18.880 -> b 986.914, a 1012.384.
    elo = ratings.elo(["a", "b", "c"], [("a", "b"), ("a", "c"), ("c", "b"), ("b", "a")])
    assert elo["a"] == pytest.approx(1012.384, abs=0.01)
    assert elo["b"] == pytest.approx(986.914, abs=0.01)
    assert elo["c"] == pytest.approx(1000.702, abs=0.01)
    assert sum(elo.values()) == pytest.approx(3000.0)  # Elo conserves points


def test_spearman_on_known_rankings() -> None:
    assert ratings.spearman([1, 2, 3, 4], [10, 20, 30, 40]).rho == pytest.approx(1.0)
    assert ratings.spearman([1, 2, 3, 4], [4, 3, 2, 1]).rho == pytest.approx(-1.0)
    # one swap of adjacent ranks among 5: rho = 1 - 6*2/(5*24) = 0.9
    assert ratings.spearman([1, 2, 3, 4, 5], [1, 3, 2, 4, 5]).rho == pytest.approx(0.9)
    # unrated items are left out; fewer than 3 shared gives no number
    partial = ratings.spearman([1, None, 3, 4, 5], [1, 2, None, 4, 5])
    assert partial.traits == 3 and partial.rho == pytest.approx(1.0)
    assert ratings.spearman([1, None, 3], [1, 2, None]).rho is None


def test_spearman_interval_from_bootstrap_draws_brackets_the_estimate() -> None:
    comparisons = simulate(1500, seed=3)
    first, draws_a = ratings.rate_traits(ITEMS, comparisons, bootstrap=60, seed=1)
    second, draws_b = ratings.rate_traits(ITEMS, simulate(1500, seed=4), bootstrap=60, seed=2)
    agreement = ratings.spearman([r.rating for r in first], [r.rating for r in second], draws_a, draws_b)
    assert agreement.rho is not None and agreement.rho > 0.8
    assert agreement.ci_low <= agreement.rho <= agreement.ci_high


def test_items_with_too_few_comparisons_are_flagged_not_rated() -> None:
    comparisons = [("a", "b")] * 6 + [("c", "d")] * 2
    rated = {
        r.trait: r
        for r in ratings.rate_traits(["a", "b", "c", "d", "e"], comparisons, min_comparisons=5, bootstrap=20)[
            0
        ]
    }
    assert not rated["a"].insufficient and rated["a"].rating is not None
    for name in ("c", "d", "e"):
        assert rated[name].insufficient
        assert rated[name].rating is None and rated[name].ci_low is None and rated[name].ci_high is None
    assert rated["c"].comparisons == 2 and rated["e"].comparisons == 0
    assert rated["e"].elo == ratings.ELO_START
