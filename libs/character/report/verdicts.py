"""Two evaluations' verdicts side by side, figure by figure.

A figure is any entry of a results document (`results.json`) that carries a test: a mapping
with `p_value` and `distinguishable`, found by its path ("evidence/training_dpo",
"robustness/methods/full/evidence/none", ...). A verdict is that figure's yes/no (the
`distinguishable` flag: p below the figure's alpha, enough samples) and, where an instrument
decides whether the figure counts at all, the instrument's validity (a judge's calibration).
Two runs that change only numerics (another precision, another engine) must agree on every
verdict; the figures themselves may move within their intervals.

`oct compare A.json B.json` prints the table (`markdown` for docs).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

CALIBRATIONS = ("judge_calibration", "coherence_judge_calibration")
"""Where a results document records an instrument's validity (a judge on known answers)."""


@dataclass(frozen=True)
class Row:
    """One figure in both documents (None where a document lacks it)."""

    path: str
    a: Mapping[str, Any] | None
    b: Mapping[str, Any] | None

    @property
    def name(self) -> str:
        either = self.a or self.b or {}
        return str(either.get("figure") or either.get("judge") or self.path)

    @property
    def same(self) -> bool:
        """Both documents hold the figure and give it the same verdict."""
        return self.a is not None and self.b is not None and verdict(self.a) == verdict(self.b)


def verdict(figure: Mapping[str, Any]) -> bool:
    """A tested figure's yes/no, or an instrument's validity."""
    return bool(figure["distinguishable"] if "distinguishable" in figure else figure["valid"])


def figures(results: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """Every tested figure and every instrument calibration of a results document, by path."""
    found = dict(_tested(results, ""))
    for key in CALIBRATIONS:
        if isinstance(results.get(key), Mapping) and "valid" in results[key]:
            found[key] = results[key]
    for i, candidate in enumerate(results.get("judge_candidates") or []):
        if isinstance(candidate, Mapping) and "valid" in candidate:
            found[f"judge_candidates/{candidate.get('judge', i)}"] = candidate
    return found


def _tested(node: Any, path: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    if isinstance(node, Mapping):
        if "p_value" in node and "distinguishable" in node:
            yield path, node
            return
        for key, value in node.items():
            yield from _tested(value, f"{path}/{key}" if path else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _tested(value, f"{path}/{i}")


def compare(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[Row]:
    """Every figure of either document, in `a`'s order, then those only `b` has."""
    fa, fb = figures(a), figures(b)
    return [Row(path, fa.get(path), fb.get(path)) for path in [*fa, *(p for p in fb if p not in fa)]]


def cell(figure: Mapping[str, Any] | None) -> str:
    """A figure as a table shows it: value [interval], n, p and the verdict in one word."""
    if figure is None:
        return "absent"
    if "valid" in figure and "distinguishable" not in figure:
        return (f"{figure['accuracy']:.2f} [{figure['ci_low']:.2f}, {figure['ci_high']:.2f}], n = {figure['n']}: "
                f"{'valid' if figure['valid'] else 'not valid'}")
    p = figure["p_value"]
    shown = "< 0.001" if p < 0.001 else f"= {p:.3f}"
    return (f"{figure['value']:.2f} [{figure['ci_low']:.2f}, {figure['ci_high']:.2f}], n = {figure['n']}, "
            f"p {shown}: {'yes' if figure['distinguishable'] else 'no'}")


def markdown(rows: list[Row], a_name: str, b_name: str) -> str:
    """The rows as a markdown table, the changed verdicts marked."""
    lines = [f"| figure | {a_name} | {b_name} | same verdict |", "|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row.name} (`{row.path}`) | {cell(row.a)} | {cell(row.b)} | "
                     f"{'yes' if row.same else '**NO**'} |")
    return "\n".join(lines)


def summary(rows: list[Row]) -> str:
    """One line: how many verdicts agree, and which do not."""
    changed = [row.path for row in rows if not row.same]
    line = f"{len(rows) - len(changed)} of {len(rows)} verdicts the same"
    return line + (f"; changed or absent in one: {', '.join(changed)}" if changed else "")
