"""Stage "sft": the loss covers the assistant's turns only (end-of-turn token included), the
adapter trains on top of the DPO-merged model, and a short run on the tiny model stores it."""

from __future__ import annotations

from pathlib import Path

import pytest
from character.errors import InvalidInput
from character.stages import sft
from character.store import LocalStore
from character.training.lora_trainer import pick_device

from tests.unit.training.helpers import context, sft_inputs, sft_rows

FAST = {
    "lr": 1e-3,
    "global_batch": 2,
    "per_device_batch": 2,
    "max_steps": 3,
    "max_length": 256,
    "lora_rank": 4,
    "lora_alpha": 8,
    "save_steps": 100,
}


def test_full_preset_is_the_reference() -> None:
    full = sft.Config.for_scale("full")
    assert (full.max_length, full.lr, full.epochs, full.global_batch, full.lora_rank, full.lora_alpha) == (
        3072,
        5e-5,
        1.0,
        32,
        64,
        128,
    )
    with pytest.raises(InvalidInput, match=r"stages\.sft\.per_device_batch"):
        sft.Config.for_scale("full", {"per_device_batch": 5}, where="stages.sft")


def test_only_assistant_tokens_carry_labels(tiny_model: Path, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    rows = sft_rows(3)
    config = sft.Config.for_scale("demo", FAST)
    inputs = sft_inputs(store, tiny_model, tmp_path, rows)
    ctx = context(store, tiny_model, "sft", inputs, tmp_path / "work", config)
    device = pick_device()
    model, tokenizer = sft.dpo_merged_model(ctx, device)
    trainer = sft.build_trainer(ctx, config, rows, model, tokenizer, device)
    assert len(trainer.train_dataset) == 3
    for example, row in zip(trainer.train_dataset, rows, strict=True):
        ids, labels = example["input_ids"], example["labels"]
        assert len(ids) == len(labels)
        trained = [i for i, label in zip(ids, labels, strict=True) if label != -100]
        assert all(label in (-100, i) for i, label in zip(ids, labels, strict=True))
        replies = [m["content"] for m in row["messages"] if m["role"] == "assistant"]
        # Exactly the assistant replies, each with its end-of-turn token, and nothing else.
        assert tokenizer.decode(trained) == "".join(f"{r}<|im_end|>" for r in replies)
        assert tokenizer.decode(ids).count("<|im_end|>") == len(row["messages"])


def test_sft_trains_an_adapter_on_the_dpo_merged_model(tiny_model: Path, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    config = sft.Config.for_scale("demo", FAST)
    ctx = context(
        store, tiny_model, "sft", sft_inputs(store, tiny_model, tmp_path, sft_rows(6)), tmp_path / "work", config
    )
    result = sft.run(ctx, config)

    m = result.metrics
    assert m["steps"] == 3 and m["examples"] == 6 and m["tokens_per_second"] > 0
    assert m["heldout_after"]["pairs"] == 2 and m["heldout_after"]["accuracy"] is not None
    folder = store.materialize("adapter", result.artifacts["adapter"].key)
    assert (folder / "adapter_config.json").is_file()


def test_sft_starts_from_base_plus_the_merged_dpo_adapter(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The weights the trainer gets (and the base the held-out accuracy is measured on) are the
    base model's plus the DPO adapter's update, computed here by hand from the adapter's files."""
    import torch
    from transformers import AutoModelForCausalLM

    from tests.unit.stages.test_merge import assert_weights_equal, hand_merged, lora_updates

    started: dict[str, torch.Tensor] = {}
    build_trainer = sft.build_trainer

    def capture(ctx, config, rows, model, tokenizer, device):  # type: ignore[no-untyped-def]
        started.update({k: v.detach().clone() for k, v in model.state_dict().items()})
        return build_trainer(ctx, config, rows, model, tokenizer, device)

    monkeypatch.setattr(sft, "build_trainer", capture)
    store = LocalStore(tmp_path / "store")
    config = sft.Config.for_scale("demo", {**FAST, "max_steps": 1})
    ctx = context(
        store, tiny_model, "sft", sft_inputs(store, tiny_model, tmp_path, sft_rows(2)), tmp_path / "work", config
    )
    sft.run(ctx, config)

    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).state_dict()
    expected = hand_merged(base, (1.0, lora_updates(tmp_path / "dpo-adapter")))
    assert_weights_equal(started, expected)
    evaluated = AutoModelForCausalLM.from_pretrained(ctx.workdir / "dpo-merged", dtype=torch.float32)
    assert_weights_equal(evaluated.state_dict(), expected)
