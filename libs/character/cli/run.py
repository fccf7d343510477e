"""`oct run` (the whole pipeline in-process) and `oct stage` (one stage, as a Kubernetes Job runs it).

`oct run` is the controller in this process with the inline executor
(`character.controller.inline_executor.run_in_process`): the same state machine, records and
stage preparation as a run submitted to the controller service.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from character.controller.runs import RunRecord
    from character.store.base import Store

console = Console()


def stage_summaries(record: RunRecord, store: Store, stages: tuple[str, ...]) -> list[dict[str, Any]]:
    """One entry per stage: state, whether it was found done, seconds, artifacts and every metric."""
    from character.pipeline.runner import stored_result

    rows = []
    for name in stages:
        stage = record.stages[name]
        result = stored_result(store, stage.key) if stage.state.value == "succeeded" else None
        seconds = (stage.finished_at - stage.started_at).total_seconds() \
            if stage.started_at and stage.finished_at and not stage.cached else 0.0
        rows.append({
            "stage": name,
            "state": "cached" if stage.cached else stage.state.value,
            "seconds": round(seconds, 1),
            "key": stage.key,
            "artifacts": {label: f"{ref.kind}/{ref.key}" for label, ref in stage.artifacts.items()},
            "metrics": result.metrics if result is not None else {},
            "message": stage.message if stage.state.value in ("failed", "cancelled") else "",
        })
    return rows


def _full(v: Any) -> str:
    """A metric's value as it is (strings bare, everything else as compact JSON)."""
    return v if isinstance(v, str) else json.dumps(v, separators=(",", ":"), default=str)


def print_summary(rows: list[dict[str, Any]], out: Console) -> None:
    """On a terminal a table (long metric lists cut to fit); elsewhere (a log, a pipe) one line
    per stage with every metric in full."""
    if out.is_terminal:
        table = Table("stage", "state", "seconds", "artifacts", "metrics")
        for row in rows:
            metrics = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                                for k, v in row["metrics"].items()
                                if isinstance(v, int | float | str) and k != "wall_seconds")
            arts = ", ".join(f"{label}:{ref[:20]}" for label, ref in row["artifacts"].items())
            table.add_row(row["stage"], row["state"], f"{row['seconds']:.1f}", arts,
                          (metrics or row["message"])[:160])
        out.print(table)
        return
    for row in rows:
        parts = [f"stage {row['stage']}: {row['state']} {row['seconds']:.1f} s key={row['key'][:12]}"]
        parts += [f"{label}={ref}" for label, ref in row["artifacts"].items()]
        parts += [f"{k}={_full(v)}" for k, v in row["metrics"].items()]
        if row["message"]:
            parts.append(f"message={row['message']!r}")
        out.print(" ".join(parts), soft_wrap=True, markup=False, highlight=False)


def warnings(rows: list[dict[str, Any]]) -> list[str]:
    """The stages' warnings in words (string metrics named `*_warning`, e.g. distill's
    "data_quality_warning"), one line each, named by stage."""
    return [f"warning ({row['stage']}): {value}" for row in rows for key, value in row["metrics"].items()
            if key.endswith("_warning") and isinstance(value, str)]


