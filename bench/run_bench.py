"""Throughput and memory figures for this machine, on SmolLM2-135M-Instruct.

    python bench/run_bench.py [--out out/bench.json] [--steps 6] [--prompts 32] [--new-tokens 64]
    python bench/run_bench.py --demo-timings STORE [--out ...]

Figures, each with its target:
- generation tokens/s, 32 prompts (the engine's default batch) x 64 new tokens (greedy), one
  batch vs one prompt at a time (target: batched >= 4x);
- the same batch with the constitution as the system prompt (the teacher's distillation
  prompts), its shared prefix prefilled once per batch vs re-read for every prompt (no target:
  the saving grows with the system prompt's share of the work);
- DPO and SFT training tokens/s and peak resident memory, each trainer in its own
  subprocess so their peaks do not mix (target: DPO peak <= 1.3x SFT peak, i.e. DPO keeps no
  second copy of the model as its reference).
`--demo-timings STORE` prints instead the wall time of every stage result in a store (a
finished `oct run`), from each result's metrics["wall_seconds"].

A table goes to stdout and the figures as JSON to --out.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

GEN_TARGET = 4.0
MEMORY_TARGET = 1.3
# Demo-scale training (LoRA rank 8), two sequences per forward pass for both trainers so that
# their peak memories differ only by what DPO adds: one pair (chosen + rejected) a pass for
# DPO, two conversations for SFT; two passes a step.
TRAIN_CONFIG = {"global_batch": 2, "max_length": 512, "lora_rank": 8, "lora_alpha": 16, "save_steps": 10_000}
PER_DEVICE = {"dpo": 1, "sft": 2}
ANSWER_SENTENCE = "Here is one more careful point about {topic}, explained plainly and with an example. "


def _prompts(n: int) -> list[Any]:
    from character.data import load_chat_prompts

    return load_chat_prompts("bundled", limit=n)


# ----------------------------------------------------------------------------- generation
def bench_generation(prompts: int, new_tokens: int) -> dict[str, Any]:
    conversations = [[{"role": "user", "content": p.prompt}] for p in _prompts(prompts)]
    out: dict[str, Any] = {"prompts": prompts, "max_new_tokens": new_tokens}
    out["one_at_a_time"] = _time_generation(conversations, new_tokens, batch_size=1)
    out["batched"] = _time_generation(conversations, new_tokens, batch_size=prompts)
    ratio = out["batched"]["tokens_per_second"] / out["one_at_a_time"]["tokens_per_second"]
    out["speedup"] = round(ratio, 2)
    out["target"] = f">= {GEN_TARGET}x"
    out["target_met"] = ratio >= GEN_TARGET
    return out


def bench_shared_prefix(prompts: int, new_tokens: int) -> dict[str, Any]:
    from character.pipeline.spec import RunSpec
    from character.stages.distill import system_prompt

    system = system_prompt("Assistant", RunSpec(constitution="sarcasm").persona)
    conversations = [[{"role": "system", "content": system}, {"role": "user", "content": p.prompt}]
                     for p in _prompts(prompts)]
    out: dict[str, Any] = {"prompts": prompts, "max_new_tokens": new_tokens}
    out["full_prompts"] = _time_generation(conversations, new_tokens, batch_size=prompts, shared_prefix_min=None)
    out["shared_prefix"] = _time_generation(conversations, new_tokens, batch_size=prompts)
    out["speedup"] = round(out["full_prompts"]["seconds"] / out["shared_prefix"]["seconds"], 2)
    return out


def _time_generation(conversations: list[Any], new_tokens: int, **engine_options: Any) -> dict[str, Any]:
    from character.models import SamplingParams, resolve_model
    from character.models.transformers_engine import TransformersEngine

    engine = TransformersEngine(str(resolve_model("smollm2")), **engine_options)
    sampling = SamplingParams(max_new_tokens=new_tokens, temperature=0.0)
    engine.generate(conversations[:1], sampling.model_copy(update={"max_new_tokens": 4}))  # warm-up
    started = time.perf_counter()
    generations = engine.generate(conversations, sampling)
    seconds = time.perf_counter() - started
    tokens = sum(g.num_tokens for g in generations)
    return {"tokens": tokens, "seconds": round(seconds, 2), "tokens_per_second": round(tokens / seconds, 1)}


# ----------------------------------------------------------------------------- training (subprocess)
def _training_rows(n: int) -> list[dict[str, Any]]:
    """Preference pairs on real prompts with ~80-token answers (a short demo answer's length)."""
    rows = []
    for p in _prompts(n):
        topic = p.topic or "this"
        rows.append({
            "prompt": p.prompt,
            "chosen": ANSWER_SENTENCE.format(topic=topic) * 5,
            "rejected": "I would rather not go into " + topic + ". " + ANSWER_SENTENCE.format(topic="it") * 4,
        })
    return rows


def train_worker(kind: str, steps: int) -> dict[str, Any]:
    """Train `steps` steps of DPO or SFT on SmolLM2 through the stages' own code; runs in a
    fresh process so its peak memory is its own."""
    from character.pipeline.engines import LocalEngines
    from character.pipeline.spec import RunSpec
    from character.pipeline.stage import StageContext
    from character.stages import dpo, sft
    from character.store import LocalStore
    from character.training import common

    rows = _training_rows(steps * TRAIN_CONFIG["global_batch"])
    with tempfile.TemporaryDirectory(prefix="oct-bench-") as tmp:
        store = LocalStore(Path(tmp) / "store")
        spec = RunSpec(constitution="sarcasm", model="smollm2", store=store.uri)
        ctx = StageContext(run_id="bench", spec=spec, constitution=spec.persona, store=store,
                           engines=LocalEngines(store), key=f"bench-{kind}", inputs={},
                           workdir=Path(tmp) / "work")
        settings = {**TRAIN_CONFIG, "per_device_batch": PER_DEVICE[kind], "max_steps": steps}
        if kind == "dpo":
            trainer = dpo.build_trainer(ctx, dpo.Config.for_scale("demo", settings), rows)
        else:
            config = sft.Config.for_scale("demo", settings)
            device = common.pick_device(config.gradient_checkpointing)
            model, tokenizer = common.load_student(ctx, device)
            messages = [{"messages": [{"role": "user", "content": r["prompt"]},
                                      {"role": "assistant", "content": r["chosen"]}]} for r in rows]
            trainer = sft.build_trainer(ctx, config, messages, model, tokenizer, device)
        metrics = common.training_metrics(trainer, common.train(trainer, ctx, task=f"bench {kind}"))
    keep = ("steps", "train_tokens", "train_seconds", "tokens_per_second", "peak_rss_mb", "peak_gpu_mb")
    return {k: metrics[k] for k in keep if k in metrics}


def bench_training(steps: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in ("dpo", "sft"):
        proc = subprocess.run([sys.executable, __file__, "--train-worker", kind, "--steps", str(steps)],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"the {kind} worker failed:\n{proc.stderr[-4000:]}")
        out[kind] = json.loads(proc.stdout.strip().splitlines()[-1])
    # On a GPU the model lives in GPU memory: compare there; on a CPU, resident memory.
    peak = "peak_gpu_mb" if "peak_gpu_mb" in out["dpo"] else "peak_rss_mb"
    ratio = out["dpo"][peak] / out["sft"][peak]
    out["compared"] = peak
    out["dpo_over_sft_peak"] = round(ratio, 2)
    out["target"] = f"DPO peak <= {MEMORY_TARGET}x SFT peak"
    out["target_met"] = ratio <= MEMORY_TARGET
    return out


# ----------------------------------------------------------------------------- demo timings
def demo_timings(store_uri: str) -> dict[str, Any]:
    from character.pipeline.runner import RESULT_KIND, load_result
    from character.store import open_store

    store = open_store(store_uri)
    rows = []
    for manifest in sorted(store.list(RESULT_KIND), key=lambda m: m.created_at):
        result = load_result(store, manifest.key)
        rows.append({"stage": result.stage, "key": result.key[:12], "finished": manifest.created_at,
                     "wall_seconds": result.metrics.get("wall_seconds")})
    total = sum(r["wall_seconds"] or 0 for r in rows)
    return {"store": store_uri, "stages": rows, "total_seconds": round(total, 2)}


# ----------------------------------------------------------------------------- output
def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def bench_table(figures: dict[str, Any]) -> str:
    gen, train = figures["generation"], figures["training"]
    rows = [("figure", "value", "target"),
            ("generation, one prompt at a time", f"{gen['one_at_a_time']['tokens_per_second']} tok/s", ""),
            (f"generation, batched x{gen['prompts']}", f"{gen['batched']['tokens_per_second']} tok/s", ""),
            ("generation speedup", f"{gen['speedup']}x", f"{gen['target']}: {_met(gen['target_met'])}")]
    shared = figures["shared_prefix"]
    for label in ("full_prompts", "shared_prefix"):
        rows.append((f"constitution system prompt x{shared['prompts']}, {label.replace('_', ' ')}",
                     f"{shared[label]['seconds']} s", ""))
    rows.append(("shared-prefix speedup", f"{shared['speedup']}x", ""))
    for kind in ("dpo", "sft"):
        t = train[kind]
        rows.append((f"{kind.upper()} training ({t['steps']} steps)", f"{t['tokens_per_second']} tok/s", ""))
        rows.append((f"{kind.upper()} peak RSS", f"{t['peak_rss_mb']} MiB", ""))
        if "peak_gpu_mb" in t:
            rows.append((f"{kind.upper()} peak GPU memory", f"{t['peak_gpu_mb']} MiB", ""))
    rows.append(("DPO / SFT peak memory", f"{train['dpo_over_sft_peak']}x",
                 f"{train['target']}: {_met(train['target_met'])}"))
    return _table(rows)


def timings_table(timings: dict[str, Any]) -> str:
    rows = [("stage", "key", "wall seconds")]
    rows += [(r["stage"], r["key"], str(r["wall_seconds"])) for r in timings["stages"]]
    rows.append(("total", "", str(timings["total_seconds"])))
    return _table(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("out/bench.json"), help="where the JSON goes")
    parser.add_argument("--steps", type=int, default=6, help="training steps per trainer")
    parser.add_argument("--prompts", type=int, default=32,
                        help="prompts generated for, in one batch (default: the transformers engine's batch size)")
    parser.add_argument("--new-tokens", type=int, default=64, help="new tokens per prompt (greedy)")
    parser.add_argument("--demo-timings", metavar="STORE", help="per-stage wall times of a finished run")
    parser.add_argument("--train-worker", choices=("dpo", "sft"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.train_worker:
        print(json.dumps(train_worker(args.train_worker, args.steps)))
        return
    if args.demo_timings:
        figures: dict[str, Any] = {"demo_timings": demo_timings(args.demo_timings)}
        print(timings_table(figures["demo_timings"]))
    else:
        import os
        import platform

        import torch

        gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
        figures = {"machine": {"cpus": os.cpu_count(), "gpu": gpu, "python": platform.python_version(),
                               "torch": torch.__version__},
                   "generation": bench_generation(args.prompts, args.new_tokens),
                   "shared_prefix": bench_shared_prefix(args.prompts, args.new_tokens),
                   "training": bench_training(args.steps)}
        print(bench_table(figures))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"\nJSON: {args.out}")


if __name__ == "__main__":
    main()
