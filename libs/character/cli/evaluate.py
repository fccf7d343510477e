"""`oct eval` (evaluate a stored run, all parts or one) and `oct report` (regenerate its report)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

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
    from character.controller.runs import prepare_stage
    from character.errors import InvalidInput
    from character.pipeline.engines import LocalEngines
    from character.pipeline.runner import run_stage
    from character.stages.evaluate import NAME, PARTS
    from character.stages.evaluate.orchestrate import evaluate, save
    from character.stages.evaluate.subject import Subject
    from character.store import digest_of, open_store

    if part not in (*PARTS, "all"):
        raise InvalidInput(f"unknown part {part!r}; choose one of {', '.join(PARTS)} or all", where="PART")
    others = [r for r in _split(runs) if r != run_id]
    the_store = open_store(store)
    with bars() as progress:
        # The eval stage of each run, with whichever upstream results exist (a part that
        # needs a missing one says so when it starts).
        stage = prepare_stage(the_store, run_id, NAME)
        engines = LocalEngines.for_spec(the_store, stage.spec)
        primary = stage.context(the_store, engines, progress, partial=True)
        contexts = [primary, *(prepare_stage(the_store, r, NAME).context(the_store, engines, progress, partial=True)
                               for r in others)]
        config = primary.spec.stage_config("eval")
        if part != "all":
            config = config.only([part])
        if classifier is not None:
            config = type(config).for_scale(
                primary.spec.scale, {**primary.spec.stages.get(NAME, {}), **config.model_dump(
                    include=set(PARTS)), "classifier": classifier}, where="--classifier"
            )
        parts = [p for p in PARTS if getattr(config, p)]
        if part == "all" and not others and classifier is None:
            # exactly the eval stage: reuse its stored result, or run and record it as the stage
            result, _ = run_stage(stage, the_store, engines, progress)
            key = result.artifacts["report"].key
        else:
            key = digest_of({"eval": primary.key, "parts": parts, "runs": [c.key for c in contexts[1:]],
                             "classifier": config.classifier})
            if not the_store.has("report", key):
                results = evaluate([Subject(ctx, config) for ctx in contexts], config)
                save(primary, results, key)
    index = the_store.materialize("report", key) / "index.html"
    console.print(f"eval ({', '.join(parts)}): report {index}", soft_wrap=True)


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


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_)
    app.command("report")(report)
