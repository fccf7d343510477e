"""The training bench: DPO and SFT through the stages' own trainers and a bare PyTorch LoRA
step on the same sequences, each in its own subprocess (run_bench.py's hidden worker flags) so
that their peak memories do not mix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_target import CPU, Target, chat_prompts, speed_of, sync

MEMORY_TARGET = 1.3
# Demo-scale training (LoRA rank 8), two sequences per forward pass for both trainers so that
# their peak memories differ only by what DPO adds: one pair (chosen + rejected) a pass for
# DPO, two conversations for SFT; two passes a step.
TRAIN_CONFIG = {"global_batch": 2, "max_length": 512, "lora_rank": 8, "lora_alpha": 16, "save_steps": 10_000}
PER_DEVICE = {"dpo": 1, "sft": 2}
ANSWER_SENTENCE = "Here is one more careful point about {topic}, explained plainly and with an example. "
WORKER_SCRIPT = Path(__file__).with_name("run_bench.py")
"""Where the worker flags are parsed: the bench's command line."""


def _training_rows(n: int) -> list[dict[str, Any]]:
    """Preference pairs on real prompts with ~80-token answers (a short demo answer's length)."""
    rows = []
    for p in chat_prompts(n):
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
    sync(target)
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
    sync(target)
    return {"passes": len(passes)} | speed_of(tokens, time.perf_counter() - started, time.process_time() - cpu)


def _worker(flag: str, kind: str, steps: int, target: Target = CPU) -> dict[str, Any]:
    command = [sys.executable, str(WORKER_SCRIPT), flag, kind, "--steps", str(steps), "--worker-model", target.model,
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
