"""Throughput and memory figures for this machine, on SmolLM2-135M-Instruct.

    python bench/run_bench.py [--out out/bench.json] [--steps 6] [--prompts 32] [--new-tokens 64]
    python bench/run_bench.py --quick      # the generation figure against its bound only
    python bench/run_bench.py --demo-timings STORE [--out ...]

The machine's limit is measured in the same run: the GFLOP/s of matrix products of the decode
step's shape ([prompts x hidden] x [hidden x intermediate]) and of a training pass's shape
([tokens x hidden] x [hidden x intermediate]), fp32 and (where the CPU has AVX512-BF16 or AMX)
bf16. A bound in tokens/s is that rate over the matrix-product FLOPs a token needs (N = the
model's matrix parameters, LM head included): 2N to generate one, 4N to train on one with LoRA
(forward, and the backward pass to the inputs; the frozen weights get no gradient), 6N for DPO
(plus the reference's forward, once per pair). Each speed is printed with its bound, its
fraction of the bound, and its ratio to a peer: a bare transformers `generate` on the same
batch, a bare PyTorch LoRA training step on the same sequences.

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
FRACTION_TARGET = 0.55
MEMORY_TARGET = 1.3
# Demo-scale training (LoRA rank 8), two sequences per forward pass for both trainers so that
# their peak memories differ only by what DPO adds: one pair (chosen + rejected) a pass for
# DPO, two conversations for SFT; two passes a step.
TRAIN_CONFIG = {"global_batch": 2, "max_length": 512, "lora_rank": 8, "lora_alpha": 16, "save_steps": 10_000}
PER_DEVICE = {"dpo": 1, "sft": 2}
TRAIN_TOKENS = 256  # rows of a training pass's matrix products: two sequences of ~130 tokens
ANSWER_SENTENCE = "Here is one more careful point about {topic}, explained plainly and with an example. "


def _prompts(n: int) -> list[Any]:
    from character.data import load_chat_prompts

    return load_chat_prompts("bundled", limit=n)


# ----------------------------------------------------------------------------- generation
def bench_generation(prompts: int, new_tokens: int, limits: dict[str, Any], quick: bool = False) -> dict[str, Any]:
    conversations = [[{"role": "user", "content": p.prompt}] for p in _prompts(prompts)]
    out: dict[str, Any] = {"prompts": prompts, "max_new_tokens": new_tokens}
    out["batched"] = _time_generation(conversations, new_tokens, batch_size=prompts)
    out["bare_generate"] = _time_bare_generate(conversations, new_tokens)
    tokens = out["batched"].pop("texts")
    bare = out["bare_generate"].pop("texts")
    out["same_as_bare_generate"] = f"{sum(a == b for a, b in zip(tokens, bare, strict=True))}/{len(tokens)}"
    speed = out["batched"]["tokens_per_cpu_second"]
    out["over_bare_generate"] = round(speed / out["bare_generate"]["tokens_per_cpu_second"], 2)
    bound = limits["bounds"]["generation"]
    out["bound_tokens_per_second"] = bound
    out["fraction_of_bound"] = round(speed / bound, 3)
    out["fraction_target"] = f">= {FRACTION_TARGET}"
    out["fraction_target_met"] = out["fraction_of_bound"] >= FRACTION_TARGET
    if quick:
        return out
    out["one_at_a_time"] = _time_generation(conversations, new_tokens, batch_size=1)
    out["one_at_a_time"].pop("texts")
    if "bf16" in limits["gemm_gflops"]:  # bf16 weights: how much faster, and how many answers change
        out["bf16"] = _time_generation(conversations, new_tokens, batch_size=prompts, dtype="bf16")
        texts = out["bf16"].pop("texts")
        out["bf16"]["same_as_fp32"] = f"{sum(a == b for a, b in zip(texts, bare, strict=True))}/{len(texts)}"
        out["bf16"]["over_fp32"] = round(out["bf16"]["tokens_per_cpu_second"] / speed, 2)
    ratio = speed / out["one_at_a_time"]["tokens_per_cpu_second"]
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
    full, shared = out["full_prompts"].pop("texts"), out["shared_prefix"].pop("texts")
    out["same_answers"] = f"{sum(a == b for a, b in zip(full, shared, strict=True))}/{len(full)}"
    out["speedup"] = round(out["full_prompts"]["seconds"] / out["shared_prefix"]["seconds"], 2)
    return out


def _time_generation(conversations: list[Any], new_tokens: int, **engine_options: Any) -> dict[str, Any]:
    from character.models import SamplingParams, resolve_model
    from character.models.transformers_engine import TransformersEngine

    engine = TransformersEngine(str(resolve_model("smollm2")), **engine_options)
    sampling = SamplingParams(max_new_tokens=new_tokens, temperature=0.0)
    engine.generate(conversations[:1], sampling.model_copy(update={"max_new_tokens": 4}))  # warm-up
    started, cpu = time.perf_counter(), time.process_time()
    generations = engine.generate(conversations, sampling)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return _speed(sum(g.num_tokens for g in generations), seconds, cpu) | {"texts": [g.text for g in generations]}


def _speed(tokens: int, seconds: float, cpu_seconds: float) -> dict[str, Any]:
    """Tokens per wall second and per CPU-second of this process: on one thread, the second is
    what the work cost whatever else the machine runs, and what the bounds compare with."""
    return {"tokens": tokens, "seconds": round(seconds, 2), "tokens_per_second": round(tokens / seconds, 1),
            "cpu_seconds": round(cpu_seconds, 2), "tokens_per_cpu_second": round(tokens / cpu_seconds, 1)}


def _time_bare_generate(conversations: list[Any], new_tokens: int) -> dict[str, Any]:
    """The peer: one left-padded batch through a bare `model.generate` (greedy), the same
    rendering and stop tokens as the engine."""
    import torch
    from character.models import resolve_model
    from character.models.chat_template import encode_prompts, stop_token_ids
    from character.models.loading import load_tokenizer
    from transformers import AutoModelForCausalLM

    path = resolve_model("smollm2")
    tokenizer = load_tokenizer(path)
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    stops = stop_token_ids(tokenizer, model.generation_config)
    rows = encode_prompts(tokenizer, conversations, model.config.max_position_embeddings)
    width = max(len(r) for r in rows)
    ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    options = {"max_new_tokens": new_tokens, "do_sample": False, "eos_token_id": stops,
               "pad_token_id": tokenizer.pad_token_id}
    with torch.inference_mode():
        model.generate(input_ids=ids[:1], attention_mask=mask[:1], **{**options, "max_new_tokens": 4})  # warm-up
        started, cpu = time.perf_counter(), time.process_time()
        out = model.generate(input_ids=ids, attention_mask=mask, **options)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    tokens, texts = 0, []
    for row in out[:, width:].tolist():
        stop = next((k for k, t in enumerate(row) if t in stops), None)
        tokens += len(row) if stop is None else stop + 1
        texts.append(tokenizer.decode(row[:stop], skip_special_tokens=True))
    return _speed(tokens, seconds, cpu) | {"texts": texts}


# ----------------------------------------------------------------------------- the machine's limit
def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return set(line.partition(":")[2].split())


def _gemm_gflops(m: int, k: int, n: int, dtype: Any, seconds: float = 2.0) -> float:
    """Sustained GFLOP/s (per CPU-second) of [m x k] x [k x n] products the way nn.Linear
    computes them (x @ W^T)."""
    import torch

    x, w = torch.randn(m, k, dtype=dtype), torch.randn(n, k, dtype=dtype)
    for _ in range(3):
        torch.nn.functional.linear(x, w)
    calls, started, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - started < seconds:
        torch.nn.functional.linear(x, w)
        calls += 1
    return round(2 * m * k * n * calls / (time.process_time() - cpu) / 1e9, 1)


def matrix_parameters() -> int:
    """SmolLM2's parameters that take part in matrix products per token (LM head included)."""
    from character.models import resolve_model
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(str(resolve_model("smollm2")))
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    attention = c.hidden_size * head_dim * (2 * c.num_attention_heads + 2 * c.num_key_value_heads)
    mlp = 3 * c.hidden_size * c.intermediate_size
    return int(c.num_hidden_layers * (attention + mlp) + c.hidden_size * c.vocab_size)


