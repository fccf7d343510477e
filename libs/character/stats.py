"""The evidence behind every headline figure (the evaluation's and the stages' own checks): a
95% interval and a test against "no effect" suited to the design, and a verdict in words.

- a share of successes (an accuracy, a win rate): exact binomial test against the share
  expected by chance, Clopper-Pearson interval (`share`);
- the same items before and after training (held-out preference accuracy, capability items,
  the persona-trait choice on the same prompt and trait pair): McNemar's exact test on the
  discordant items, bootstrap interval over items for the difference (`paired_shares`);
- a classifier's macro-F1 against chance: permutation test (predictions shuffled against the
  truth, within each attack), bootstrap interval over held-out prompts (`macro_f1`);
- a difference read from bootstrap draws (trait ratings): percentile interval, two-sided
  bootstrap p-value (`from_draws`).

Every figure rests on `n` units (pairs, prompts, comparisons, items). Below `min_n` it is
flagged `underpowered`: shown, but never called a result, whatever its p-value.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, SerializerFunctionWrapHandler, model_serializer

LEVEL = 0.95
ALPHA = 0.05
MIN_N = 20
"""Default minimum number of units for a figure to count: below it even a large effect
(a 0.5 -> 0.8 change in a share) is missed more often than found at alpha 0.05."""
RESAMPLES = 2000
NOT_VALID = "instrument not valid"
"""Said instead of a figure read off an instrument (a judge) that is not valid."""


class Validity(BaseModel):
    """Whether the instrument a figure is read off (a judge) passed its calibration."""

    model_config = ConfigDict(frozen=True)

    valid: bool
    """The instrument's calibration says it measures what the figure claims."""
    reason: str
    """Why, in words (its calibration figure and the rule it met or missed)."""


class Evidence(BaseModel):
    """One headline figure with what supports it (stored in results.json as a dict, with its
    `verdict` and `sentence` in words; those are recomputed, never read back)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    figure: str
    """What is measured, in words."""
    value: float | None
    """The figure itself (a share, a difference, a macro-F1)."""
    n: int
    """How many units it rests on."""
    unit: str
    """What a unit is ("held-out pairs", "prompts", ...)."""
    ci_low: float | None
    ci_high: float | None
    """95% interval of `value`."""
    interval: str
    """How the interval was computed."""
    test: str
    """The test against no effect."""
    null: str
    """The "no effect" it tests against, in words."""
    p_value: float | None
    min_n: int
    underpowered: bool
    """Fewer than `min_n` units: not a result."""
    distinguishable: bool
    """p < alpha and not underpowered: the effect is distinguishable from none."""
    validity: Validity | None = None
    """For a figure read off a judge: its calibration verdict (None: no judge involved)."""

    def verdict(self) -> str:
        """"underpowered", "distinguishable from no effect" or "not distinguishable ..."."""
        if self.underpowered:
            return f"underpowered (n = {self.n} {self.unit} < {self.min_n}): not a result"
        if self.p_value is None:
            return "no test possible"
        if self.distinguishable:
            return f"distinguishable from {self.null} ({format_p(self.p_value)})"
        return f"not distinguishable from {self.null} ({format_p(self.p_value)})"

    def sentence(self) -> str:
        """One line for the report's summary; for a figure whose instrument is not valid, that
        instead of its value (the one wording of it)."""
        if self.validity is not None and not self.validity.valid:
            return f"{self.figure}: {NOT_VALID} ({self.validity.reason})."
        value = "–" if self.value is None else f"{self.value:.2f}"
        interval = "" if self.ci_low is None else f" [{self.ci_low:.2f}, {self.ci_high:.2f}]"
        return f"{self.figure}: {value}{interval}, n = {self.n} {self.unit}, {self.test}: {self.verdict()}."

    @model_serializer(mode="wrap")
    def _with_words(self, fields: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {**fields(self), "verdict": self.verdict(), "sentence": self.sentence()}

    def as_dict(self) -> dict[str, Any]:
        """The figure as results.json and the stages' metrics hold it (no `validity` unless set)."""
        return dict(self.model_dump(exclude_unset=True))


