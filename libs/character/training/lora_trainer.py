"""What the DPO and SFT stages share: the LoRA config, per-device precision and memory
choices, trainer arguments, progress forwarding, checkpoint mirroring and resume, adapter
saving and the training metrics.

Resume across machines: every checkpoint the trainer writes under the stage's work folder is
also stored as artifact ("checkpoint", f"{key}-step{N}") and the record
f"checkpoints/{key}" names the latest one. A restarted stage (same key, any machine) restores
the newest checkpoint, local or stored, and hands it to `resume_from_checkpoint`, which
restores the weights, optimizer, scheduler, data position and RNG states.

Imports torch/transformers at module level: import it only inside a stage's `run`.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from character.errors import InvalidInput
from character.pipeline.stage import StageContext
from character.progress import Progress, ProgressEvent
from character.store.base import ArtifactRef, Store
from character.training.config import TrainingConfig

CHECKPOINT_KIND = "checkpoint"
_CHECKPOINT_DIR = re.compile(r"checkpoint-(\d+)")


# ----------------------------------------------------------------------------- device and model
@dataclass(frozen=True)
class Device:
    """Where training runs and the precision and memory choices that follow from it."""

    kind: str
    """"cuda" or "cpu"."""
    dtype: torch.dtype
    """Weights dtype: bf16 on GPUs that support it (reference), fp32 elsewhere."""
    bf16: bool
    """Mixed bf16 compute (the trainers' `bf16` flag)."""
    gradient_checkpointing: bool
    """Recompute activations in the backward pass (less memory, more compute)."""


def pick_device(gradient_checkpointing: bool | None = None) -> Device:
    """A GPU when there is one (bf16 where supported, gradient checkpointing on), else the CPU
    (fp32, checkpointing off: on CPUs it costs ~1.7x and saves little). A non-None
    `gradient_checkpointing` overrides the choice."""
    if torch.cuda.is_available():
        bf16 = torch.cuda.is_bf16_supported()
        gc = True if gradient_checkpointing is None else gradient_checkpointing
        return Device("cuda", torch.bfloat16 if bf16 else torch.float32, bf16, gc)
    return Device("cpu", torch.float32, False, bool(gradient_checkpointing))


def load_student(ctx: StageContext, device: Device) -> tuple[PreTrainedModel, Any]:
    """A private, trainable copy of the run's student (model, tokenizer) on `device`."""
    from character.models.loading import load_model

    return load_model(ctx.spec.model, device.kind, device.dtype, shared=False, progress=ctx.progress)


def check_lora_rank(stage: str, config: TrainingConfig, model: PreTrainedModel) -> None:
    """Refuse a LoRA rank above the model's hidden size before any training starts."""
    hidden = model.config.get_text_config().hidden_size
    if config.lora_rank > hidden:
        raise InvalidInput(
            f"LoRA rank {config.lora_rank} exceeds the model's hidden size {hidden}; use at most {hidden}",
            where=f"stages.{stage}.lora_rank",
        )


def lora_config(config: TrainingConfig) -> Any:
    """A peft LoraConfig on every linear layer but the output head."""
    from peft import LoraConfig

    return LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )


