"""The evaluation report: one self-contained folder (index.html, PNG plots next to it with
relative links, and results.json) rendered from the eval stage's results.

`write_report(results, out_dir)` writes it; `oct report RUN` regenerates it from the stored
eval artifact.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from character.errors import InvalidInput

TEMPLATE = "index.html.jinja"
SECTIONS = (
    "Summary",
    "Persona side by side",
    "Revealed preferences",
    "Robustness",
    "Coherence",
    "General capabilities",
    "Training",
    "Method notes",
)
"""The report's section headings, in order (every report has all of them)."""
SCHEMA_VERSION = 1
"""Layout version of results.json, stored in it as `schema_version`. Version 0 (files without the
field, written before it existed) has the same layout and is read as it is."""
REPORTED_SETTINGS = (
    "top_traits",
    "min_n",
    "min_comparisons",
    "bootstrap_samples",
    "bt_prior",
    "judge_mode",
    "judge_debias",
    "classifier",
    "classifier_encoder",
    "steering_coefficient",
    "steering_layer_share",
)
"""The eval settings the report states; it reads them from the config the stage recorded in the
results, never from defaults of its own."""


def check_results(results: dict[str, Any], where: str = "results.json") -> None:
    """Refuse results this report cannot read: written by a newer layout, or without the eval
    settings it states."""
    version = results.get("schema_version", 0)
    if not isinstance(version, int) or not 0 <= version <= SCHEMA_VERSION:
        raise InvalidInput(
            f"schema_version {version!r} is not one this code reads (0 to {SCHEMA_VERSION}); "
            "render it with the version of the project that wrote it",
            where=where,
        )
    config = results.get("config")
    missing = [k for k in REPORTED_SETTINGS if not isinstance(config, dict) or k not in config]
    if missing:
        raise InvalidInput(f"config lacks the eval settings {', '.join(missing)}", where=where)


def pct(value: float | None, sign: bool = False, unit: bool = True) -> str:
    if not isinstance(value, int | float):
        return "–"
    text = f"{100 * value:+.1f}" if sign else f"{100 * value:.1f}"
    return text + ("%" if unit else "")


def num(value: float | None) -> str:
    return f"{value:.2f}" if isinstance(value, int | float) else "–"


def method_label(label: str) -> str:
    """ "full" -> "full pipeline"; "sarcasm/full" -> "sarcasm: full pipeline"."""
    from character.report.labels import METHOD_LABELS

    persona, _, method = label.rpartition("/")
    name = METHOD_LABELS.get(method, method)
    return f"{persona}: {name}" if persona else name


def _headline(results: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for key, value in results.get("headline", {}).items():
        shown = num(value) if isinstance(value, float) or value is None else str(value)
        out.append((key.replace("_", " "), shown))
    return out


def format_p(p: float) -> str:
    from character.stats import format_p as fmt

    return fmt(p)


def write_report(results: dict[str, Any], out_dir: str | Path) -> Path:
    """Render the report into `out_dir` (created if needed); returns the index.html path."""
    import jinja2

    from character.report.notes import method_notes
    from character.report.plots import all_plots

    check_results(results)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plots = all_plots(results, out, int(results["config"]["top_traits"]))
    env = jinja2.Environment(
        autoescape=True, undefined=jinja2.ChainableUndefined, trim_blocks=True, lstrip_blocks=True
    )
    template = env.from_string((resources.files("character.report") / TEMPLATE).read_text(encoding="utf-8"))
    html = template.render(
        r=results,
        plots=plots,
        headline=_headline(results),
        notes=method_notes(results),
        pct=pct,
        num=num,
        method_label=method_label,
        fmt_p=format_p,
    )
    (out / "results.json").write_text(json.dumps(results, indent=2, allow_nan=False))
    index = out / "index.html"
    index.write_text(html, encoding="utf-8")
    return index