def format_p(p: float) -> str:
    """"p < 0.001" or "p = 0.012"."""
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def evidence(
    figure: str,
    value: float | None,
    n: int,
    unit: str,
    interval: tuple[float | None, float | None],
    interval_name: str,
    test: str,
    null: str,
    p_value: float | None,
    min_n: int = MIN_N,
    alpha: float = ALPHA,
) -> Evidence:
    underpowered = n < min_n
    return Evidence(
        figure=figure,
        value=value,
        n=n,
        unit=unit,
        ci_low=interval[0],
        ci_high=interval[1],
        interval=interval_name,
        test=test,
        null=null,
        p_value=p_value,
        min_n=min_n,
        underpowered=underpowered,
        distinguishable=bool(not underpowered and p_value is not None and p_value < alpha),
    )


# ----------------------------------------------------------------------------- the tests
def clopper_pearson(k: int, n: int, level: float = LEVEL) -> tuple[float | None, float | None]:
    """Exact (Clopper-Pearson) interval of a binomial share k/n; (None, None) when n = 0."""
    from scipy.stats import binomtest

    if n == 0:
        return None, None
    ci = binomtest(k, n).proportion_ci(confidence_level=level, method="exact")
    return float(ci.low), float(ci.high)


def binomial_p(k: int, n: int, p0: float = 0.5) -> float | None:
    """Two-sided exact binomial test of k successes in n against share p0."""
    from scipy.stats import binomtest

    return float(binomtest(k, n, p0).pvalue) if n else None


def mcnemar(before: Sequence[bool], after: Sequence[bool]) -> tuple[int, int, float | None]:
    """McNemar's exact test on paired outcomes: (b, c, p) where b = right before and wrong
    after, c = wrong before and right after, p = two-sided exact binomial test of c in b + c
    against 1/2 (1.0 when no item changed)."""
    if len(before) != len(after):
        raise ValueError(f"paired outcomes differ in length: {len(before)} vs {len(after)}")
    b = sum(x and not y for x, y in zip(before, after, strict=True))
    c = sum(y and not x for x, y in zip(before, after, strict=True))
    return b, c, (binomial_p(c, b + c) if b + c else 1.0)


def _percentiles(values: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high)


def share(
    figure: str,
    successes: int,
    n: int,
    unit: str,
    chance: float = 0.5,
    null: str | None = None,
    min_n: int = MIN_N,
) -> Evidence:
    """A share of successes against the share expected by chance."""
    return evidence(
        figure,
        successes / n if n else None,
        n,
        unit,
        clopper_pearson(successes, n),
        "Clopper-Pearson 95%",
        "exact binomial test",
        null or f"chance ({chance:g})",
        binomial_p(successes, n, chance),
        min_n,
    )


def paired_shares(
    figure: str,
    before: Sequence[bool],
    after: Sequence[bool],
    unit: str,
    min_n: int = MIN_N,
    seed: int = 0,
    resamples: int = RESAMPLES,
) -> Evidence:
    """The change in a share measured on the same items twice (after - before)."""
    n = len(before)
    _, _, p = mcnemar(before, after)
    if not n:
        return evidence(figure, None, 0, unit, (None, None), "bootstrap 95%", "McNemar exact test",
                        "no change", None, min_n)
    diffs = np.asarray(after, dtype=float) - np.asarray(before, dtype=float)
    rng = np.random.default_rng(seed)
    means = diffs[rng.integers(0, n, (resamples, n))].mean(axis=1)
    return evidence(
        figure,
        float(diffs.mean()),
        n,
        unit,
        _percentiles(means, LEVEL),
        "bootstrap over items 95%",
        "McNemar exact test",
        "no change",
        p,
        min_n,
    )


def from_draws(
    figure: str, value: float, draws: np.ndarray, n: int, unit: str, min_n: int = MIN_N
) -> Evidence:
    """A difference with its bootstrap draws: percentile interval, and the two-sided
    bootstrap p-value (twice the smaller share of draws on either side of zero)."""
    draws = np.asarray(draws, dtype=float)
    if not len(draws):
        return evidence(figure, value, n, unit, (None, None), "bootstrap 95%", "bootstrap test",
                        "no change", None, min_n)
    below, above = (draws <= 0).mean(), (draws >= 0).mean()
    p = float(min(1.0, 2.0 * min(below, above) + 1.0 / (len(draws) + 1)))
    return evidence(figure, value, n, unit, _percentiles(draws, LEVEL), "bootstrap 95%",
                    "bootstrap test", "no change", p, min_n)


