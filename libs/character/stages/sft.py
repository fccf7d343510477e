"""Stage "sft": supervised fine-tuning with LoRA on the introspective data (docs/method.md 5).

The student with the DPO adapter folded in (loaded, merged in memory) gets a new LoRA
adapter trained with trl's SFTTrainer (on length-bucketed micro-batches: `training.batching`)
on the introspection conversations, with the loss on the assistant's turns only (the chat
template's `{% generation %}` markers, from `character.models.chat_template.with_training_template`,
mark them; each reply's end-of-turn token is included so the model learns to stop).

Input: the introspect stage's dataset "sft" (rows {id, source, messages}), the dpo stage's
adapter, and the distill stage's held-out pairs for the preference accuracy after SFT.
Output: adapter "adapter" (a PEFT folder over the DPO-merged model). Metrics: loss, steps,
tokens/s, peak memory, and the held-out preference accuracy of DPO-merged + SFT adapter.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from pydantic import Field

from character.pipeline.stage import StageContext, StageResult
from character.training.config import TrainingConfig

NAME = "sft"
INPUTS: tuple[str, ...] = ("distill", "dpo", "introspect")
USES: tuple[str, ...] = ("model", "seed", "dtype")


class Config(TrainingConfig):
    """SFT settings. The defaults are the reference numbers (docs/method.md section 5): max length
    3072, lr 5e-5, 1 epoch, global batch 32, LoRA rank 64 / alpha 128, on the DPO-merged
    model, loss on assistant turns only."""

    SCHEMA_VERSION: ClassVar[int] = 1  # bump when a preset's meaning changes (pipeline/stage.py)
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "full": {},
        # 8 steps of 2 conversations: ~75 s with SmolLM2 on 2 idle CPU cores.
        "demo": {"lr": 1e-4, "global_batch": 2, "per_device_batch": 2, "max_steps": 8, "max_length": 1024,
                 "lora_rank": 8, "lora_alpha": 16, "save_steps": 4},
    }

    max_length: int = Field(3072, ge=16)
    """Longest tokenized conversation; longer ones are truncated at the end (reference 3072)."""


def conversations(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Introspection rows as trl conversational language-modelling rows."""
    return [{"messages": [{"role": m["role"], "content": m["content"]} for m in r["messages"]]} for r in rows]


def dpo_merged_model(ctx: StageContext, device: Any) -> tuple[Any, Any]:
    """(the student with the DPO adapter folded in, in memory; its tokenizer)."""
    from peft import PeftModel

    from character.training import lora_trainer

    model, tokenizer = lora_trainer.load_student(ctx, device)
    dpo_adapter = ctx.store.materialize("adapter", ctx.inputs["dpo"].artifacts["adapter"].key)
    return PeftModel.from_pretrained(model, dpo_adapter).merge_and_unload(), tokenizer


def build_trainer(ctx: StageContext, config: Config, rows: list[dict[str, Any]], model: Any, tokenizer: Any,
                  device: Any) -> Any:
    """An SFTTrainer for a new LoRA adapter on `model` (the DPO-merged student)."""
    from datasets import Dataset
    from trl import SFTConfig

    from character.models.chat_template import with_training_template
    from character.training import lora_trainer
    from character.training.sft_trainer import BucketedSFTTrainer

    lora_trainer.check_lora_rank(NAME, config, model)
    args = lora_trainer.trainer_arguments(
        SFTConfig, NAME, config, output_dir=ctx.workdir / "checkpoints", seed=ctx.spec.seed, device=device,
        assistant_only_loss=True,
    )
    return BucketedSFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(conversations(rows)),
        processing_class=with_training_template(tokenizer),
        peft_config=lora_trainer.lora_config(config),
    )


def run(ctx: StageContext, config: Config) -> StageResult:
    from character.store.datasets import read_dataset
    from character.training import lora_trainer
    from character.training.preference import preference_accuracy

    sft_ref = ctx.inputs["introspect"].artifacts["sft"]
    rows = read_dataset(ctx.store, sft_ref.kind, sft_ref.key)
    heldout_ref = ctx.inputs["distill"].artifacts["heldout"]
    heldout = read_dataset(ctx.store, heldout_ref.kind, heldout_ref.key)

    device = lora_trainer.pick_device(config.gradient_checkpointing)
    model, tokenizer = dpo_merged_model(ctx, device)
    # The held-out evaluation needs the DPO-merged model as an engine's base model: save it
    # before the trainer wraps it with the new adapter.
    merged_dir = ctx.workdir / "dpo-merged"
    model.save_pretrained(merged_dir)
    tokenizer.save_pretrained(merged_dir)

    trainer = build_trainer(ctx, config, rows, model, tokenizer, device)
    training = lora_trainer.train(trainer, ctx, task=f"{NAME}: training")
    metrics = {**lora_trainer.training_metrics(trainer, training), "examples": len(rows)}
    adapter = lora_trainer.save_adapter(ctx, trainer.model, meta={"stage": NAME, "base_model": ctx.spec.model,
                                                           "on_top_of": "dpo"})
    del trainer, model  # free the training copy before the engine loads its own
    gc.collect()
    engine = ctx.engines.engine(str(merged_dir))
    metrics["heldout_after"] = preference_accuracy(engine, heldout, adapter=ctx.engines.adapter(adapter.key))
    return StageResult(stage=NAME, key=ctx.key, artifacts={"adapter": adapter}, metrics=metrics)