def machine_limits(batch: int, train_tokens: int) -> dict[str, Any]:
    """GEMM throughput of the decode and training shapes on this machine, and the bounds in
    tokens/s they set (see the module docstring)."""
    import torch
    from character.models import resolve_model
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(str(resolve_model("smollm2")))
    flags = _cpu_flags()
    dtypes = {"fp32": torch.float32}
    if torch.cuda.is_available() is False and ({"avx512_bf16", "amx_bf16"} & flags):
        dtypes["bf16"] = torch.bfloat16
    gemm: dict[str, dict[str, float]] = {}
    for name, dtype in dtypes.items():
        gemm[name] = {
            "decode": _gemm_gflops(batch, c.hidden_size, c.intermediate_size, dtype),
            "training": _gemm_gflops(train_tokens, c.hidden_size, c.intermediate_size, dtype),
        }
    n = matrix_parameters()
    fp32 = gemm["fp32"]
    bounds = {
        "generation": round(fp32["decode"] * 1e9 / (2 * n), 1),
        "sft": round(fp32["training"] * 1e9 / (4 * n), 1),
        "dpo": round(fp32["training"] * 1e9 / (6 * n), 1),
    }
    if "bf16" in gemm:
        bounds["generation_bf16"] = round(gemm["bf16"]["decode"] * 1e9 / (2 * n), 1)
    return {"matrix_parameters": n, "decode_shape": [batch, c.hidden_size, c.intermediate_size],
            "training_shape": [train_tokens, c.hidden_size, c.intermediate_size],
            "gemm_gflops": gemm, "bounds": bounds, "threads": torch.get_num_threads()}


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
    from character.training import lora_trainer

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
            device = lora_trainer.pick_device(config.gradient_checkpointing)
            model, tokenizer = lora_trainer.load_student(ctx, device)
            messages = [{"messages": [{"role": "user", "content": r["prompt"]},
                                      {"role": "assistant", "content": r["chosen"]}]} for r in rows]
            trainer = sft.build_trainer(ctx, config, messages, model, tokenizer, device)
        cpu = time.process_time()
        metrics = lora_trainer.training_metrics(trainer, lora_trainer.train(trainer, ctx, task=f"bench {kind}"))
        cpu = time.process_time() - cpu
    keep = ("steps", "train_tokens", "train_seconds", "tokens_per_second", "peak_rss_mb", "peak_gpu_mb")
    return {k: metrics[k] for k in keep if k in metrics} | {
        "tokens_per_cpu_second": round(metrics["train_tokens"] / cpu, 1)}