# ----------------------------------------------------------------------------- classifiers
def macro_f1_score(truth: Sequence[str], predicted: Sequence[str], classes: Sequence[str]) -> float:
    """Unweighted mean of per-class F1 over `classes` (scikit-learn's macro F1 with
    `labels=classes, zero_division=0`): a class never predicted scores 0, and a predicted
    label outside `classes` counts only as a miss of the true class."""
    if len(truth) != len(predicted):
        raise ValueError(f"truth and predictions differ in length: {len(truth)} vs {len(predicted)}")
    index = _class_index(truth, classes)
    return _macro_f1(
        np.array([index[t] for t in truth], dtype=int),
        np.array([index.get(p, -1) for p in predicted], dtype=int),
        len(classes),
    )


def _class_index(truth: Sequence[str], classes: Sequence[str]) -> dict[str, int]:
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(truth) - set(index))
    if unknown:
        raise ValueError(f"true labels {unknown} are not among the classes {list(classes)}")
    return index


def _macro_f1(truth: np.ndarray, predicted: np.ndarray, classes: int) -> float:
    """Macro-F1 over class indices 0..classes-1 (predictions outside them are -1); the one
    implementation, vectorised for the permutation test and the bootstrap."""
    scores = []
    for k in range(classes):
        tp = np.sum((predicted == k) & (truth == k))
        fp = np.sum((predicted == k) & (truth != k))
        fn = np.sum((predicted != k) & (truth == k))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return float(np.mean(scores))


def macro_f1(
    figure: str,
    blocks: Sequence[tuple[Sequence[str], Sequence[str]]],
    classes: Sequence[str],
    prompts: int,
    min_n: int = MIN_N,
    seed: int = 0,
    resamples: int = RESAMPLES,
) -> Evidence:
    """Mean macro-F1 over `blocks` (one (truth, predicted) per attack, each laid out as
    `len(classes)` runs of `prompts` answers, class by class, the same prompts in each) against
    chance. Interval: bootstrap over held-out prompts (a prompt's answers in every class and
    block stay together). Test: permutation of the predictions within each block, one-sided
    (a classifier worse than chance is no evidence of a persona). n = held-out prompts."""
    index = {c: i for i, c in enumerate(classes)}
    k = len(classes)
    truths = [np.array([index[t] for t in truth]) for truth, _ in blocks]
    preds = [np.array([index.get(p, -1) for p in predicted]) for _, predicted in blocks]
    for t in truths:
        if len(t) != k * prompts:
            raise ValueError(f"a block holds {len(t)} answers, expected {k} classes x {prompts} prompts")

    def mean_f1(picks: Sequence[np.ndarray]) -> float:
        return float(np.mean([_macro_f1(t, p, k) for t, p in zip(truths, picks, strict=True)]))

    if not blocks or not prompts:
        return evidence(figure, None, prompts, "held-out prompts", (None, None), "bootstrap 95%",
                        "permutation test", "chance", None, min_n)
    observed = mean_f1(preds)
    rng = np.random.default_rng(seed)
    exceed = sum(mean_f1([rng.permutation(p) for p in preds]) >= observed - 1e-12 for _ in range(resamples))
    p_value = (1 + exceed) / (1 + resamples)
    offsets = np.arange(k)[:, None] * prompts
    boots = np.empty(resamples)
    for r in range(resamples):
        rows = (offsets + rng.integers(0, prompts, prompts)[None, :]).ravel()
        boots[r] = float(np.mean([_macro_f1(t[rows], p[rows], k) for t, p in zip(truths, preds, strict=True)]))
    return evidence(
        figure,
        observed,
        prompts,
        "held-out prompts",
        _percentiles(boots, LEVEL),
        "bootstrap over prompts 95%",
        "permutation test",
        "chance",
        p_value,
        min_n,
    )


def summary(figures: dict[str, Evidence | dict[str, Any]]) -> list[str]:
    """The report's summary in words: one sentence per figure, results first, underpowered
    figures last."""
    items = [f if isinstance(f, dict) else f.as_dict() for f in figures.values()]
    ordered = sorted(items, key=lambda f: (f["underpowered"], not f["distinguishable"]))
    return [str(f["sentence"]) for f in ordered]
