"""`oct eval` (evaluate a stored run, all parts or one) and `oct report` (regenerate its report)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

console = Console()


def _split(values: list[str] | None) -> list[str]:
    return [v.strip() for value in values or [] for v in value.split(",") if v.strip()]


def eval_(
    run_id: Annotated[str, typer.Option("--run", help="The run to evaluate (stored as record runs/RUN).")],
    store: Annotated[str, typer.Option(help="Local folder or s3://bucket/prefix holding the run.")],
    part: Annotated[
        str, typer.Argument(help="preferences, robustness, coherence, capabilities or all.")
    ] = "all",
    runs: Annotated[
        list[str] | None,
        typer.Option(
            "--runs",
            help="More runs of other personas (repeat, or comma-separate): robustness becomes N-way across "
            "personas and preferences compares every run's ratings.",
        ),
    ] = None,
    classifier: Annotated[
        str | None,
        typer.Option(help="Persona classifier: frozen (encoder + logistic regression) or finetune (the "
                     "encoder fine-tuned, as the reference). Default: the run's eval config."),
    ] = None,
) -> None:
    """Evaluate a stored run: every part (what the eval stage runs), or one part alone."""
    from character.cli.progress import bars
    from character.controller.evaluation import evaluate_stored_run
    from character.store import open_store

    the_store = open_store(store)
    with bars() as progress:
        done = evaluate_stored_run(the_store, run_id, part, _split(runs), classifier, progress=progress)
    index = the_store.materialize("report", done.report_key) / "index.html"
    console.print(f"eval ({', '.join(done.parts)}): report {index}", soft_wrap=True)


def report(
    run_id: Annotated[str, typer.Argument(help="The run whose evaluation to render.")],
    store: Annotated[str, typer.Option(help="Local folder or s3://bucket/prefix holding the run.")],
    out: Annotated[Path | None, typer.Option(help="Folder to write; default $OCT_HOME/reports/RUN.")] = None,
) -> None:
    """Regenerate a run's evaluation report (HTML + PNG plots + JSON) from its stored results."""
    from character.home import oct_home
    from character.report import write_report
    from character.stages.evaluate.orchestrate import load_results
    from character.store import open_store

    results = load_results(open_store(store), run_id)
    index = write_report(results, out or oct_home() / "reports" / run_id)
    console.print(str(index), soft_wrap=True)


def compare(
    a: Annotated[Path, typer.Argument(help="An evaluation's results.json (a report folder holds one).")],
    b: Annotated[Path, typer.Argument(help="Another evaluation's results.json.")],
    markdown: Annotated[bool, typer.Option(help="Print the whole table as markdown (for docs).")] = False,
) -> None:
    """Compare two evaluations figure by figure: is each test's yes/no (and each judge's validity)
    the same? Exits 1 where a verdict differs or a figure is in one only."""
    from character.report import verdicts

    rows = verdicts.compare(_results(a), _results(b))
    if markdown:
        console.print(verdicts.markdown(rows, str(a), str(b)), soft_wrap=True, markup=False, highlight=False)
    else:
        for row in rows:
            if not row.same:
                console.print(f"{row.path}: {verdicts.cell(row.a)} | {verdicts.cell(row.b)}", soft_wrap=True,
                              markup=False, highlight=False)
    console.print(verdicts.summary(rows), soft_wrap=True, markup=False, highlight=False)
    if not all(row.same for row in rows):
        raise typer.Exit(1)


def _results(path: Path) -> dict[str, Any]:
    import json

    from character.errors import InvalidInput

    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise InvalidInput(f"cannot read it: {err.strerror}", where=str(path)) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        line = f":{err.lineno}" if isinstance(err, json.JSONDecodeError) else ""
        raise InvalidInput(f"not a JSON document: {err}", where=f"{path}{line}") from None
    if not isinstance(doc, dict):
        raise InvalidInput("not an evaluation's results (a JSON object)", where=str(path))
    return doc


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_)
    app.command("report")(report)
    app.command("compare")(compare)