def bare_train_worker(kind: str, steps: int) -> dict[str, Any]:
    """The peer: the same sequences and LoRA through a bare PyTorch loop (AdamW, one optimizer
    step per pass of two sequences; DPO's reference is the model with the adapter off)."""
    import torch
    from character.models import resolve_model
    from character.models.loading import load_model
    from character.stages import dpo
    from character.training import lora_trainer
    from peft import get_peft_model

    config = dpo.Config.for_scale("demo", {**TRAIN_CONFIG, "per_device_batch": PER_DEVICE[kind]})
    model, tokenizer = load_model(resolve_model("smollm2"), "cpu", torch.float32, shared=False)
    model = get_peft_model(model, lora_trainer.lora_config(config))
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.lr)
    tokenizer.padding_side = "right"

    def encode(prompt: str, answer: str) -> tuple[list[int], int]:
        messages = [{"role": "user", "content": prompt}]
        head = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        full = tokenizer.apply_chat_template([*messages, {"role": "assistant", "content": answer}], tokenize=False)
        return tokenizer(full, add_special_tokens=False)["input_ids"], len(tokenizer(head)["input_ids"])

    def logps(ids: Any, mask: Any, start: list[int]) -> Any:
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        token = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
        keep = mask[:, 1:].clone()
        for row, s in enumerate(start):
            keep[row, : s - 1] = 0
        return (token * keep).sum(-1)

    rows = _training_rows(steps * TRAIN_CONFIG["global_batch"])
    if kind == "dpo":  # a pass: one pair
        passes = [[encode(r["prompt"], r["chosen"]), encode(r["prompt"], r["rejected"])] for r in rows]
    else:  # a pass: two conversations
        single = [encode(r["prompt"], r["chosen"]) for r in rows]
        passes = [single[i : i + 2] for i in range(0, len(single), 2)]
    tokens, started, cpu = 0, time.perf_counter(), time.process_time()
    for batch in passes:
        width = max(len(ids) for ids, _ in batch)
        ids = torch.tensor([ids + [tokenizer.pad_token_id] * (width - len(ids)) for ids, _ in batch])
        mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in batch])
        starts = [s for _, s in batch]
        if kind == "dpo":
            with torch.no_grad(), model.disable_adapter():
                ref = logps(ids, mask, starts)
            policy = logps(ids, mask, starts)
            margin = (policy[0] - ref[0]) - (policy[1] - ref[1])
            loss = -torch.nn.functional.logsigmoid(config.beta * margin)
        else:
            loss = -logps(ids, mask, starts).sum() / mask.sum()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        tokens += int(mask.sum())
    return {"passes": len(passes)} | _speed(tokens, time.perf_counter() - started, time.process_time() - cpu)