# ----------------------------------------------------------------------------- trainer arguments
def trainer_arguments(
    args_class: type[Any],
    stage: str,
    config: TrainingConfig,
    *,
    output_dir: Path,
    seed: int,
    device: Device,
    **specific: Any,
) -> Any:
    """Arguments for a trl trainer (`DPOConfig`, `SFTConfig`) from the shared settings plus the
    trainer-specific ones in `specific`."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    per_step = config.per_device_batch * world_size
    if config.global_batch % per_step:
        raise InvalidInput(
            f"{config.global_batch} is not a multiple of per_device_batch {config.per_device_batch} x "
            f"{world_size} devices",
            where=f"stages.{stage}.global_batch",
        )
    return args_class(
        output_dir=str(output_dir),
        learning_rate=config.lr,
        adam_beta2=config.adam_beta2,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        per_device_train_batch_size=config.per_device_batch,
        gradient_accumulation_steps=config.global_batch // per_step,
        lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr_rate": config.min_lr_ratio},
        warmup_steps=config.warmup_ratio,  # below 1: a share of the total steps (transformers 5)
        max_length=config.max_length,
        bf16=device.bf16,
        use_cpu=device.kind == "cpu",
        activation_checkpointing=device.gradient_checkpointing,  # transformers 5: gradient checkpointing
        seed=seed,
        data_seed=seed,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.keep_checkpoints,
        logging_steps=1,
        # kept in the trainer state, so it survives a resume (trl's own num_tokens restarts at 0)
        include_num_input_tokens_seen="non_padding",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        **specific,
    )


# ----------------------------------------------------------------------------- callbacks
class ForwardProgress(TrainerCallback):
    """Sends each logged training step to a `Progress` callback, with its loss."""

    def __init__(self, progress: Progress, task: str):
        self.progress = progress
        self.task = task

    def on_log(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
        logs: dict[str, float] | None = None, **kwargs: Any,
    ) -> None:
        if logs and "loss" in logs:
            message = f"loss {logs['loss']:.4f}"
            if "rewards/accuracies" in logs:
                message += f", reward accuracy {logs['rewards/accuracies']:.2f}"
            self.progress(ProgressEvent(self.task, state.global_step, state.max_steps or None, message))


class MirrorCheckpoints(TrainerCallback):
    """Copies every checkpoint the trainer saves into the store (main process only)."""

    def __init__(self, store: Store, key: str):
        self.store = store
        self.key = key

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if not state.is_world_process_zero:
            return
        step = state.global_step
        folder = Path(str(args.output_dir)) / f"checkpoint-{step}"
        self.store.put_dir(CHECKPOINT_KIND, checkpoint_key(self.key, step), folder, meta={"step": step})
        self.store.put_record(_latest_record(self.key), {"step": step})


def checkpoint_key(key: str, step: int) -> str:
    return f"{key}-step{step}"


def _latest_record(key: str) -> str:
    return f"checkpoints/{key}"


def restore_checkpoint(store: Store, key: str, output_dir: Path) -> Path | None:
    """The newest complete checkpoint of stage `key`, local or stored (copied into
    `output_dir` when only the store has it), or None to start from scratch."""
    local = {
        int(m.group(1)): p
        for p in output_dir.glob("checkpoint-*")
        if (m := _CHECKPOINT_DIR.fullmatch(p.name)) and _complete(p)
    }
    record = store.get_record(_latest_record(key))
    stored = int(record["step"]) if record else -1
    if stored > max(local, default=-1) and store.has(CHECKPOINT_KIND, checkpoint_key(key, stored)):
        source = store.materialize(CHECKPOINT_KIND, checkpoint_key(key, stored))
        target = output_dir / f"checkpoint-{stored}"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target)
        return target
    return local[max(local)] if local else None


def _complete(folder: Path) -> bool:
    """The trainer writes trainer_state.json last: a checkpoint without a readable one was cut short."""
    try:
        json.loads((folder / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    return True


# ----------------------------------------------------------------------------- running and results
@dataclass(frozen=True)
class TrainingRun:
    """What `train` did in this process."""

    seconds: float
    """Wall seconds of `trainer.train()`."""
    resumed_step: int
    """The step of the checkpoint it resumed from; 0 when it started afresh."""


def train(trainer: Any, ctx: StageContext, task: str) -> TrainingRun:
    """Run `trainer` with progress forwarding and checkpoint mirroring, resuming from the newest
    checkpoint of this stage."""
    for quiet in (PrinterCallback, ProgressCallback):  # progress goes through ctx.progress only
        trainer.remove_callback(quiet)
    trainer.add_callback(ForwardProgress(ctx.progress, task))
    trainer.add_callback(MirrorCheckpoints(ctx.store, ctx.key))
    resume = restore_checkpoint(ctx.store, ctx.key, Path(trainer.args.output_dir))
    if resume is not None:
        ctx.progress(ProgressEvent(task, 0, None, f"resuming from {resume.name}"))
        if _is_last(resume):
            _take_checkpoint(trainer, resume)
            return TrainingRun(seconds=0.0, resumed_step=_checkpoint_step(resume))
    started = time.monotonic()
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    return TrainingRun(seconds=time.monotonic() - started, resumed_step=_checkpoint_step(resume) if resume else 0)


def _is_last(checkpoint: Path) -> bool:
    """Whether `checkpoint` holds the run's last step. (transformers, resumed there in the middle
    of an epoch, would train one step more before it checks.)"""
    state = TrainerState.load_from_json(str(checkpoint / "trainer_state.json"))
    return state.global_step >= state.max_steps


def _take_checkpoint(trainer: Any, checkpoint: Path) -> None:
    """Give `trainer` the checkpoint's adapter weights and trainer state, as training would."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(trainer.model, load_file(checkpoint / "adapter_model.safetensors"))
    trainer.state = TrainerState.load_from_json(str(checkpoint / "trainer_state.json"))


