"""`oct judge calibrate`: a judge's accuracy on known answers, as the evaluation measures it."""

from __future__ import annotations

from pathlib import Path

import typer

SCALES = ("demo", "proof", "full")
group = typer.Typer(help="Judges: measure one on known answers before trusting its figures.", no_args_is_help=True)


@group.command("calibrate")
def calibrate(
    judge: str = typer.Option(
        "smollm2",
        help="A bundled model (smollm2, tiny), a local model folder, an "
        "endpoint named in --spec, 'embedding' (the sentence-embedding judge) or 'channel' (the "
        "noisy-channel judge, scored by the spec's model judge, default smollm2).",
    ),
    items: int | None = typer.Option(
        None,
        min=2,
        help="Calibrate on this many items of the set, a seeded subset balanced over trait pairs "
        "and positions, as the evaluation takes its `calibration_items` (default: every item).",
    ),
    set_file: Path | None = typer.Option(
        None,
        "--set",
        help="A calibration JSONL file, one "
        '{"message", "reply", "traits": [A, B], "expressed": A} a line '
        "(default: the bundled set).",
    ),
    scale: str | None = typer.Option(
        None,
        help="The eval preset whose judge settings (mode, order "
        "debiasing) apply: demo, proof or full (default: the spec's, or demo).",
    ),
    spec: Path | None = typer.Option(None, help="A run spec YAML: its endpoints, seed and eval overrides apply."),
    store: str | None = typer.Option(
        None, help="Where results are cached (default: the spec's store, or $OCT_HOME/store)."
    ),
) -> None:
    """Run a judge on a calibration set (both orders of every trait pair) and print its accuracy,
    95% interval, n, position bias and validity; the last line is `calibration accuracy: 0.NN`."""
    from character.errors import InvalidInput
    from character.pipeline.engines import LocalEngines
    from character.pipeline.spec import RunSpec, default_store_uri, load_spec
    from character.stages.evaluate import Config
    from character.stages.evaluate.calibration import calibrated, calibration_subset, load_calibration_set
    from character.stages.evaluate.trait_judges import trait_judge_for
    from character.store import open_store

    if scale is not None and scale not in SCALES:
        raise InvalidInput(f"unknown scale {scale!r}; scales are {', '.join(SCALES)}", where="--scale")
    run_spec = load_spec(spec, **({"scale": scale} if scale else {})) if spec is not None else None
    config = run_spec.stage_config("eval") if run_spec else Config.for_scale(scale or "demo", None, where="--scale")
    endpoints = run_spec.endpoints if run_spec else {}
    the_store = open_store(store or (run_spec.store if run_spec else default_store_uri()))
    engines = LocalEngines.for_spec(the_store, run_spec) if run_spec else LocalEngines(the_store)
    seed = run_spec.seed if run_spec else RunSpec.model_fields["seed"].default
    chosen = calibration_subset(load_calibration_set(set_file), items, seed)
    scorer = run_spec.model_judge if run_spec else RunSpec.model_fields["model"].default
    trait_judge = trait_judge_for(judge, engines, config, seed, endpoints, scorer=scorer)
    result = calibrated(the_store, trait_judge, chosen, config.min_n)
    bias = "-" if result["position_bias"] is None else f"{result['position_bias']:.2f}"
    typer.echo(f"judge: {result['judge']} (set {result['set_digest'][:12]}, n = {result['n']} items)")
    typer.echo(
        f"accuracy: {result['accuracy']:.2f} [{result['ci_low']:.2f}, {result['ci_high']:.2f}] "
        f"(95% Clopper-Pearson), exact binomial test against chance: p = {result['p_value']:.2g}"
    )
    typer.echo(f"position bias (share of verdicts picking the trait shown first; 0.50 = none): {bias}")
    typer.echo(f"{'valid' if result['valid'] else 'not valid'}: {result['reason']}")
    typer.echo(f"calibration accuracy: {result['accuracy']:.2f}")


def register(app: typer.Typer) -> None:
    app.add_typer(group, name="judge")
