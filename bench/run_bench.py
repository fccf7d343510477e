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
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
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
RANDOM_WEIGHTS_NOTE = ("WEIGHTS ARE RANDOM (SmolLM2-135M's config, tokenizer and chat template): the answers are "
                       "noise, so they are not compared; the stop token is unreachable, so every answer runs "
                       "to max_new_tokens")
_WEIGHT_FILES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".safetensors.index.json", ".bin.index.json")


@dataclass(frozen=True)
class Target:
    """What the bench runs on: a model folder (or bundled name), a device, and whether the
    weights are random (answers then mean nothing and are not compared)."""

    model: str = "smollm2"
    device: str = "cpu"
    random_weights: bool = False

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    @property
    def speed_key(self) -> str:
        """The speed the bounds are compared with: per CPU-second of this process on a CPU, per
        wall second (GPU synchronised) on a GPU."""
        return "tokens_per_second" if self.cuda else "tokens_per_cpu_second"

    @property
    def speed_unit(self) -> str:
        return "tok/s" if self.cuda else "tok/CPU-s"

    @property
    def bound_dtype(self) -> str:
        return "bf16" if self.cuda else "fp32"


CPU = Target()


def _prompts(n: int) -> list[Any]:
    """n bundled chat prompts (a fixed random subset); beyond the 245 bundled, they repeat."""
    from character.data import load_chat_prompts

    every = load_chat_prompts("bundled")
    if n <= len(every):
        return load_chat_prompts("bundled", limit=n)
    return [every[i % len(every)] for i in range(n)]


def _sync(target: Target) -> None:
    if target.cuda:
        import torch

        torch.cuda.synchronize()


# ----------------------------------------------------------------------------- random weights
def build_random_model(source: Path, out: Path, seed: int = 0) -> Path:
    """A model folder at `out` with `source`'s config, tokenizer and chat template (every file
    but the weights, copied as is) and random weights (transformers' own initialisation, fp32),
    in which the stop tokens' embedding rows are zero: with tied embeddings that row is also the
    LM head's, so a stop token's logit is exactly 0 while the largest of the ~49k random logits
    is positive, and greedy decoding never stops early."""
    import torch
    from character.models.chat_template import stop_token_ids
    from character.models.loading import load_tokenizer
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    config = AutoConfig.from_pretrained(str(source))
    tokenizer = load_tokenizer(source)
    try:
        generation = GenerationConfig.from_pretrained(str(source))
    except OSError:
        generation = None
    stops = stop_token_ids(tokenizer, generation)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        model.get_input_embeddings().weight[stops] = 0
        head = model.get_output_embeddings()
        if head is not None:
            head.weight[stops] = 0
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    for f in sorted(source.iterdir()):
        weights = f.name.endswith(_WEIGHT_FILES)
        if f.is_file() and not f.name.startswith(".") and f.name != "config.json" and not weights:
            shutil.copy2(f, out / f.name)
    return out


