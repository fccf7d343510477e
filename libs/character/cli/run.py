"""`oct run` (the whole pipeline in-process) and `oct stage` (one stage, as a Kubernetes Job runs it)."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from character.pipeline.stage import StageResult

console = Console()


def _summary(results: dict[str, StageResult], timings: dict[str, float], skipped: set[str]) -> None:
    table = Table("stage", "status", "seconds", "artifacts", "metrics")
    for name, result in results.items():
        metrics = ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in result.metrics.items()
            if isinstance(v, int | float | str) and k != "wall_seconds"
        )
        arts = ", ".join(f"{k}:{ref.kind}/{ref.key[:12]}" for k, ref in result.artifacts.items())
        status = "[dim]cached[/dim]" if name in skipped else "[green]done[/green]"
        table.add_row(name, status, f"{timings.get(name, 0):.1f}", arts, metrics[:160])
    console.print(table)


def run(
    constitution: str | None = typer.Argument(None, help="A persona name (see `oct personas list`) or a "
                                              "constitution file; optional with --spec."),
    model: str | None = typer.Option(None, help="Student model (default smollm2)."),
    teacher: str | None = typer.Option(None, help="Teacher model (default: the student + constitution)."),
    judge: str | None = typer.Option(None, help="Judge model for evaluation (default: the teacher)."),
    scale: str | None = typer.Option(None, help="demo (CPU minutes) or full (reference numbers)."),
    store: str | None = typer.Option(None, help="Local folder or s3://bucket/prefix (default $OCT_HOME/store)."),
    seed: int | None = typer.Option(None, help="Seed (default 123456)."),
    spec: Path | None = typer.Option(None, help="A run spec YAML; flags override its values."),
    until: str | None = typer.Option(None, help="Stop after this stage."),
) -> None:
    """Train a persona end to end in this process: prompts, distill, DPO, introspect, SFT, merge, eval."""
    from character.cli.progress import bars
    from character.controller.records import open_inline_run, recording_stage
    from character.pipeline.dag import STAGE_NAMES, run_id_for
    from character.pipeline.engines import LocalEngines
    from character.pipeline.runner import run_stage
    from character.pipeline.spec import load_spec, parse_spec
    from character.store import open_store

    flags = {"constitution": constitution, "model": model, "teacher": teacher, "judge": judge,
             "scale": scale, "store": store, "seed": seed}
    run_spec = load_spec(spec, **flags) if spec else parse_spec({k: v for k, v in flags.items() if v is not None},
                                                                 where="command line")
    stages = STAGE_NAMES if until is None else STAGE_NAMES[: STAGE_NAMES.index(until) + 1]
    the_store = open_store(run_spec.store)
    run_id = run_id_for(run_spec)
    console.print(f"run [bold]{run_id}[/bold]: persona {run_spec.persona.name}, student {run_spec.model}, "
                  f"scale {run_spec.scale}, store {the_store.uri}")
    engines = LocalEngines.for_spec(the_store, run_spec)
    record = open_inline_run(the_store, run_spec, run_id)  # so `oct status RUN --store ...` works
    results: dict[str, StageResult] = {}
    timings: dict[str, float] = {}
    skipped: set[str] = set()
    with bars() as progress:
        for name in stages:
            started = time.monotonic()
            with recording_stage(the_store, record, name) as done:
                result, was_cached = run_stage(run_spec, name, the_store, engines, run_id, progress)
                done(result)
            results[name], timings[name] = result, time.monotonic() - started
            if was_cached:
                skipped.add(name)
    _summary(results, timings, skipped)
    for name in ("merge", "eval"):
        if name in results:
            for label, ref in results[name].artifacts.items():
                path = the_store.materialize(ref.kind, ref.key)
                console.print(f"{name} {label}: {path}")


def stage(
    name: str = typer.Argument(help="Stage name: prompts, distill, dpo, introspect, sft, merge, eval."),
    run_id: str = typer.Option(..., "--run", help="The run whose spec is stored as record runs/RUN."),
    store: str = typer.Option(..., help="Local folder or s3://bucket/prefix holding the run."),
) -> None:
    """Run one stage of a stored run (what the Kubernetes executor's Jobs run)."""
    from character.errors import NotFound
    from character.pipeline.engines import LocalEngines
    from character.pipeline.runner import run_stage
    from character.pipeline.spec import parse_spec
    from character.store import open_store

    the_store = open_store(store)
    record = the_store.get_record(f"runs/{run_id}")
    if record is None:
        raise NotFound(f"no run {run_id!r} in store {the_store.uri}")
    run_spec = parse_spec(record["spec"], where=f"runs/{run_id}")
    from character.cli.progress import bars

    with bars() as progress:
        result, cached = run_stage(run_spec, name, the_store, LocalEngines.for_spec(the_store, run_spec), run_id,
                                   progress)
    console.print(f"{name}: {'cached' if cached else 'done'} {result.key[:12]} {result.metrics}")


def register(app: typer.Typer) -> None:
    app.command("run")(run)
    app.command("stage")(stage)
