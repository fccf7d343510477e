"""Stage "dpo": config validation, one model in memory (no reference copy), and a short run on
the tiny model that widens the chosen-vs-rejected margin and stores a loadable adapter."""

from __future__ import annotations

from pathlib import Path

import pytest
from character.errors import InvalidInput
from character.progress import ProgressEvent
from character.stages import dpo
from character.store import LocalStore
from character.training.preference import preference_accuracy

from tests.unit.training.helpers import context, distill_result, pair_rows

# A learning rate far above the reference so that six tiny steps move the margin clearly.
FAST = {
    "lr": 5e-3,
    "global_batch": 2,
    "per_device_batch": 2,
    "max_steps": 6,
    "max_length": 128,
    "lora_rank": 8,
    "lora_alpha": 16,
    "save_steps": 100,
}


def test_full_preset_is_the_reference() -> None:
    full = dpo.Config.for_scale("full")
    assert (full.beta, full.lr, full.warmup_ratio, full.epochs) == (0.1, 5e-5, 0.1, 1.0)
    assert (full.global_batch, full.max_length) == (32, 1024)
    assert (full.lora_rank, full.lora_alpha, full.lora_dropout) == (64, 128, 0.0)
    assert full.nll_coef == 0.1 and full.kl_coef == 0.001 and full.adam_beta2 == 0.98 and full.max_steps is None
    demo = dpo.Config.for_scale("demo")
    assert demo.lora_rank == 8 and demo.max_steps is not None and demo.max_length == 512


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"per_device_batch": 3}, "stages.dpo.per_device_batch"),
        ({"per_device_batch": 0}, "stages.dpo.per_device_batch"),
        ({"lora_rank": 0}, "stages.dpo.lora_rank"),
        ({"beta": 0}, "stages.dpo.beta"),
        ({"warmup_ratio": 1.0}, "stages.dpo.warmup_ratio"),
        ({"kl_coef": -0.001}, "stages.dpo.kl_coef"),
        ({"adam_beta2": 1.0}, "stages.dpo.adam_beta2"),
    ],
)
def test_config_errors_name_the_key(override: dict[str, object], key: str) -> None:
    with pytest.raises(InvalidInput, match=key.replace(".", r"\.")):
        dpo.Config.for_scale("full", override, where="stages.dpo")


def test_lora_rank_above_hidden_size_is_refused_before_training(tiny_model: Path, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    config = dpo.Config.for_scale("demo", {"lora_rank": 65})  # the tiny model's hidden size is 64
    ctx = context(
        store,
        tiny_model,
        "dpo",
        {"distill": distill_result(store, pair_rows(4), [])},
        tmp_path / "work",
        config,
    )
    with pytest.raises(InvalidInput, match=r"stages\.dpo\.lora_rank.*hidden size 64"):
        dpo.run(ctx, config)
    assert not (tmp_path / "work" / "checkpoints").exists()


def test_one_model_in_memory(tiny_model: Path, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    config = dpo.Config.for_scale("demo", FAST)
    ctx = context(
        store,
        tiny_model,
        "dpo",
        {"distill": distill_result(store, pair_rows(4), [])},
        tmp_path / "work",
        config,
    )
    trainer = dpo.build_trainer(ctx, config, pair_rows(4))
    assert trainer.ref_model is None  # the reference is the model with its adapter off
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert not trainer.args.activation_checkpointing  # CPU: off
    assert trainer.args.gradient_accumulation_steps == 1


def test_dpo_widens_the_margin_and_stores_the_adapter(tiny_model: Path, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    train, heldout = pair_rows(12), pair_rows(4, start=100)
    config = dpo.Config.for_scale("demo", FAST)
    events: list[ProgressEvent] = []
    ctx = context(
        store,
        tiny_model,
        "dpo",
        {"distill": distill_result(store, train, heldout)},
        tmp_path / "work",
        config,
        events,
    )
    result = dpo.run(ctx, config)

    m = result.metrics
    assert m["steps"] == 6 and m["train_pairs"] == 12
    assert m["tokens_per_second"] > 0 and m["peak_rss_mb"] > 0
    assert 0.0 <= m["reward_accuracy"] <= 1.0
    before, after = m["heldout_before"], m["heldout_after"]
    assert before["pairs"] == after["pairs"] == 4
    assert after["mean_margin"] > before["mean_margin"] + 1.0
    assert after["accuracy"] == 1.0 and after["accuracy"] > before["accuracy"]

    # The stored adapter is what the engine scores with, and it also moved the training pairs.
    adapter = result.artifacts["adapter"]
    assert (adapter.kind, adapter.key) == ("adapter", ctx.key)
    folder = store.materialize("adapter", adapter.key)
    assert (folder / "adapter_config.json").is_file()
    engine = ctx.engines.engine(str(tiny_model))
    on_train = preference_accuracy(engine, train[:4], adapter=folder), preference_accuracy(engine, train[:4])
    assert on_train[0]["mean_margin"] > on_train[1]["mean_margin"]

    losses = [e for e in events if e.task == "dpo: training" and e.message.startswith("loss")]
    assert [e.done for e in losses] == list(range(1, 7)) and losses[0].total == 6
