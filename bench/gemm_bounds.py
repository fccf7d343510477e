"""The machine's limit: sustained GEMM throughput of the decode step's and a training pass's
shapes (on a CPU per CPU-second, fp32 and bf16 where the CPU has it; on a GPU bf16, timed with
CUDA events, launched eagerly and from a CUDA graph), and the bounds in tokens/s they set (see
run_bench.py's docstring)."""

from __future__ import annotations

import time
from typing import Any

from bench_target import CPU, Target


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
        dtypes = {"fp32": torch.float32}
        if target.opt_in_bf16:
            dtypes["bf16"] = torch.bfloat16
        for name, dtype in dtypes.items():
            gemm[name] = {
                "decode": _gemm_gflops(batch, c.hidden_size, c.intermediate_size, dtype),
                "training": _gemm_gflops(train_tokens, c.hidden_size, c.intermediate_size, dtype),
            }
    n = matrix_parameters(target)
    if not target.cuda:  # the engine's products stream its weights, in its default precision
        dtype = target.torch_dtype
        gemm[target.engine_dtype]["decode_cold"] = _gemm_gflops_cold(
            batch, c.hidden_size, c.intermediate_size, dtype, working_set=dtype.itemsize * n)
    decode, training = gemm[target.engine_dtype], gemm[target.train_dtype]
    bounds = {
        "generation": round(decode["decode"] * 1e9 / (2 * n), 1),
        "sft": round(training["training"] * 1e9 / (4 * n), 1),
        "dpo": round(training["training"] * 1e9 / (6 * n), 1),
    }
    limits = {"matrix_parameters": n, "decode_shape": [batch, c.hidden_size, c.intermediate_size],
              "training_shape": [train_tokens, c.hidden_size, c.intermediate_size], "gemm_gflops": gemm,
              "generation_dtype": target.engine_dtype, "training_dtype": target.train_dtype, "bounds": bounds,
              "threads": torch.get_num_threads()}
    if graph:  # the GPU's own rate, without Python's launches: a stricter bound, reported beside
        limits["gemm_gflops_cuda_graph"] = graph
        if graph["decode"]:
            bounds["generation_cuda_graph"] = round(graph["decode"] * 1e9 / (2 * n), 1)
    return limits
