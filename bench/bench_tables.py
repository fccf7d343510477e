"""The bench's figures as text tables (stdout)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def limits_rows(limits: dict[str, Any]) -> list[tuple[str, str, str]]:
    rows = []
    where = "" if "fp32" in limits["gemm_gflops"] else " (GPU)"
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


def generation_rows(gen: dict[str, Any], dtype: str) -> list[tuple[str, str, str]]:
    """The engine at its default precision (`dtype`) against its bound and bare `generate`."""
    b, key = gen["batched"], gen.get("speed", "tokens_per_cpu_second")
    unit = _unit(key)
    first = (f"{b['tokens_per_cpu_second']} tok/CPU-s ({b['tokens_per_second']} tok/s wall)"
             if key == "tokens_per_cpu_second" else f"{b['tokens_per_second']} tok/s (wall, GPU synchronised)")
    rows = [(f"generation, batched x{gen['prompts']}, {dtype} weights (the default)", first, ""),
            (f"  bound ({dtype} decode GEMM / 2N)", f"{gen['bound_tokens_per_second']} {unit}", ""),
            ("  fraction of bound", f"{gen['fraction_of_bound']}",
             f"{gen['fraction_target']}: {_met(gen['fraction_target_met'])}")]
    if "work_bound" in gen:
        work = gen["work_bound"]
        rows.append(("  work bound: its products (prefill counted) at the training / streamed decode rates",
                     f"{work['seconds_at_those_rates']} s of {b['cpu_seconds']} CPU-s", ""))
        rows.append(("  fraction of the work bound", f"{work['fraction']}", ""))
    if "cuda_graph_bound_tokens_per_second" in gen:
        rows.append((f"  stricter bound ({dtype} decode GEMM from a CUDA graph / 2N)",
                     f"{gen['cuda_graph_bound_tokens_per_second']} {unit}", ""))
        rows.append(("  fraction of the stricter bound", f"{gen['fraction_of_cuda_graph_bound']}", ""))
    rows += [(f"  bare model.generate (peer), {dtype}", f"{gen['bare_generate'][key]} {unit}", ""),
             ("  engine / bare generate", f"{gen['over_bare_generate']}x", ""),
             ("  answers identical to bare generate", gen["same_as_bare_generate"], "")]
    if "all_answers_ran_max_new_tokens" in gen:
        rows.append(("  every answer ran max_new_tokens", str(gen["all_answers_ran_max_new_tokens"]), ""))
    return rows


def bench_table(figures: dict[str, Any]) -> str:
    gen, limits = figures["generation"], figures["limits"]
    key = gen.get("speed", "tokens_per_cpu_second")
    unit = _unit(key)
    rows = [("figure", "value", "target"), *limits_rows(limits), *generation_rows(gen, limits["generation_dtype"]),
            ("generation, one prompt at a time", f"{gen['one_at_a_time'][key]} {unit}", ""),
            ("generation speedup", f"{gen['speedup']}x", f"{gen['target']}: {_met(gen['target_met'])}")]
    if "bf16" in gen:
        bf16 = gen["bf16"]
        rows.append((f"generation, batched x{gen['prompts']}, bf16 weights (--dtype bfloat16)",
                     f"{bf16[key]} {unit} ({bf16['over_default']}x the default)",
                     f"answers identical to the default's {bf16['same_as_default']}"))
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
        return table(rows)
    for kind in ("dpo", "sft"):
        t = train[kind]
        flops = "6N" if kind == "dpo" else "4N"
        speed = (f"{t['tokens_per_cpu_second']} tok/CPU-s ({t['tokens_per_second']} tok/s wall)"
                 if key == "tokens_per_cpu_second" else f"{t['tokens_per_second']} tok/s (wall)")
        bare = t.get("bare_step_tokens_per_cpu_second", t.get("bare_step_tokens_per_second"))
        checkpointing = ", gradient checkpointing" if t.get("gradient_checkpointing") else ""
        rows.append((f"{kind.upper()} training ({t['steps']} steps{checkpointing})", speed, ""))
        rows.append((f"  bound ({limits['training_dtype']} training GEMM / {flops})",
                     f"{t['bound_tokens_per_second']} {unit}", ""))
        rows.append(("  fraction of bound", f"{t['fraction_of_bound']}", ""))
        rows.append(("  bare training step (peer)", f"{bare} {unit}", ""))
        rows.append(("  trainer / bare step", f"{t['over_bare_step']}x", ""))
        rows.append((f"{kind.upper()} peak RSS", f"{t['peak_rss_mb']} MiB", ""))
        if "peak_gpu_mb" in t:
            rows.append((f"{kind.upper()} peak GPU memory", f"{t['peak_gpu_mb']} MiB", ""))
    rows.append(("DPO / SFT peak memory", f"{train['dpo_over_sft_peak']}x",
                 f"{train['target']}: {_met(train['target_met'])}"))
    return table(rows)


def timings_table(timings: dict[str, Any]) -> str:
    rows = [("stage", "key", "wall seconds")]
    rows += [(r["stage"], r["key"], str(r["wall_seconds"])) for r in timings["stages"]]
    rows.append(("total", "", str(timings["total_seconds"])))
    return table(rows)