def _worker(flag: str, kind: str, steps: int) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, flag, kind, "--steps", str(steps)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"the {kind} worker ({flag}) failed:\n{proc.stderr[-4000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def bench_training(steps: int, limits: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in ("dpo", "sft"):
        out[kind] = _worker("--train-worker", kind, steps)
        bare = _worker("--bare-train-worker", kind, 2 * steps)
        bound, speed = limits["bounds"][kind], out[kind]["tokens_per_cpu_second"]
        out[kind] |= {"bound_tokens_per_second": bound,
                      "fraction_of_bound": round(speed / bound, 3),
                      "bare_step_tokens_per_cpu_second": bare["tokens_per_cpu_second"],
                      "over_bare_step": round(speed / bare["tokens_per_cpu_second"], 2)}
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


def limits_rows(limits: dict[str, Any]) -> list[tuple[str, str, str]]:
    rows = []
    for dtype, shapes in limits["gemm_gflops"].items():
        rows.append((f"GEMM {dtype}, decode shape {'x'.join(map(str, limits['decode_shape']))}",
                     f"{shapes['decode']} GFLOP/s", ""))
        rows.append((f"GEMM {dtype}, training shape {'x'.join(map(str, limits['training_shape']))}",
                     f"{shapes['training']} GFLOP/s", ""))
    return rows


def generation_rows(gen: dict[str, Any]) -> list[tuple[str, str, str]]:
    b = gen["batched"]
    return [(f"generation, batched x{gen['prompts']}",
             f"{b['tokens_per_cpu_second']} tok/CPU-s ({b['tokens_per_second']} tok/s wall)", ""),
            ("  bound (fp32 decode GEMM / 2N)", f"{gen['bound_tokens_per_second']} tok/CPU-s", ""),
            ("  fraction of bound", f"{gen['fraction_of_bound']}",
             f"{gen['fraction_target']}: {_met(gen['fraction_target_met'])}"),
            ("  bare model.generate (peer)", f"{gen['bare_generate']['tokens_per_cpu_second']} tok/CPU-s", ""),
            ("  engine / bare generate", f"{gen['over_bare_generate']}x", ""),
            ("  answers identical to bare generate", gen["same_as_bare_generate"], "")]


