"""The report's plots: one PNG per figure, written next to the HTML. Each function returns the
file name it wrote, or None when the results hold nothing to plot."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a display

import matplotlib.pyplot as plt
import numpy as np

from character.report.labels import METHOD_LABELS
from character.report.results import BeforeAfter, EvaluationResults

COLOURS = {
    "base": "#8c8c8c",
    "system_prompt": "#4c72b0",
    "steering": "#dd8452",
    "dpo": "#55a868",
    "full": "#c44e52",
}
DPI = 110


def _colour(label: str) -> str:
    return COLOURS.get(label.rsplit("/", 1)[-1], "#64b5cd")


def _label(name: str) -> str:
    return METHOD_LABELS.get(name, name)


def _save(fig: Any, out: Path, name: str) -> str:
    fig.tight_layout()
    fig.savefig(out / name, dpi=DPI)
    plt.close(fig)
    return name


def trait_ratings(results: EvaluationResults, out: Path, top: int) -> str | None:
    """Top traits (by the trained model, else the first rated method) with their bootstrap
    intervals, every rated method side by side."""
    models = results.preferences.models if results.preferences else {}
    rated = {
        label: {r.trait: r for r in m.ratings if not r.insufficient and r.rating is not None}
        for label, m in models.items()
    }
    anchor = "full" if rated.get("full") else next((label for label in rated if rated[label]), None)
    if anchor is None:
        return None
    traits = sorted(rated[anchor], key=lambda t: -(rated[anchor][t].rating or 0.0))[:top][::-1]
    fig, ax = plt.subplots(figsize=(7.5, 0.42 * len(traits) + 1.6))
    offsets = np.linspace(-0.25, 0.25, len(rated)) if len(rated) > 1 else [0.0]
    for offset, (label, by_trait) in zip(offsets, rated.items(), strict=True):
        ys, xs, lo, hi = [], [], [], []
        for y, trait in enumerate(traits):
            if trait in by_trait:
                r = by_trait[trait]
                rating, low, high = r.rating or 0.0, r.ci_low or 0.0, r.ci_high or 0.0
                ys.append(y + offset)
                xs.append(rating)
                # a percentile interval from few resamples need not contain the full-data fit
                lo.append(max(0.0, rating - low))
                hi.append(max(0.0, high - rating))
        ax.errorbar(xs, ys, xerr=[lo, hi], fmt="o", capsize=3, color=_colour(label), label=_label(label))
    ax.axvline(1000, color="#cccccc", lw=1, zorder=0)
    ax.set_yticks(range(len(traits)), traits)
    ax.set_xlabel("Bradley-Terry rating (Elo scale), 95% bootstrap interval")
    ax.set_title(f"Top traits of the {_label(anchor)}")
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, out, "preferences_ratings.png")


def traits_moved(results: EvaluationResults, out: Path) -> str | None:
    moved = results.preferences.moved if results.preferences else {}
    label = "full" if moved.get("full") else next((k for k in moved if moved[k]), None)
    if label is None:
        return None
    rows = moved[label][::-1]
    fig, ax = plt.subplots(figsize=(7.5, 0.42 * len(rows) + 1.6))
    colours = ["#c44e52" if r.delta > 0 else "#4c72b0" for r in rows]
    ax.barh(
        range(len(rows)),
        [r.delta for r in rows],
        color=colours,
        hatch=[None if r.separated else "//" for r in rows],
    )
    ax.set_yticks(range(len(rows)), [r.trait for r in rows])
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel(f"rating change, {_label(label)} minus base (hatched: intervals overlap)")
    ax.set_title("Traits that moved most")
    return _save(fig, out, "preferences_moved.png")


def robustness_attacks(results: EvaluationResults, out: Path) -> str | None:
    methods = results.robustness.methods if results.robustness else {}
    if not methods:
        return None
    attacks = list(next(iter(methods.values())).macro_f1)
    fig, ax = plt.subplots(figsize=(max(7.5, 0.75 * len(attacks) + 2), 4.2))
    width = 0.8 / len(methods)
    for i, (name, m) in enumerate(methods.items()):
        xs = np.arange(len(attacks)) + (i - (len(methods) - 1) / 2) * width
        ax.bar(xs, [m.macro_f1[a] for a in attacks], width, color=_colour(name), label=_label(name))
    ax.set_xticks(range(len(attacks)), attacks, rotation=35, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("macro-F1 (held-out prompts)")
    ax.set_title('Persona classifier under attack ("none" = un-attacked)')
    ax.legend(fontsize=8, ncol=len(methods))
    return _save(fig, out, "robustness_attacks.png")


def robustness_summary(results: EvaluationResults, out: Path) -> str | None:
    methods = results.robustness.methods if results.robustness else {}
    if not methods:
        return None
    names = list(methods)
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    means = [methods[n].mean or 0.0 for n in names]
    errors = [methods[n].stderr or 0.0 for n in names]
    ax.bar(range(len(names)), means, yerr=errors, capsize=4, color=[_colour(n) for n in names])
    ax.scatter(
        range(len(names)),
        [methods[n].unattacked for n in names],
        marker="_",
        s=600,
        color="black",
        label="un-attacked",
        zorder=3,
    )
    ax.set_xticks(range(len(names)), [_label(n) for n in names])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("macro-F1, mean ± SE over attacks")
    ax.legend(fontsize=8)
    return _save(fig, out, "robustness_summary.png")


def coherence(results: EvaluationResults, out: Path) -> str | None:
    comparisons = [c for c in (results.coherence.comparisons if results.coherence else []) if c.win_rate is not None]
    if not comparisons:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    names = [f"vs {_label(c.baseline)}\n({c.consistent} consistent)" for c in comparisons]
    ax.bar(
        range(len(comparisons)),
        [c.win_rate or 0.0 for c in comparisons],
        yerr=[c.stderr or 0.0 for c in comparisons],
        capsize=4,
        color=[_colour(c.baseline) for c in comparisons],
    )
    ax.axhline(0.5, color="black", lw=0.8, ls="--")
    ax.set_xticks(range(len(comparisons)), names)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("full pipeline win rate ± SE")
    return _save(fig, out, "coherence.png")


def capabilities(results: EvaluationResults, out: Path) -> str | None:
    tasks = results.capabilities.tasks if results.capabilities else []
    if not tasks:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8), gridspec_kw={"width_ratios": [3, 2]})
    xs = np.arange(len(tasks))
    names = [t.task.removeprefix("oct_") for t in tasks]
    left.bar(
        xs - 0.2,
        [t.base for t in tasks],
        0.4,
        yerr=[t.base_stderr or 0 for t in tasks],
        capsize=3,
        color=_colour("base"),
        label="base",
    )
    left.bar(
        xs + 0.2,
        [t.trained for t in tasks],
        0.4,
        yerr=[t.trained_stderr or 0 for t in tasks],
        capsize=3,
        color=_colour("full"),
        label="trained",
    )
    left.set_xticks(xs, names, rotation=20, ha="right")
    left.set_ylim(0, 1.05)
    left.set_ylabel("accuracy ± SE")
    left.legend(fontsize=8)
    right.barh(
        xs,
        [100 * t.delta for t in tasks],
        xerr=[100 * (t.delta_stderr or 0) for t in tasks],
        capsize=3,
        color=["#c44e52" if t.delta < 0 else "#55a868" for t in tasks],
    )
    right.axvline(0, color="black", lw=0.8)
    right.set_yticks(xs, names)
    right.invert_yaxis()
    right.set_xlabel("trained minus base, points ± paired SE")
    return _save(fig, out, "capabilities.png")


def training(results: EvaluationResults, out: Path) -> str | None:
    series: dict[str, BeforeAfter] = {
        "total log-prob": results.training.preference_accuracy,
        "log-prob per byte": results.training.preference_accuracy_per_byte,
    }
    steps = [
        (label, key)
        for label, key in (("before", "before"), ("after DPO", "after_dpo"), ("after SFT", "after_sft"))
        if any(getattr(s, key) is not None for s in series.values())
    ]
    if not steps:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    width = 0.8 / len(series)
    for i, (name, values) in enumerate(series.items()):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(steps))]
        heights = [getattr(values, key) or 0.0 for _, key in steps]
        ax.bar(xs, heights, width, label=name, color=("#8c8c8c", "#55a868")[i])
    ax.set_xticks(range(len(steps)), [label for label, _ in steps])
    ax.legend(fontsize=8, loc="upper left")
    ax.axhline(0.5, color="black", lw=0.8, ls="--")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("held-out preference accuracy")
    return _save(fig, out, "training.png")


def all_plots(results: EvaluationResults, out: Path, top: int) -> dict[str, str]:
    """Every plot the results allow: figure id -> file name."""
    makers: dict[str, Callable[[], str | None]] = {
        "preferences_ratings": lambda: trait_ratings(results, out, top),
        "preferences_moved": lambda: traits_moved(results, out),
        "robustness_attacks": lambda: robustness_attacks(results, out),
        "robustness_summary": lambda: robustness_summary(results, out),
        "coherence": lambda: coherence(results, out),
        "capabilities": lambda: capabilities(results, out),
        "training": lambda: training(results, out),
    }
    written = {name: make() for name, make in makers.items()}
    return {name: file for name, file in written.items() if file}