# ----------------------------------------------------------------------------- generation
def bench_generation(prompts: int, new_tokens: int, limits: dict[str, Any], quick: bool = False,
                     target: Target = CPU) -> dict[str, Any]:
    conversations = [[{"role": "user", "content": p.prompt}] for p in _prompts(prompts)]
    out: dict[str, Any] = {"prompts": prompts, "max_new_tokens": new_tokens, "device": target.device,
                           "speed": target.speed_key}
    out["batched"] = _time_generation(target, conversations, new_tokens, batch_size=prompts)
    out["bare_generate"] = _time_bare_generate(target, conversations, new_tokens)
    tokens = out["batched"].pop("texts")
    bare = out["bare_generate"].pop("texts")
    if target.random_weights:
        out["same_as_bare_generate"] = "not compared (random weights)"
        out["all_answers_ran_max_new_tokens"] = out["batched"]["tokens"] == prompts * new_tokens
    else:
        out["same_as_bare_generate"] = f"{sum(a == b for a, b in zip(tokens, bare, strict=True))}/{len(tokens)}"
    speed = out["batched"][target.speed_key]
    out["over_bare_generate"] = round(speed / out["bare_generate"][target.speed_key], 2)
    bound = limits["bounds"]["generation"]
    out["bound_tokens_per_second"] = bound
    out["fraction_of_bound"] = round(speed / bound, 3)
    out["fraction_target"] = f">= {FRACTION_TARGET}"
    out["fraction_target_met"] = out["fraction_of_bound"] >= FRACTION_TARGET
    if "decode_cold" in limits["gemm_gflops"].get("fp32", {}) and not target.cuda:
        out["work_bound"] = generation_work(target, conversations, out["batched"], limits["gemm_gflops"]["fp32"])
    graph_bound = limits["bounds"].get("generation_cuda_graph")
    if graph_bound:
        out["cuda_graph_bound_tokens_per_second"] = graph_bound
        out["fraction_of_cuda_graph_bound"] = round(speed / graph_bound, 3)
    if quick:
        return out
    out["one_at_a_time"] = _time_generation(target, conversations, new_tokens, batch_size=1)
    out["one_at_a_time"].pop("texts")
    # bf16 weights on a CPU that has bf16 matrix products: how much faster, how many answers change
    if not target.cuda and "bf16" in limits["gemm_gflops"]:
        out["bf16"] = _time_generation(target, conversations, new_tokens, batch_size=prompts, dtype="bf16")
        texts = out["bf16"].pop("texts")
        if target.random_weights:
            out["bf16"]["same_as_fp32"] = "not compared (random weights)"
        else:
            out["bf16"]["same_as_fp32"] = f"{sum(a == b for a, b in zip(texts, bare, strict=True))}/{len(texts)}"
        out["bf16"]["over_fp32"] = round(out["bf16"][target.speed_key] / speed, 2)
    ratio = speed / out["one_at_a_time"][target.speed_key]
    out["speedup"] = round(ratio, 2)
    out["target"] = f">= {GEN_TARGET}x"
    out["target_met"] = ratio >= GEN_TARGET
    return out


def generation_work(target: Target, conversations: list[Any], batched: dict[str, Any],
                    rates: dict[str, float]) -> dict[str, Any]:
    """A second bound for the batched call, with nothing left out: the matrix products it cannot
    avoid, at the rate this machine runs them. The prefill: each distinct prompt token once (a
    prefix every prompt shares, once), without the LM head, which only a row's last position
    needs, at the rate of the training shape (hundreds of rows: the weights' trip from memory
    is spread over them). The decode: 2N per generated token after a row's first (whose logits
    come from the prefill), at the rate of the decode shape on weights streamed from memory, as
    a decode step streams the whole model. Its fraction: the share of the call's CPU time those
    products would take; the rest is spent outside them."""
    from character.models import resolve_model
    from character.models.chat_template import encode_prompts, shared_prefix_length
    from transformers import AutoConfig, AutoTokenizer

    folder = str(resolve_model(target.model))
    c = AutoConfig.from_pretrained(folder)
    rows = encode_prompts(AutoTokenizer.from_pretrained(folder), conversations, 0)
    shared = shared_prefix_length(rows, min(len(r) for r in rows) - 1)
    n = matrix_parameters(target)
    head = c.hidden_size * c.vocab_size
    prompt_tokens = shared + sum(len(r) - shared for r in rows)
    prefill = 2 * (n - head) * prompt_tokens + 2 * head * len(rows)
    decode = 2 * n * (batched["tokens"] - len(rows))
    seconds = prefill / (rates["training"] * 1e9) + decode / (rates["decode_cold"] * 1e9)
    return {"prompt_tokens": prompt_tokens, "shared_prefix": shared, "prefill_gflop": round(prefill / 1e9, 1),
            "decode_gflop": round(decode / 1e9, 1), "seconds_at_those_rates": round(seconds, 2),
            "fraction": round(seconds / batched["cpu_seconds"], 3)}


def bench_shared_prefix(prompts: int, new_tokens: int, target: Target = CPU) -> dict[str, Any]:
    from character.pipeline.spec import RunSpec
    from character.stages.common.system_prompt import system_prompt

    system = system_prompt("Assistant", RunSpec(constitution="sarcasm").persona)
    conversations = [[{"role": "system", "content": system}, {"role": "user", "content": p.prompt}]
                     for p in _prompts(prompts)]
    out: dict[str, Any] = {"prompts": prompts, "max_new_tokens": new_tokens}
    out["full_prompts"] = _time_generation(target, conversations, new_tokens, batch_size=prompts,
                                           shared_prefix_min=None)
    out["shared_prefix"] = _time_generation(target, conversations, new_tokens, batch_size=prompts)
    full, shared = out["full_prompts"].pop("texts"), out["shared_prefix"].pop("texts")
    if target.random_weights:
        out["same_answers"] = "not compared (random weights)"
    else:
        out["same_answers"] = f"{sum(a == b for a, b in zip(full, shared, strict=True))}/{len(full)}"
    out["speedup"] = round(out["full_prompts"]["seconds"] / out["shared_prefix"]["seconds"], 2)
    return out


