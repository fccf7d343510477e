"""Trait ratings from pairwise outcomes: Bradley-Terry with bootstrap intervals, online Elo, and
Spearman rank agreement. Pure numpy/scipy.

A comparison is `(winner, loser)`: in revealed preferences, the trait the judge saw expressed
beat the other trait the model was offered.

Bradley-Terry: P(i beats j) = sigmoid(s_i - s_j). We maximise the log-likelihood minus a tiny
L2 penalty `prior / 2 * sum(s^2)` (a Gaussian prior on strengths). Without it a trait that
always wins (or never appears) has an infinite (or undefined) MLE; with it every strength stays
finite and the scale is pinned (strengths centre near 0). Strengths are reported on the Elo
scale, `1000 + 400 / ln(10) * s`, so they read like the reference's Elo numbers.

Elo (the reference's method): every trait starts at 1000, one pass over the comparisons in
order, K=32. It depends on the order of the comparisons and has no uncertainty, which is why
Bradley-Terry is our headline.

The records (`TraitRating`, `RankAgreement`) are the results' own (`character.report.results`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.optimize import minimize

from character.report.results import RankAgreement, TraitRating

Comparison = tuple[str, str]
"""(winner, loser)."""

ELO_START = 1000.0
ELO_SCALE = 400.0 / math.log(10.0)
"""Elo points per unit of Bradley-Terry log-strength."""


def _index(items: Sequence[str], comparisons: Sequence[Comparison]) -> tuple[np.ndarray, np.ndarray]:
    position = {item: i for i, item in enumerate(items)}
    unknown = {x for pair in comparisons for x in pair if x not in position}
    if unknown:
        raise ValueError(f"comparisons name items outside the list: {sorted(unknown)[:5]}")
    winners = np.array([position[w] for w, _ in comparisons], dtype=np.int64)
    losers = np.array([position[lo] for _, lo in comparisons], dtype=np.int64)
    return winners, losers


def _fit(
    n: int, winners: np.ndarray, losers: np.ndarray, prior: float, start: np.ndarray | None = None
) -> np.ndarray:
    """Penalised maximum-likelihood log-strengths (L-BFGS with the exact gradient)."""

    def loss_and_grad(s: np.ndarray) -> tuple[float, np.ndarray]:
        margin = s[winners] - s[losers]
        # -log sigmoid(m) = log(1 + exp(-m)), computed stably
        loss = float(np.logaddexp(0.0, -margin).sum() + 0.5 * prior * s @ s)
        p_loss = 1.0 / (1.0 + np.exp(margin))  # d/dm of the loss is -(1 - sigmoid(m))
        grad = prior * s
        grad -= np.bincount(winners, weights=p_loss, minlength=n)
        grad += np.bincount(losers, weights=p_loss, minlength=n)
        return loss, grad

    x0 = np.zeros(n) if start is None else start
    result = minimize(loss_and_grad, x0, jac=True, method="L-BFGS-B", options={"maxiter": 500, "gtol": 1e-8})
    return np.asarray(result.x)


def bradley_terry(items: Sequence[str], comparisons: Sequence[Comparison], prior: float = 0.01) -> np.ndarray:
    """Log-strengths of `items` (same order) fitted to `comparisons` with an L2 prior."""
    if prior <= 0:
        raise ValueError("prior must be > 0: it keeps unbeaten or unseen items finite")
    winners, losers = _index(items, comparisons)
    return _fit(len(items), winners, losers, prior)


def bootstrap_bradley_terry(
    items: Sequence[str],
    comparisons: Sequence[Comparison],
    samples: int = 200,
    prior: float = 0.01,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(fit on all comparisons, `samples` x len(items) fits on comparisons resampled with
    replacement). Each refit starts from the full fit, so it converges in few steps."""
    winners, losers = _index(items, comparisons)
    full = _fit(len(items), winners, losers, prior)
    rng = np.random.default_rng(seed)
    draws = np.empty((samples, len(items)))
    for b in range(samples):
        pick = rng.integers(0, len(comparisons), len(comparisons))
        draws[b] = _fit(len(items), winners[pick], losers[pick], prior, start=full)
    return full, draws


def elo(
    items: Sequence[str], comparisons: Sequence[Comparison], k: float = 32.0, start: float = ELO_START
) -> dict[str, float]:
    """Online Elo: one pass over `comparisons` in order (the reference's rating)."""
    ratings = dict.fromkeys(items, start)
    for winner, loser in comparisons:
        expected = 1.0 / (1.0 + 10.0 ** ((ratings[loser] - ratings[winner]) / 400.0))
        ratings[winner] += k * (1.0 - expected)
        ratings[loser] -= k * (1.0 - expected)
    return ratings


def to_elo_scale(strengths: np.ndarray) -> np.ndarray:
    return ELO_START + ELO_SCALE * strengths


def rate_traits(
    items: Sequence[str],
    comparisons: Sequence[Comparison],
    min_comparisons: int = 5,
    bootstrap: int = 200,
    level: float = 0.95,
    prior: float = 0.01,
    seed: int = 0,
) -> tuple[list[TraitRating], np.ndarray]:
    """Every item's rating, and the bootstrap draws (Elo scale, samples x items) for
    downstream intervals such as the Spearman one. Items with fewer than `min_comparisons`
    are flagged insufficient."""
    counts = {item: 0 for item in items}
    wins = {item: 0 for item in items}
    for winner, loser in comparisons:
        counts[winner] += 1
        counts[loser] += 1
        wins[winner] += 1
    if comparisons:
        full, draws = bootstrap_bradley_terry(items, comparisons, bootstrap, prior, seed)
    else:
        full, draws = np.zeros(len(items)), np.zeros((bootstrap, len(items)))
    full, draws = to_elo_scale(full), to_elo_scale(draws)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(draws, [tail, 100.0 - tail], axis=0) if bootstrap else (full, full)
    online = elo(items, comparisons)
    out = []
    for i, item in enumerate(items):
        enough = counts[item] >= min_comparisons
        out.append(
            TraitRating(
                trait=item,
                comparisons=counts[item],
                wins=wins[item],
                rating=float(full[i]) if enough else None,
                ci_low=float(low[i]) if enough else None,
                ci_high=float(high[i]) if enough else None,
                elo=online[item],
                insufficient=not enough,
            )
        )
    return out, draws


def spearman(
    a: Sequence[float | None],
    b: Sequence[float | None],
    draws_a: np.ndarray | None = None,
    draws_b: np.ndarray | None = None,
    level: float = 0.95,
) -> RankAgreement:
    """Spearman's rho between ratings `a` and `b` (aligned lists; None = not rated), with an
    interval from the bootstrap draws of each (samples x items, the same order)."""
    from scipy.stats import spearmanr

    keep = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x is not None and y is not None]
    if len(keep) < 3:
        return RankAgreement(None, None, None, len(keep))
    rho = float(spearmanr([a[i] for i in keep], [b[i] for i in keep]).statistic)
    if math.isnan(rho):  # one side rates every trait the same: no ranking to agree with
        return RankAgreement(None, None, None, len(keep))
    low = high = None
    if draws_a is not None and draws_b is not None:
        samples = min(len(draws_a), len(draws_b))
        rhos = np.array([spearmanr(draws_a[s, keep], draws_b[s, keep]).statistic for s in range(samples)])
        rhos = rhos[~np.isnan(rhos)]
        if len(rhos):
            tail = (1.0 - level) / 2.0 * 100.0
            low, high = (float(v) for v in np.percentile(rhos, [tail, 100.0 - tail]))
    return RankAgreement(rho, low, high, len(keep))
