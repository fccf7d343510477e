"""The evaluation report: one self-contained folder (index.html, PNG plots next to it with
relative links, and results.json) rendered from the eval stage's results
(`character.report.results.EvaluationResults`: the report reads their attributes and the eval
settings the stage recorded in them, never defaults of its own).

`write_report(results, out_dir)` writes it; `oct report RUN` regenerates it from the stored
eval artifact (`results.read_results`, any layout version this code knows).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from character.report.results import EvaluationResults, HeadlineValue
from character.stats import NOT_VALID

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


def _headline(headline: dict[str, HeadlineValue]) -> list[tuple[str, str]]:
    out = []
    for key, value in headline.items():
        shown = num(value) if isinstance(value, float) or value is None else str(value)
        out.append((key.replace("_", " "), shown))
    return out


def format_p(p: float) -> str:
    from character.stats import format_p as fmt

    return fmt(p)


def write_report(results: EvaluationResults, out_dir: str | Path) -> Path:
    """Render the report into `out_dir` (created if needed); returns the index.html path."""
    import jinja2

    from character.report.notes import method_notes
    from character.report.plots import all_plots

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plots = all_plots(results, out, results.config.top_traits)
    env = jinja2.Environment(
        autoescape=True, undefined=jinja2.ChainableUndefined, trim_blocks=True, lstrip_blocks=True
    )
    template = env.from_string((resources.files("character.report") / TEMPLATE).read_text(encoding="utf-8"))
    html = template.render(
        r=results,
        plots=plots,
        headline=_headline(results.headline),
        notes=method_notes(results),
        pct=pct,
        num=num,
        method_label=method_label,
        fmt_p=format_p,
        NOT_VALID=NOT_VALID,
    )
    (out / "results.json").write_text(results.to_json())
    index = out / "index.html"
    index.write_text(html, encoding="utf-8")
    return index
