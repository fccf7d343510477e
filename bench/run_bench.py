"""Throughput and memory figures for this machine, on SmolLM2-135M-Instruct.

    python bench/run_bench.py [--out out/bench.json] [--steps 6] [--prompts 32] [--new-tokens 64]
    python bench/run_bench.py --quick      # the generation figure against its bounds only
    python bench/run_bench.py --demo-timings STORE [--out ...]
    python bench/run_bench.py --device cuda [--prompts 256] [--random-weights --model-dir DIR]

The machine's limit is measured in the same run: the GFLOP/s of matrix products of the decode
step's shape ([prompts x hidden] x [hidden x intermediate]) and of a training pass's shape
([tokens x hidden] x [hidden x intermediate]), fp32 and (where the CPU has AVX512-BF16 or AMX)
bf16. A bound in tokens/s is that rate over the matrix-product FLOPs a token needs (N = the
model's matrix parameters, LM head included): 2N to generate one, 4N to train on one with LoRA
(forward, and the backward pass to the inputs; the frozen weights get no gradient), 6N for DPO
(plus the reference's forward, once per pair). Each speed is printed with its bound, its
fraction of the bound, and its ratio to a peer: a bare transformers `generate` on the same
batch, a bare PyTorch LoRA training step on the same sequences. Generation on a CPU also gets
a work bound (`generation_work`): all the products the call needs, prefill included, at the
rates this machine runs them with the weights streamed from memory.

Figures, each with its target:
- generation tokens/s, 32 prompts (the engine's default batch) x 64 new tokens (greedy), one
  batch vs one prompt at a time (target: batched >= 4x);
- the same batch with the constitution as the system prompt (the teacher's distillation
  prompts), its shared prefix prefilled once per batch vs re-read for every prompt (no target:
  the saving grows with the system prompt's share of the work);
- DPO and SFT training tokens/s and peak resident memory, each trainer in its own
  subprocess so their peaks do not mix (target: DPO peak <= 1.3x SFT peak, i.e. DPO keeps no
  second copy of the model as its reference); each as a fraction of its bound and against a
  bare training step.
`--demo-timings STORE` prints instead the wall time of every stage result in a store (a
finished `oct run`), from each result's metrics["wall_seconds"].

On a GPU (`--device cuda`): the model runs in bf16 on the GPU (the engine's default there),
the bound is the bf16 GEMM rate of the same shapes measured on the GPU (CUDA events), and
speeds are tokens per wall second with the GPU synchronised (tokens per CPU-second mean
nothing there). `--random-weights` builds a model with the configuration, tokenizer and chat
template of `--model-dir` (default: the prepared SmolLM2) and random weights, for a machine
the real weights cannot reach: throughput does not depend on the weights' values, but the
answers are noise, so they are not compared, and the stop token is made unreachable (its
embedding row, which is also the LM head's, is zero) so that every answer runs to
--new-tokens as a real model's might not.

A table goes to stdout and the figures as JSON to --out.

This file is the command line; each job is a module beside it: `gemm_bounds.py` (the
machine's limit), `generation_bench.py`, `training_bench.py` (and the workers it starts as
subprocesses of this file), `demo_timings.py`, `bench_tables.py` (the tables),
`random_model.py` (`--random-weights`), `bench_target.py` (what they share).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from bench_tables import bench_table, generation_rows, limits_rows, table, timings_table
from bench_target import Target
from demo_timings import demo_timings
from gemm_bounds import machine_limits
from generation_bench import bench_generation, bench_shared_prefix
from random_model import RANDOM_WEIGHTS_NOTE, build_random_model
from training_bench import bare_train_worker, bench_training, train_worker, training_skip_reason

TRAIN_TOKENS = 256  # rows of a training pass's matrix products: two sequences of ~130 tokens


def _target(args: argparse.Namespace, tmp: str) -> Target:
    """The model and device from the command line; with --random-weights, the random model is
    built into `tmp` (a folder that lives as long as the run)."""
    from character.models import resolve_model
    from character.models.loading import resolve_device

    resolve_device(args.device)  # a clear error before any work when the device is not there
    source = resolve_model(args.model_dir or "smollm2")
    if args.random_weights:
        print(f"building a model with random weights from {source}'s config and tokenizer ...", flush=True)
        model = build_random_model(Path(source), Path(tmp) / "random-model")
        return Target(model=str(model), device=args.device, random_weights=True)
    return Target(model=str(source) if args.model_dir else "smollm2", device=args.device)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("out/bench.json"), help="where the JSON goes")
    parser.add_argument("--steps", type=int, default=6, help="training steps per trainer")
    parser.add_argument("--prompts", type=int, default=32,
                        help="prompts generated for, in one batch (default: the transformers engine's batch size)")
    parser.add_argument("--new-tokens", type=int, default=64, help="new tokens per prompt (greedy)")
    parser.add_argument("--demo-timings", metavar="STORE", help="per-stage wall times of a finished run")
    parser.add_argument("--quick", action="store_true",
                        help="only the batched generation against its bound and the bare generate (under 3 minutes)")
    parser.add_argument("--device", default="cpu",
                        help="cpu (default) or cuda[:N]: bf16 weights on the GPU, the bound measured there")
    parser.add_argument("--model-dir", type=Path, default=None,
                        help="a model folder (config.json, tokenizer, chat template) instead of the bundled SmolLM2")
    parser.add_argument("--random-weights", action="store_true",
                        help="random weights on --model-dir's config and tokenizer (answers not compared)")
    parser.add_argument("--skip-training", action="store_true", help="leave out the training figures")
    parser.add_argument("--train-worker", choices=("dpo", "sft"), help=argparse.SUPPRESS)
    parser.add_argument("--bare-train-worker", choices=("dpo", "sft"), help=argparse.SUPPRESS)
    parser.add_argument("--worker-model", default="smollm2", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.train_worker:
        print(json.dumps(train_worker(args.train_worker, args.steps, args.worker_model)))
        return
    if args.bare_train_worker:
        print(json.dumps(bare_train_worker(args.bare_train_worker, args.steps, args.worker_model, args.device)))
        return
    if args.demo_timings:
        figures: dict[str, Any] = {"demo_timings": demo_timings(args.demo_timings)}
        print(timings_table(figures["demo_timings"]))
    else:
        with tempfile.TemporaryDirectory(prefix="oct-bench-model-") as tmp:
            figures = run_figures(args, _target(args, tmp))
    _save(args.out, figures)
    print(f"\nJSON: {args.out}")
    if args.quick:
        gen = figures["generation"]
        key = gen["speed"]
        unit = "tokens per CPU-second" if key == "tokens_per_cpu_second" else "tokens per second"
        work = f"; of the work bound: {gen['work_bound']['fraction']}" if "work_bound" in gen else ""
        print(f"generation fraction of bound: {gen['fraction_of_bound']} "
              f"({gen['batched'][key]} / {gen['bound_tokens_per_second']} {unit}, "
              f"{figures['limits']['generation_dtype']}, the default precision){work}")
    if figures.get("machine", {}).get("random_weights"):
        print(RANDOM_WEIGHTS_NOTE)


def _save(path: Path, figures: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(figures, indent=2) + "\n")


def _guarded(target: Target, fn: Any, *args: Any) -> dict[str, Any]:
    """fn(*args); on a GPU machine (a rare, timed lease) a failure is recorded as the figure
    ({"failed": ...}) so that the figures already measured are still printed and written."""
    if not target.cuda:
        return dict(fn(*args))
    try:
        return dict(fn(*args))
    except (Exception, SystemExit) as exc:
        import traceback

        traceback.print_exc()
        return {"failed": f"{type(exc).__name__}: {exc}"[-2000:]}


def run_figures(args: argparse.Namespace, target: Target) -> dict[str, Any]:
    import platform

    import torch

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    machine = {"cpus": os.cpu_count(), "gpu": gpu, "device": target.device, "python": platform.python_version(),
               "torch": torch.__version__, "threads": torch.get_num_threads(),
               "load_average_before": [round(x, 2) for x in os.getloadavg()]}
    if target.random_weights:
        import transformers

        machine |= {"transformers": transformers.__version__, "random_weights": True, "weights": RANDOM_WEIGHTS_NOTE}
        print(RANDOM_WEIGHTS_NOTE, flush=True)
    limits = machine_limits(args.prompts, TRAIN_TOKENS, target)
    figures: dict[str, Any] = {"machine": machine, "limits": limits}
    figures["generation"] = bench_generation(args.prompts, args.new_tokens, limits, quick=args.quick, target=target)
    if not args.quick:
        _save(args.out, figures)  # what is measured so far, should a later part be cut short
        figures["shared_prefix"] = _guarded(target, bench_shared_prefix, args.prompts, args.new_tokens, target)
        _save(args.out, figures)
        skip = "--skip-training" if args.skip_training else training_skip_reason(target)
        figures["training"] = {"skipped": skip} if skip else _guarded(target, bench_training, args.steps, limits,
                                                                        target)
    machine["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    print(f"machine: {machine}")
    if args.quick:
        header = ("figure", "value", "target")
        gen_rows = generation_rows(figures["generation"], limits["generation_dtype"])
        print(table([header, *limits_rows(limits), *gen_rows]))
    else:
        print(bench_table(figures))
    return figures


if __name__ == "__main__":
    main()
