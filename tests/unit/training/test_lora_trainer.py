"""Shared training helpers: device choices, trainer arguments from a stage config, progress
forwarding, and which checkpoint a restarted stage resumes from (local or stored)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from character.errors import InvalidInput
from character.progress import ProgressEvent
from character.stages import dpo
from character.store import LocalStore
from character.training.lora_trainer import (
    CHECKPOINT_KIND,
    ForwardProgress,
    MirrorCheckpoints,
    checkpoint_key,
    lora_config,
    pick_device,
    restore_checkpoint,
    trainer_arguments,
)
from transformers import TrainerControl, TrainerState, TrainingArguments
from trl import DPOConfig

KEY = "a" * 64


def test_cpu_device_is_fp32_without_gradient_checkpointing() -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    device = pick_device()
    assert (device.kind, device.dtype, device.bf16, device.gradient_checkpointing) == (
        "cpu", torch.float32, False, False)
    assert pick_device(True).gradient_checkpointing


def test_trainer_arguments_follow_the_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = dpo.Config.for_scale("full")
    args = trainer_arguments(DPOConfig, "dpo", config, output_dir=tmp_path, seed=7, device=pick_device(),
                             beta=config.beta)
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (4, 8)  # 32 pairs a step
    assert args.lr_scheduler_type == "cosine_with_min_lr" and args.lr_scheduler_kwargs == {"min_lr_rate": 0.1}
    assert (args.learning_rate, args.warmup_steps) == (5e-5, 0.1)
    assert (args.num_train_epochs, args.max_steps) == (1.0, -1)
    assert (args.seed, args.data_seed, args.beta, args.max_length) == (7, 7, 0.1, 1024)
    assert args.save_steps == config.save_steps and args.report_to == []

    monkeypatch.setenv("WORLD_SIZE", "3")  # 32 pairs cannot split over 3 devices x 4
    with pytest.raises(InvalidInput, match=r"stages\.dpo\.global_batch"):
        trainer_arguments(DPOConfig, "dpo", config, output_dir=tmp_path, seed=7, device=pick_device())


def test_lora_config_targets_all_linear_layers() -> None:
    lora = lora_config(dpo.Config.for_scale("full"))
    assert (lora.r, lora.lora_alpha, lora.lora_dropout, lora.target_modules) == (64, 128, 0.0, "all-linear")


def test_progress_is_forwarded_with_the_loss() -> None:
    events: list[ProgressEvent] = []
    state = TrainerState()
    state.global_step, state.max_steps = 3, 10
    callback = ForwardProgress(events.append, "dpo: training")
    args = TrainingArguments("x")
    callback.on_log(args, state, TrainerControl(), logs={"loss": 0.6931, "rewards/accuracies": 0.5})
    callback.on_log(args, state, TrainerControl(), logs={"train_runtime": 1.0})
    assert events == [ProgressEvent("dpo: training", 3, 10, "loss 0.6931, reward accuracy 0.50")]


def _checkpoint(folder: Path, step: int, complete: bool = True) -> Path:
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "adapter_model.safetensors").write_bytes(b"weights %d" % step)
    if complete:
        (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return path


def _mirror(store: LocalStore, output_dir: Path, step: int) -> None:
    state = TrainerState()
    state.global_step = step
    MirrorCheckpoints(store, KEY).on_save(TrainingArguments(str(output_dir)), state, TrainerControl())


def test_resume_picks_the_newest_complete_checkpoint(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    here = tmp_path / "here"
    assert restore_checkpoint(store, KEY, here) is None

    _checkpoint(here, 2)
    assert restore_checkpoint(store, KEY, here) == here / "checkpoint-2"

    elsewhere = tmp_path / "elsewhere"  # another machine got further and mirrored step 4
    _checkpoint(elsewhere, 4)
    _mirror(store, elsewhere, 4)
    assert store.has(CHECKPOINT_KIND, checkpoint_key(KEY, 4))
    _checkpoint(here, 6, complete=False)  # cut short while saving: not a checkpoint
    restored = restore_checkpoint(store, KEY, here)
    assert restored == here / "checkpoint-4"
    assert (restored / "adapter_model.safetensors").read_bytes() == b"weights 4"

    _checkpoint(here, 8)  # a newer local one wins over the store's
    assert restore_checkpoint(store, KEY, here) == here / "checkpoint-8"
    assert restore_checkpoint(store, "b" * 64, tmp_path / "other") is None  # other stages' checkpoints