def _time_generation(target: Target, conversations: list[Any], new_tokens: int,
                     **engine_options: Any) -> dict[str, Any]:
    from character.models import SamplingParams, resolve_model
    from character.models.transformers_engine import TransformersEngine

    engine = TransformersEngine(str(resolve_model(target.model)), device=target.device, **engine_options)
    sampling = SamplingParams(max_new_tokens=new_tokens, temperature=0.0)
    engine.generate(conversations[:1], sampling.model_copy(update={"max_new_tokens": 4}))  # warm-up
    _sync(target)
    started, cpu = time.perf_counter(), time.process_time()
    generations = engine.generate(conversations, sampling)
    _sync(target)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    del engine
    _free(target)
    return _speed(sum(g.num_tokens for g in generations), seconds, cpu) | {"texts": [g.text for g in generations]}


def _free(target: Target) -> None:
    if target.cuda:
        import gc

        import torch

        gc.collect()
        torch.cuda.empty_cache()


def _speed(tokens: int, seconds: float, cpu_seconds: float) -> dict[str, Any]:
    """Tokens per wall second and per CPU-second of this process: on one thread, the second is
    what the work cost whatever else the machine runs, and what the CPU bounds compare with (on
    a GPU, the wall second is)."""
    return {"tokens": tokens, "seconds": round(seconds, 2), "tokens_per_second": round(tokens / seconds, 1),
            "cpu_seconds": round(cpu_seconds, 2), "tokens_per_cpu_second": round(tokens / cpu_seconds, 1)}


def _time_bare_generate(target: Target, conversations: list[Any], new_tokens: int) -> dict[str, Any]:
    """The peer: one left-padded batch through a bare `model.generate` (greedy), the same
    rendering and stop tokens as the engine, the engine's dtype (fp32 on a CPU, bf16 on a GPU)."""
    import torch
    from character.models import resolve_model
    from character.models.chat_template import encode_prompts, stop_token_ids
    from character.models.loading import load_tokenizer
    from transformers import AutoModelForCausalLM

    path = resolve_model(target.model)
    tokenizer = load_tokenizer(path)
    dtype = torch.bfloat16 if target.cuda else torch.float32
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
    device: Any = torch.device(target.device)
    model.to(device)
    model.eval()
    stops = stop_token_ids(tokenizer, model.generation_config)
    rows = encode_prompts(tokenizer, conversations, model.config.max_position_embeddings)
    width = max(len(r) for r in rows)
    ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(r)) + r for r in rows], device=target.device)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=target.device)
    options = {"max_new_tokens": new_tokens, "do_sample": False, "eos_token_id": stops,
               "pad_token_id": tokenizer.pad_token_id}
    with torch.inference_mode():
        model.generate(input_ids=ids[:1], attention_mask=mask[:1], **{**options, "max_new_tokens": 4})  # warm-up
        _sync(target)
        started, cpu = time.perf_counter(), time.process_time()
        out = model.generate(input_ids=ids, attention_mask=mask, **options)
        _sync(target)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    tokens, texts = 0, []
    for row in out[:, width:].tolist():
        stop = next((k for k, t in enumerate(row) if t in stops), None)
        tokens += len(row) if stop is None else stop + 1
        texts.append(tokenizer.decode(row[:stop], skip_special_tokens=True))
    del model, out
    _free(target)
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