def _checkpoint_step(folder: Path) -> int:
    match = _CHECKPOINT_DIR.fullmatch(folder.name)
    assert match, folder  # restore_checkpoint returns checkpoint-<step> folders only
    return int(match.group(1))


def save_adapter(ctx: StageContext, model: Any, meta: dict[str, Any]) -> ArtifactRef:
    """Store the trained LoRA adapter (a PEFT folder) as artifact ("adapter", ctx.key)."""
    with tempfile.TemporaryDirectory(prefix="oct-adapter-") as tmp:
        model.save_pretrained(tmp)
        return ctx.store.put_dir("adapter", ctx.key, Path(tmp), meta=meta)


def training_metrics(trainer: Any, run: TrainingRun) -> dict[str, Any]:
    """Loss, steps and tokens of the whole run (a resumed run's log history includes the steps
    before the resume); throughput of the steps trained in this process (None if it trained
    none), and this process's peak memory. tokens: non-padding tokens through the model."""
    logged = [h for h in trainer.state.log_history if "loss" in h]
    tokens = int(trainer.state.num_input_tokens_seen)
    tokens_before = max((int(h.get("num_input_tokens_seen", 0)) for h in logged if h["step"] <= run.resumed_step),
                        default=0)
    trained_here = tokens - tokens_before
    return {
        "loss": mean_logged(trainer, "loss"),
        "loss_last": round(float(logged[-1]["loss"]), 6) if logged else None,
        "steps": trainer.state.global_step,
        "resumed_step": run.resumed_step,
        "train_tokens": tokens,
        "tokens_per_second": round(trained_here / run.seconds, 1) if trained_here and run.seconds > 0 else None,
        "train_seconds": round(run.seconds, 2),
        **peak_memory(),
    }


def peak_memory() -> dict[str, float]:
    """This process's peak resident memory so far (and peak GPU memory when on a GPU), in MiB.
    Linux's VmHWM where there is one: getrusage's ru_maxrss survives exec, so a worker started
    by a big parent would report the parent's peak."""
    try:
        status = Path("/proc/self/status").read_text()
        peak_kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
    except (OSError, StopIteration, ValueError, IndexError):
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {"peak_rss_mb": round(peak_kb / 1024, 1)}
    if torch.cuda.is_available():
        out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def mean_logged(trainer: Any, name: str) -> float | None:
    """The mean of a per-step training metric over the run (e.g. "rewards/accuracies")."""
    values = [h[name] for h in trainer.state.log_history if name in h]
    return round(sum(values) / len(values), 6) if values else None