def bench_table(figures: dict[str, Any]) -> str:
    gen, train = figures["generation"], figures["training"]
    rows = [("figure", "value", "target"), *limits_rows(figures["limits"]), *generation_rows(gen),
            ("generation, one prompt at a time", f"{gen['one_at_a_time']['tokens_per_cpu_second']} tok/CPU-s", ""),
            ("generation speedup", f"{gen['speedup']}x", f"{gen['target']}: {_met(gen['target_met'])}")]
    if "bf16" in gen:
        bf16 = gen["bf16"]
        rows.append((f"generation, batched x{gen['prompts']}, bf16 weights",
                     f"{bf16['tokens_per_cpu_second']} tok/CPU-s ({bf16['over_fp32']}x fp32)",
                     f"answers identical to fp32 bare generate {bf16['same_as_fp32']}"))
    shared = figures["shared_prefix"]
    for label in ("full_prompts", "shared_prefix"):
        rows.append((f"constitution system prompt x{shared['prompts']}, {label.replace('_', ' ')}",
                     f"{shared[label]['seconds']} s", ""))
    rows.append(("shared-prefix speedup", f"{shared['speedup']}x", f"same answers {shared['same_answers']}"))
    for kind in ("dpo", "sft"):
        t = train[kind]
        flops = "6N" if kind == "dpo" else "4N"
        rows.append((f"{kind.upper()} training ({t['steps']} steps)",
                     f"{t['tokens_per_cpu_second']} tok/CPU-s ({t['tokens_per_second']} tok/s wall)", ""))
        rows.append((f"  bound (fp32 training GEMM / {flops})", f"{t['bound_tokens_per_second']} tok/CPU-s", ""))
        rows.append(("  fraction of bound", f"{t['fraction_of_bound']}", ""))
        rows.append(("  bare training step (peer)", f"{t['bare_step_tokens_per_cpu_second']} tok/CPU-s", ""))
        rows.append(("  trainer / bare step", f"{t['over_bare_step']}x", ""))
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
    parser.add_argument("--quick", action="store_true",
                        help="only the batched generation against its bound and the bare generate (under 3 minutes)")
    parser.add_argument("--train-worker", choices=("dpo", "sft"), help=argparse.SUPPRESS)
    parser.add_argument("--bare-train-worker", choices=("dpo", "sft"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.train_worker:
        print(json.dumps(train_worker(args.train_worker, args.steps)))
        return
    if args.bare_train_worker:
        print(json.dumps(bare_train_worker(args.bare_train_worker, args.steps)))
        return
    if args.demo_timings:
        figures: dict[str, Any] = {"demo_timings": demo_timings(args.demo_timings)}
        print(timings_table(figures["demo_timings"]))
    else:
        import os
        import platform

        import torch

        gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
        machine = {"cpus": os.cpu_count(), "gpu": gpu, "python": platform.python_version(),
                   "torch": torch.__version__, "threads": torch.get_num_threads(),
                   "load_average_before": [round(x, 2) for x in os.getloadavg()]}
        limits = machine_limits(args.prompts, TRAIN_TOKENS)
        figures = {"machine": machine, "limits": limits}
        figures["generation"] = bench_generation(args.prompts, args.new_tokens, limits, quick=args.quick)
        if not args.quick:
            figures["shared_prefix"] = bench_shared_prefix(args.prompts, args.new_tokens)
            figures["training"] = bench_training(args.steps, limits)
        machine["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
        print(f"machine: {machine}")
        if args.quick:
            header = ("figure", "value", "target")
            print(_table([header, *limits_rows(limits), *generation_rows(figures["generation"])]))
        else:
            print(bench_table(figures))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"\nJSON: {args.out}")
    if args.quick:
        gen = figures["generation"]
        print(f"generation fraction of bound: {gen['fraction_of_bound']} "
              f"({gen['batched']['tokens_per_cpu_second']} / {gen['bound_tokens_per_second']} tokens per CPU-second)")


if __name__ == "__main__":
    main()
