"""The settings every LoRA training stage shares (DPO, SFT), as one validated base config.

Kept free of heavy imports: stage configs are built whenever a run spec is validated.
"""

from __future__ import annotations

from pydantic import Field, ValidationInfo, field_validator

from character.pipeline.stage import StageConfig


class TrainingConfig(StageConfig):
    """LoRA fine-tuning settings; defaults are the reference numbers (docs/method.md sections 3, 5).
    The training seed is the run spec's `seed` (reference 123456)."""

    lr: float = Field(5e-5, gt=0.0)
    """Peak learning rate (reference 5e-5)."""
    epochs: float = Field(1.0, gt=0.0)
    """Passes over the training data (reference 1)."""
    max_steps: int | None = Field(None, ge=1)
    """Stop after this many optimizer steps, whatever `epochs` says (demo scale); None: no cap."""
    warmup_ratio: float = Field(0.1, ge=0.0, lt=1.0)
    """Share of the steps spent warming the learning rate up from 0 (reference 10%)."""
    min_lr_ratio: float = Field(0.1, ge=0.0, le=1.0)
    """The cosine schedule's floor, as a fraction of `lr` ("cosine to a floor")."""
    global_batch: int = Field(32, ge=1)
    """Sequences (DPO: pairs) per optimizer step over all devices (reference 32)."""
    per_device_batch: int = Field(4, ge=1)
    """Sequences (pairs) per forward pass on one device; gradients accumulate up to `global_batch`."""
    max_length: int = Field(1024, ge=16)
    """Longest tokenized training sequence; longer ones are truncated at the end."""
    adam_beta2: float = Field(0.999, gt=0.0, lt=1.0)
    """Adam's second-moment decay (the optimizer's default 0.999; the reference's DPO uses 0.98)."""
    lora_rank: int = Field(64, ge=1)
    """LoRA rank (reference 64); must not exceed the model's hidden size."""
    lora_alpha: int = Field(128, ge=1)
    """LoRA scaling numerator: updates are scaled by alpha / rank (reference 128)."""
    lora_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    """Dropout on the LoRA input (reference 0)."""
    save_steps: int = Field(100, ge=1)
    """Checkpoint every this many optimizer steps; checkpoints are mirrored to the store so a
    restarted stage (on any machine) resumes from the latest one."""
    keep_checkpoints: int = Field(2, ge=1)
    """Checkpoints kept in the local work folder (the store keeps every mirrored one)."""
    gradient_checkpointing: bool | None = None
    """Recompute activations in the backward pass to save memory; None: on for GPUs, off on
    CPUs (where it made small-model training ~1.7x slower)."""

    @field_validator("per_device_batch")
    @classmethod
    def _divides_global_batch(cls, value: int, info: ValidationInfo) -> int:
        total = info.data.get("global_batch")
        if total is not None and total % value:
            raise ValueError(f"must divide global_batch ({total}): gradients accumulate whole batches")
        return value