def run(
    constitution: str | None = typer.Argument(None, help="A persona name (see `oct personas list`) or a "
                                              "constitution file; optional with --spec."),
    model: str | None = typer.Option(None, help="Student model (default smollm2)."),
    teacher: str | None = typer.Option(None, help="Teacher model (default: the student + constitution)."),
    judge: str | None = typer.Option(None, help="Judge model for evaluation (default: the teacher)."),
    scale: str | None = typer.Option(None, help="demo (CPU minutes), proof (~80 min on 2 cores) or full (reference)."),
    store: str | None = typer.Option(None, help="Local folder or s3://bucket/prefix (default $OCT_HOME/store)."),
    seed: int | None = typer.Option(None, help="Seed (default 123456)."),
    dtype: str | None = typer.Option(None, help="Precision of generation and scoring: auto (default: bf16 on a "
                                     "GPU, float32 on a CPU), float32 or bfloat16 (~1.5x faster on a CPU with "
                                     "AVX512-BF16/AMX; see docs/proof-runs.md, Precision)."),
    spec: Path | None = typer.Option(None, help="A run spec YAML; flags override its values."),
    until: str | None = typer.Option(None, help="Stop after this stage."),
    publish: str | None = typer.Option(None, help="Publish the finished run as NAME[:TAG] (the spec's "
                                       "`publish:`), and print how to talk to it."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as one JSON document on stdout "
                                 "(everything else goes to stderr)."),
) -> None:
    """Train a persona end to end in this process: prompts, distill, DPO, introspect, SFT, merge, eval."""
    from character.cli.personas import print_published
    from character.cli.progress import bars
    from character.controller.inline_executor import run_in_process
    from character.errors import CharacterError, InvalidInput
    from character.pipeline.catalog import STAGE_NAMES, stage_module
    from character.pipeline.spec import load_spec, parse_spec
    from character.serving.registry import publish_as_specified
    from character.store import open_store

    if until is not None:
        stage_module(until)  # an unknown stage: NotFound listing them
    flags = {"constitution": constitution, "model": model, "teacher": teacher, "judge": judge,
             "scale": scale, "store": store, "seed": seed, "dtype": dtype, "publish": _publish_flag(publish)}
    run_spec = load_spec(spec, **flags) if spec else parse_spec({k: v for k, v in flags.items() if v is not None},
                                                                 where="command line")
    stages = STAGE_NAMES if until is None else STAGE_NAMES[: STAGE_NAMES.index(until) + 1]
    if run_spec.publish is not None and "merge" not in stages:
        raise InvalidInput(f"a run that stops after {until} has no merged model to publish: drop --until or "
                           "publish", where="--until")
    the_store = open_store(run_spec.store)
    says = Console(stderr=True) if as_json else console
    says.print(f"persona {run_spec.persona.name}, student {run_spec.model}, scale {run_spec.scale}, "
               f"store {the_store.uri}")
    with bars() as progress:
        record = run_in_process(run_spec, the_store, progress, until=until)
    rows = stage_summaries(record, the_store, stages)
    finished = all(record.stages[name].state.value == "succeeded" for name in stages)
    outputs = {f"{name} {label}": str(the_store.materialize(ref.kind, ref.key))
               for name in ("merge", "eval") if name in stages and finished
               for label, ref in record.stages[name].artifacts.items()}
    persona = publish_as_specified(the_store, record, run_spec.publish) if finished else None
    if as_json:
        doc = {"run_id": record.run_id, "state": "succeeded" if finished else record.state.value,
               "store": the_store.uri, "stages": rows, "outputs": outputs,
               "persona": persona.ref if persona is not None else None}
        sys.stdout.write(json.dumps(doc, default=str) + "\n")
    else:
        console.print(f"run [bold]{record.run_id}[/bold]")
        print_summary(rows, console)
        for line in warnings(rows):
            console.print(line, soft_wrap=True, markup=False, highlight=False, style="yellow")
        for label, path in outputs.items():
            console.print(f"{label}: {path}", soft_wrap=True)
    if persona is not None:
        print_published(persona, says)
    if not finished:
        raise CharacterError(f"run {record.run_id} {record.state.value}: {record.message}. Finished stages "
                             "are kept; run again to continue from there.")


def _publish_flag(value: str | None) -> dict[str, str] | None:
    """`--publish NAME[:TAG]` as the spec's `publish:` mapping (validated with the spec)."""
    if value is None:
        return None
    name, _, tag = value.partition(":")
    return {"name": name, "tag": tag} if tag else {"name": name}


def stage(
    name: str = typer.Argument(help="Stage name: prompts, distill, dpo, introspect, sft, merge, eval."),
    run_id: str = typer.Option(..., "--run", help="The run whose spec is stored as record runs/RUN."),
    store: str = typer.Option(..., help="Local folder or s3://bucket/prefix holding the run."),
    key: str = typer.Option("", help="The stage's key as the controller launched it (refused when the "
                            "run record holds another)."),
) -> None:
    """Run one stage of a stored run (what the Kubernetes executor's Jobs run)."""
    from character.cli.progress import bars
    from character.controller.runs import prepare_stage
    from character.pipeline.engines import LocalEngines
    from character.pipeline.runner import run_stage
    from character.store import open_store

    the_store = open_store(store)
    prepared = prepare_stage(the_store, run_id, name, key)
    with bars() as progress:
        result, cached = run_stage(prepared, the_store, LocalEngines.for_spec(the_store, prepared.spec), progress)
    console.print(f"{name}: {'cached' if cached else 'done'} {result.key[:12]} {result.metrics}", soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("run")(run)
    app.command("stage")(stage)
