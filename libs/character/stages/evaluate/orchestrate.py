"""Runs the configured parts over one or more runs, stores the results and the report.

Used by the stage (`run`, one run) and by `oct eval` (any parts, optionally several runs for
the N-way robustness classifier and cross-run preference agreement). Coherence and
capabilities look at the first run only.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from character import stats
from character.errors import NotFound
from character.pipeline.spec import RunSpec
from character.pipeline.stage import StageContext, StageResult
from character.progress import ProgressEvent
from character.report.results import (
    SCHEMA_VERSION,
    EvaluationResults,
    HeadlineValue,
    PromptPool,
    SteeringInfo,
    TrainingNumbers,
    read_results,
)
from character.stages.evaluate import NAME, PARTS, Config
from character.stages.evaluate.subject import Subject
from character.store.base import ArtifactRef, Store

RESULTS_FILE = "results.json"
RECORD_PREFIX = "evals/"
"""Record `evals/<run_id>` names the latest eval artifact of a run (for `oct report`)."""


def _needs(config: Config) -> dict[str, str]:
    """Upstream stages the configured parts need -> why."""
    needs: dict[str, str] = {}
    methods = set()
    if config.preferences:
        methods |= set(config.preference_methods)
        if config.side_by_side:
            methods |= set(config.side_by_side_methods)
    if config.robustness:
        methods |= set(config.robustness_methods) | {"base"}
    if config.coherence:
        methods |= {"full", *config.coherence_baselines}
    if config.capabilities:
        methods |= {"base", "full"}
    if "dpo" in methods:
        needs["dpo"] = "method 'dpo'"
    if "full" in methods:
        needs["merge"] = "method 'full'"
    return needs


def check_inputs(subjects: Sequence[Subject], config: Config) -> None:
    """Fail before any work when a run lacks what the configured parts need."""
    for subject in subjects:
        for stage, why in _needs(config).items():
            subject.require(stage, why)
    if config.capabilities and config.reference_benchmarks:
        from character.stages.evaluate.capabilities import check_reference_benchmarks_reachable

        check_reference_benchmarks_reachable()


def training_numbers(ctx: StageContext, min_n: int = stats.MIN_N) -> TrainingNumbers:
    """Held-out preference accuracy before training, after DPO and after SFT (from the dpo and
    sft stages' metrics), where those stages ran, with the paired evidence for each change."""
    dpo = ctx.inputs["dpo"].metrics if "dpo" in ctx.inputs else {}
    sft = ctx.inputs["sft"].metrics if "sft" in ctx.inputs else {}
    distilled = ctx.inputs["distill"].metrics if "distill" in ctx.inputs else {}

    def figure(metrics: dict[str, Any], key: str, name: str) -> float | None:
        value = metrics.get(key)
        return value.get(name) if isinstance(value, dict) else None

    def before_and_after(name: str) -> dict[str, float | None]:
        return {
            "before": figure(dpo, "heldout_before", name),
            "after_dpo": figure(dpo, "heldout_after", name),
            "after_sft": figure(sft, "heldout_after", name),
        }

    return TrainingNumbers.model_validate({
        "preference_accuracy": before_and_after("accuracy"),
        "preference_accuracy_per_byte": before_and_after("accuracy_per_byte"),
        "mean_margin": before_and_after("mean_margin"),
        "mean_margin_per_byte": before_and_after("mean_margin_per_byte"),
        "heldout_pairs": figure(dpo, "heldout_before", "pairs"),
        "evidence": training_evidence(dpo, sft, min_n, ctx.spec.seed),
        "data_quality": distilled.get("data_quality"),
        "data_quality_warning": distilled.get("data_quality_warning"),
    })  # the upstream stages' metrics, as they recorded them


def training_evidence(
    dpo: dict[str, Any], sft: dict[str, Any], min_n: int, seed: int
) -> dict[str, stats.Evidence]:
    """McNemar's exact test of held-out preference accuracy after DPO (and after SFT) against
    before, pair by pair, by total log-probability and per byte."""
    before = dpo.get("heldout_before")
    out: dict[str, stats.Evidence] = {}
    if not isinstance(before, dict):
        return out
    for stage, metrics in (("dpo", dpo), ("sft", sft)):
        after = metrics.get("heldout_after")
        if not isinstance(after, dict):
            continue
        for key, how in (("correct", "total log-prob"), ("correct_per_byte", "per byte")):
            first, then = before.get(key), after.get(key)
            name = f"held-out preference accuracy ({how}), after {stage.upper()} minus before"
            if isinstance(first, list) and isinstance(then, list) and len(first) == len(then):
                found = stats.paired_shares(name, first, then, "held-out pairs", min_n, seed)
            else:  # a run stored before per-pair outcomes were recorded
                pairs = int(before.get("pairs") or 0)
                found = stats.evidence(name, None, pairs, "held-out pairs", (None, None), "none",
                                       "McNemar exact test (per-pair outcomes not recorded)", "no change", None,
                                       min_n)
            out[f"{stage}_{key}"] = found
    return out


def collect_evidence(results: EvaluationResults) -> dict[str, stats.Evidence]:
    """Every headline figure's evidence, by a stable key (for the summary and the report)."""
    out: dict[str, stats.Evidence] = {}
    training = results.training
    if training.data_quality:
        out["distill_data_quality"] = training.data_quality
    for key, found in training.evidence.items():
        if key.endswith("_correct"):  # the per-byte twin stays in the training section
            out[f"training_{key.removesuffix('_correct')}"] = found
    if results.preferences:
        for label, own in results.preferences.own_trait_evidence.items():
            out[f"own_traits_{label}"] = own.own_trait_choice
    if results.robustness:
        for name, method in results.robustness.methods.items():
            out[f"robustness_{name}"] = method.evidence["mean_over_attacks"]
        for name, recognised in results.robustness.recognition_without_prompt.items():
            out[f"recognition_{name}"] = recognised.evidence
    for c in results.coherence.comparisons if results.coherence else []:
        if c.evidence:
            out[f"coherence_vs_{c.baseline}"] = c.evidence
    if results.capabilities and results.capabilities.evidence:
        out["capabilities"] = results.capabilities.evidence
    return out


def summary(evidence: dict[str, stats.Evidence]) -> list[str]:
    """The summary in words (`stats.summary`); a figure whose instrument is not valid is named
    as such (its `sentence`), last, never read as a result."""
    invalid = [k for k, e in evidence.items() if e.validity is not None and not e.validity.valid]  # in order
    lines = stats.summary({k: e for k, e in evidence.items() if k not in invalid})
    return lines + [evidence[k].sentence() for k in invalid]


def headline(results: EvaluationResults) -> dict[str, HeadlineValue]:
    """The few numbers worth a glance (the stage's metrics)."""
    out: dict[str, HeadlineValue] = {}
    if results.preferences:
        out["parse_failure_rate"] = results.preferences.parse_failure_rate
        for agreement in results.preferences.agreements:
            out[f"spearman_{agreement.a}_vs_{agreement.b}"] = agreement.rho
    if results.robustness:
        for name, method in results.robustness.methods.items():
            out[f"macro_f1_{name}"] = method.mean
    for c in results.coherence.comparisons if results.coherence else []:
        out[f"win_rate_full_vs_{c.baseline}"] = c.win_rate
    if results.capabilities:
        out["capability_mean_delta"] = results.capabilities.mean_delta
    return out


def stage_configs(spec: RunSpec, config: Config) -> dict[str, dict[str, Any]]:
    """The config each stage of the run ran with, as its record holds it, and this evaluation's."""
    recorded = {name: resolved.values for name, resolved in spec.stage_configs().items()}
    return {**recorded, NAME: config.model_dump(mode="json")}


def evaluate(subjects: Sequence[Subject], config: Config) -> EvaluationResults:
    """Every configured part; results hold every number, plus timings per part."""
    from character.stages.evaluate import (
        calibration,
        capabilities,
        coherence,
        preferences,
        robustness,
        side_by_side,
    )

    check_inputs(subjects, config)
    primary = subjects[0]
    ctx, spec = primary.ctx, primary.ctx.spec
    started = time.monotonic()
    calibrations = calibration.judge_calibrations(primary, config)  # before any figure it reads
    results = EvaluationResults.model_validate({
        **calibrations,
        "schema_version": SCHEMA_VERSION,
        "run": ctx.run_id,
        "runs": [s.ctx.run_id for s in subjects],
        "persona": primary.persona,
        "personas": [s.persona for s in subjects],
        "model": spec.model,
        "judge": spec.judge_model,
        "scale": spec.scale,
        "seed": spec.seed,
        "config": config.model_dump(mode="json"),
        "stage_configs": stage_configs(spec, config),
        "training": training_numbers(ctx, config.min_n),
        "prompt_pool": PromptPool(prompts=len(primary.pool.prompts), unseen_in_training=primary.pool.unseen),
        "timings": {"judge_calibration": round(time.monotonic() - started, 2)},
    })
    parts = {
        "preferences": lambda: preferences.evaluate(subjects, config),
        "robustness": lambda: robustness.evaluate(subjects, config),
        "coherence": lambda: coherence.evaluate(primary, config),
        "capabilities": lambda: capabilities.evaluate(primary, config),
    }
    if results.judge_calibration:  # the calibrated judge (choose_judge may have chosen it) reads every run
        results.judge = results.judge_calibration.judge
        for other in subjects[1:]:
            other.use_trait_judge(primary.trait_judge)
    for i, part in enumerate(p for p in PARTS if getattr(config, p)):
        ctx.progress(ProgressEvent("eval", i, None, part))
        started = time.monotonic()
        setattr(results, part, parts[part]())
        results.timings[part] = round(time.monotonic() - started, 2)
    if results.preferences and config.side_by_side:
        started = time.monotonic()
        prefix = "" if len(subjects) == 1 else f"{primary.persona}/"
        results.side_by_side = side_by_side.build(primary, config, results.preferences, prefix)
        results.timings["side_by_side"] = round(time.monotonic() - started, 2)
    if primary.steering_info:
        results.steering = SteeringInfo.model_validate(primary.steering_info)
    calibration.mark_judged(results)
    results.headline = calibration.guard_headline(results, headline(results))
    results.evidence = collect_evidence(results)
    results.summary = summary(results.evidence)
    return results


def save(ctx: StageContext, results: EvaluationResults, key: str) -> dict[str, ArtifactRef]:
    """Store the "eval" artifact (results.json) and the "report" artifact (HTML, plots,
    results.json) under `key`, and point the run's `evals/<run>` record at them."""
    from character.report import write_report

    with tempfile.TemporaryDirectory(prefix="oct-eval-") as tmp:
        folder = Path(tmp) / "eval"
        folder.mkdir()
        (folder / RESULTS_FILE).write_text(results.to_json())
        eval_ref = ctx.store.put_dir("eval", key, folder, meta={"stage": NAME, "run": ctx.run_id})
        report = Path(tmp) / "report"
        write_report(results, report)
        report_ref = ctx.store.put_dir("report", key, report, meta={"stage": NAME, "run": ctx.run_id})
    ctx.store.put_record(
        f"{RECORD_PREFIX}{ctx.run_id}",
        {"eval": key, "report": key, "parts": [p for p in PARTS if getattr(results, p) is not None]},
    )
    return {"eval": eval_ref, "report": report_ref}


def load_results(store: Store, run_id: str) -> EvaluationResults:
    """The latest stored eval results of a run (a located error where they do not fit the model)."""
    record = store.get_record(f"{RECORD_PREFIX}{run_id}")
    if record is None:
        raise NotFound(
            f"run {run_id!r} has no evaluation in store {store.uri}; produce one with "
            f"`oct eval all --run {run_id} --store {store.uri}` (or `oct run`)"
        )
    folder = store.materialize("eval", record["eval"])
    return read_results((folder / RESULTS_FILE).read_text(), where=f"{store.uri} eval/{record['eval']}/{RESULTS_FILE}")


def evaluate_run(ctx: StageContext, config: Config) -> StageResult:
    """The eval stage: every configured part on this run."""
    results = evaluate([Subject(ctx, config)], config)
    artifacts = save(ctx, results, ctx.key)
    metrics = {**results.headline, "seconds": results.timings}
    return StageResult(stage=NAME, key=ctx.key, artifacts=artifacts, metrics=metrics)