def _gemm_gflops_cold(m: int, k: int, n: int, dtype: Any, working_set: int, seconds: float = 2.0) -> float:
    """Like `_gemm_gflops`, but each product uses the next of enough distinct weights to make
    `working_set` bytes, as a decode step streams the whole model's weights through the cache
    once per step (a product on one weight finds it cache-hot)."""
    import torch

    x = torch.randn(m, k, dtype=dtype)
    weights = [torch.randn(n, k, dtype=dtype) for _ in range(max(1, working_set // (n * k * x.element_size())))]
    for w in weights:
        torch.nn.functional.linear(x, w)
    calls, started, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - started < seconds:
        torch.nn.functional.linear(x, weights[calls % len(weights)])
        calls += 1
    return round(2 * m * k * n * calls / (time.process_time() - cpu) / 1e9, 1)


def _gemm_gflops_cuda(m: int, k: int, n: int, dtype: Any, device: str = "cuda", seconds: float = 1.0,
                      calls_per_timing: int = 200, graph: bool = False) -> float | None:
    """Sustained GFLOP/s of [m x k] x [k x n] products (x @ W^T, as nn.Linear) on a GPU: bunches
    of `calls_per_timing` back-to-back products between CUDA events, for about `seconds` of GPU
    time. Launched one by one from Python (what eager PyTorch, and so the engine, gets: small
    products can be launch-bound), or with `graph`, replayed from a CUDA graph (the GPU's own
    time per product; None if the graph cannot be captured)."""
    import torch

    x = torch.randn(m, k, dtype=dtype, device=device)
    w = torch.randn(n, k, dtype=dtype, device=device)
    side = torch.cuda.Stream(device=device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):  # warm-up off the default stream, as graph capture wants
        for _ in range(20):
            torch.nn.functional.linear(x, w)
    torch.cuda.current_stream(device).wait_stream(side)
    torch.cuda.synchronize(device)

    def run() -> None:
        for _ in range(calls_per_timing):
            torch.nn.functional.linear(x, w)

    if graph:
        try:
            captured = torch.cuda.CUDAGraph()
            with torch.cuda.graph(captured):
                run()
        except Exception as exc:  # a stricter bound beside the main one: report, never fail on it
            print(f"CUDA graph capture of the {m}x{k}x{n} product failed: {exc}", flush=True)
            return None
        run = captured.replay
        run()
    torch.cuda.synchronize(device)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    calls, elapsed_ms = 0, 0.0
    while elapsed_ms < seconds * 1000:
        start.record()
        run()
        end.record()
        end.synchronize()
        elapsed_ms += start.elapsed_time(end)
        calls += calls_per_timing
    return round(2 * m * k * n * calls / (elapsed_ms / 1000) / 1e9, 1)


def matrix_parameters(target: Target = CPU) -> int:
    """SmolLM2's parameters that take part in matrix products per token (LM head included)."""
    from character.models import resolve_model
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(str(resolve_model(target.model)))
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    attention = c.hidden_size * head_dim * (2 * c.num_attention_heads + 2 * c.num_key_value_heads)
    mlp = 3 * c.hidden_size * c.intermediate_size
    return int(c.num_hidden_layers * (attention + mlp) + c.hidden_size * c.vocab_size)


def machine_limits(batch: int, train_tokens: int, target: Target = CPU) -> dict[str, Any]:
    """GEMM throughput of the decode and training shapes on this machine (on the GPU in bf16
    for a CUDA target), and the bounds in tokens/s they set (see the module docstring)."""
    import torch
    from character.models import resolve_model
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(str(resolve_model(target.model)))
    gemm: dict[str, dict[str, Any]] = {}
    graph: dict[str, Any] = {}
    if target.cuda:
        shapes = {"decode": batch, "training": train_tokens}
        gemm["bf16"] = {name: _gemm_gflops_cuda(m, c.hidden_size, c.intermediate_size, torch.bfloat16, target.device)
                        for name, m in shapes.items()}
        graph = {name: _gemm_gflops_cuda(m, c.hidden_size, c.intermediate_size, torch.bfloat16, target.device,
                                         graph=True) for name, m in shapes.items()}
    else:
        flags = _cpu_flags()
        dtypes = {"fp32": torch.float32}
        if {"avx512_bf16", "amx_bf16"} & flags:
            dtypes["bf16"] = torch.bfloat16
        for name, dtype in dtypes.items():
            gemm[name] = {
                "decode": _gemm_gflops(batch, c.hidden_size, c.intermediate_size, dtype),
                "training": _gemm_gflops(train_tokens, c.hidden_size, c.intermediate_size, dtype),
            }
    n = matrix_parameters(target)
    if not target.cuda:
        gemm["fp32"]["decode_cold"] = _gemm_gflops_cold(batch, c.hidden_size, c.intermediate_size, torch.float32,
                                                        working_set=4 * n)
    rate = gemm[target.bound_dtype]
    bounds = {
        "generation": round(rate["decode"] * 1e9 / (2 * n), 1),
        "sft": round(rate["training"] * 1e9 / (4 * n), 1),
        "dpo": round(rate["training"] * 1e9 / (6 * n), 1),
    }
    if not target.cuda and "bf16" in gemm:
        bounds["generation_bf16"] = round(gemm["bf16"]["decode"] * 1e9 / (2 * n), 1)
    limits = {"matrix_parameters": n, "decode_shape": [batch, c.hidden_size, c.intermediate_size],
              "training_shape": [train_tokens, c.hidden_size, c.intermediate_size],
              "gemm_gflops": gemm, "bound_dtype": target.bound_dtype, "bounds": bounds,
              "threads": torch.get_num_threads()}
    if graph:  # the GPU's own rate, without Python's launches: a stricter bound, reported beside
        limits["gemm_gflops_cuda_graph"] = graph
        if graph["decode"]:
            bounds["generation_cuda_graph"] = round(graph["decode"] * 1e9 / (2 * n), 1)
    return limits


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


def train_worker(kind: str, steps: int, model: str = "smollm2") -> dict[str, Any]:
    """Train `steps` steps of DPO or SFT on SmolLM2 through the stages' own code; runs in a
    fresh process so its peak memory is its own. On a GPU (when the process sees one) the
    trainers pick it themselves: bf16, gradient checkpointing on."""
    from character.pipeline.engines import LocalEngines
    from character.pipeline.spec import RunSpec
    from character.pipeline.stage import StageContext
    from character.stages import dpo, sft
    from character.store import LocalStore
    from character.training import lora_trainer

    rows = _training_rows(steps * TRAIN_CONFIG["global_batch"])
    with tempfile.TemporaryDirectory(prefix="oct-bench-") as tmp:
        store = LocalStore(Path(tmp) / "store")
        spec = RunSpec(constitution="sarcasm", model=model, store=store.uri)
        ctx = StageContext(run_id="bench", spec=spec, constitution=spec.persona, store=store,
                           engines=LocalEngines(store), key=f"bench-{kind}", inputs={},
                           workdir=Path(tmp) / "work")
        settings = {**TRAIN_CONFIG, "per_device_batch": PER_DEVICE[kind], "max_steps": steps}
        if kind == "dpo":
            trainer = dpo.build_trainer(ctx, dpo.Config.for_scale("demo", settings), rows)
        else:
            config = sft.Config.for_scale("demo", settings)
            device = lora_trainer.pick_device(config.gradient_checkpointing)
            model_, tokenizer = lora_trainer.load_student(ctx, device)
            messages = [{"messages": [{"role": "user", "content": r["prompt"]},
                                      {"role": "assistant", "content": r["chosen"]}]} for r in rows]
            trainer = sft.build_trainer(ctx, config, messages, model_, tokenizer, device)
        cpu = time.process_time()
        metrics = lora_trainer.training_metrics(trainer, lora_trainer.train(trainer, ctx, task=f"bench {kind}"))
        cpu = time.process_time() - cpu
        checkpointing = bool(getattr(trainer.args, "gradient_checkpointing", False))
    keep = ("steps", "train_tokens", "train_seconds", "tokens_per_second", "peak_rss_mb", "peak_gpu_mb")
    return {k: metrics[k] for k in keep if k in metrics} | {
        "tokens_per_cpu_second": round(metrics["train_tokens"] / cpu, 1), "gradient_checkpointing": checkpointing}


def bare_train_worker(kind: str, steps: int, model_ref: str = "smollm2", device: str = "cpu") -> dict[str, Any]:
    """The peer: the same sequences and LoRA through a bare PyTorch loop (AdamW, one optimizer
    step per pass of two sequences; DPO's reference is the model with the adapter off); fp32 on
    a CPU, bf16 weights on a GPU (as the trainers), no gradient checkpointing."""
    import torch
    from character.models import resolve_model
    from character.models.loading import load_model
    from character.stages import dpo
    from character.training import lora_trainer
    from peft import get_peft_model

    target = Target(model=model_ref, device=device)
    config = dpo.Config.for_scale("demo", {**TRAIN_CONFIG, "per_device_batch": PER_DEVICE[kind]})
    dtype = torch.bfloat16 if target.cuda else torch.float32
    model, tokenizer = load_model(resolve_model(model_ref), device, dtype, shared=False)
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
    _sync(target)
    tokens, started, cpu = 0, time.perf_counter(), time.process_time()
    for batch in passes:
        width = max(len(ids) for ids, _ in batch)
        ids = torch.tensor([ids + [tokenizer.pad_token_id] * (width - len(ids)) for ids, _ in batch], device=device)
        mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in batch], device=device)
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
    _sync(target)
    return {"passes": len(passes)} | _speed(tokens, time.perf_counter() - started, time.process_time() - cpu)


def _worker(flag: str, kind: str, steps: int, target: Target = CPU) -> dict[str, Any]:
    command = [sys.executable, __file__, flag, kind, "--steps", str(steps), "--worker-model", target.model,
               "--device", target.device]
    env = dict(os.environ)
    if not target.cuda:
        env["CUDA_VISIBLE_DEVICES"] = ""  # the trainers take a GPU whenever they see one
    proc = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"the {kind} worker ({flag}) failed:\n{proc.stderr[-4000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def bench_training(steps: int, limits: dict[str, Any], target: Target = CPU) -> dict[str, Any]:
    out: dict[str, Any] = {"speed": target.speed_key}
    for kind in ("dpo", "sft"):
        out[kind] = _worker("--train-worker", kind, steps, target)
        bare = _worker("--bare-train-worker", kind, 2 * steps, target)
        bound, speed = limits["bounds"][kind], out[kind][target.speed_key]
        out[kind] |= {"bound_tokens_per_second": bound,
                      "fraction_of_bound": round(speed / bound, 3),
                      "bare_step_tokens_per_second": bare[target.speed_key],
                      "over_bare_step": round(speed / bare[target.speed_key], 2)}
        if not target.cuda:  # the name the CPU figures have always had
            out[kind]["bare_step_tokens_per_cpu_second"] = out[kind].pop("bare_step_tokens_per_second")
    # On a GPU the model lives in GPU memory: compare there; on a CPU, resident memory.
    peak = "peak_gpu_mb" if "peak_gpu_mb" in out["dpo"] else "peak_rss_mb"
    ratio = out["dpo"][peak] / out["sft"][peak]
    out["compared"] = peak
    out["dpo_over_sft_peak"] = round(ratio, 2)
    out["target"] = f"DPO peak <= {MEMORY_TARGET}x SFT peak"
    out["target_met"] = ratio <= MEMORY_TARGET
    return out


def training_skip_reason(target: Target) -> str | None:
    """Why the training figures cannot run here (None when they can): the trainers need trl and
    datasets, which a bare GPU machine may lack."""
    import importlib.util

    missing = [m for m in ("trl", "datasets", "peft") if importlib.util.find_spec(m) is None]
    if missing:
        return f"training figures skipped: {', '.join(missing)} not installed ({target.device})"
    return None


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
    where = " (GPU)" if limits.get("bound_dtype") == "bf16" and "fp32" not in limits["gemm_gflops"] else ""
    for dtype, shapes in limits["gemm_gflops"].items():
        rows.append((f"GEMM {dtype}{where}, decode shape {'x'.join(map(str, limits['decode_shape']))}",
                     f"{shapes['decode']} GFLOP/s", ""))
        rows.append((f"GEMM {dtype}{where}, training shape {'x'.join(map(str, limits['training_shape']))}",
                     f"{shapes['training']} GFLOP/s", ""))
        if "decode_cold" in shapes:
            rows.append((f"GEMM {dtype}, decode shape, weights streamed (the model's size, cycled)",
                         f"{shapes['decode_cold']} GFLOP/s", ""))
    for shape, rate in limits.get("gemm_gflops_cuda_graph", {}).items():
        rows.append((f"GEMM bf16 (GPU, CUDA graph), {shape} shape", f"{rate} GFLOP/s", ""))
    return rows


def _unit(speed: str) -> str:
    return "tok/s" if speed == "tokens_per_second" else "tok/CPU-s"


def generation_rows(gen: dict[str, Any], bound_dtype: str = "fp32") -> list[tuple[str, str, str]]:
    b, key = gen["batched"], gen.get("speed", "tokens_per_cpu_second")
    unit = _unit(key)
    first = (f"{b['tokens_per_cpu_second']} tok/CPU-s ({b['tokens_per_second']} tok/s wall)"
             if key == "tokens_per_cpu_second" else f"{b['tokens_per_second']} tok/s (wall, GPU synchronised)")
    rows = [(f"generation, batched x{gen['prompts']}", first, ""),
            (f"  bound ({bound_dtype} decode GEMM / 2N)", f"{gen['bound_tokens_per_second']} {unit}", ""),
            ("  fraction of bound", f"{gen['fraction_of_bound']}",
             f"{gen['fraction_target']}: {_met(gen['fraction_target_met'])}")]
    if "work_bound" in gen:
        work = gen["work_bound"]
        rows.append(("  work bound: its products (prefill counted) at the training / streamed decode rates",
                     f"{work['seconds_at_those_rates']} s of {b['cpu_seconds']} CPU-s", ""))
        rows.append(("  fraction of the work bound", f"{work['fraction']}", ""))
    if "cuda_graph_bound_tokens_per_second" in gen:
        rows.append((f"  stricter bound ({bound_dtype} decode GEMM from a CUDA graph / 2N)",
                     f"{gen['cuda_graph_bound_tokens_per_second']} {unit}", ""))
        rows.append(("  fraction of the stricter bound", f"{gen['fraction_of_cuda_graph_bound']}", ""))
    rows += [("  bare model.generate (peer)", f"{gen['bare_generate'][key]} {unit}", ""),
             ("  engine / bare generate", f"{gen['over_bare_generate']}x", ""),
             ("  answers identical to bare generate", gen["same_as_bare_generate"], "")]
    if "all_answers_ran_max_new_tokens" in gen:
        rows.append(("  every answer ran max_new_tokens", str(gen["all_answers_ran_max_new_tokens"]), ""))
    return rows


def bench_table(figures: dict[str, Any]) -> str:
    gen, limits = figures["generation"], figures["limits"]
    key = gen.get("speed", "tokens_per_cpu_second")
    unit = _unit(key)
    bound_dtype = limits.get("bound_dtype", "fp32")
    rows = [("figure", "value", "target"), *limits_rows(limits), *generation_rows(gen, bound_dtype),
            ("generation, one prompt at a time", f"{gen['one_at_a_time'][key]} {unit}", ""),
            ("generation speedup", f"{gen['speedup']}x", f"{gen['target']}: {_met(gen['target_met'])}")]
    if "bf16" in gen:
        bf16 = gen["bf16"]
        rows.append((f"generation, batched x{gen['prompts']}, bf16 weights",
                     f"{bf16[key]} {unit} ({bf16['over_fp32']}x fp32)",
                     f"answers identical to fp32 bare generate {bf16['same_as_fp32']}"))
    shared = figures["shared_prefix"]
    if "failed" in shared:
        rows.append(("constitution system prompt (shared prefix)", "FAILED", shared["failed"].splitlines()[-1][:100]))
    else:
        for label in ("full_prompts", "shared_prefix"):
            rows.append((f"constitution system prompt x{shared['prompts']}, {label.replace('_', ' ')}",
                         f"{shared[label]['seconds']} s", ""))
        rows.append(("shared-prefix speedup", f"{shared['speedup']}x", f"same answers {shared['same_answers']}"))
    train = figures["training"]
    if "skipped" in train or "failed" in train:
        status = "skipped" if "skipped" in train else "FAILED"
        rows.append(("DPO / SFT training", status, str(train.get("skipped") or train["failed"]).splitlines()[-1][:100]))
        return _table(rows)
    for kind in ("dpo", "sft"):
        t = train[kind]
        flops = "6N" if kind == "dpo" else "4N"
        speed = (f"{t['tokens_per_cpu_second']} tok/CPU-s ({t['tokens_per_second']} tok/s wall)"
                 if key == "tokens_per_cpu_second" else f"{t['tokens_per_second']} tok/s (wall)")
        bare = t.get("bare_step_tokens_per_cpu_second", t.get("bare_step_tokens_per_second"))
        checkpointing = ", gradient checkpointing" if t.get("gradient_checkpointing") else ""
        rows.append((f"{kind.upper()} training ({t['steps']} steps{checkpointing})", speed, ""))
        rows.append((f"  bound ({bound_dtype} training GEMM / {flops})", f"{t['bound_tokens_per_second']} {unit}", ""))
        rows.append(("  fraction of bound", f"{t['fraction_of_bound']}", ""))
        rows.append(("  bare training step (peer)", f"{bare} {unit}", ""))
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
              f"({gen['batched'][key]} / {gen['bound_tokens_per_second']} {unit}){work}")
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
        print(_table([header, *limits_rows(limits), *generation_rows(figures["generation"], limits["bound_dtype"])]))
    else:
        print(bench_table(figures))
    return figures


if __name__ == "__main__":
    main()
