"""Resume: a DPO run killed after a checkpoint and restarted on another machine (a fresh work
folder, the same store) ends with exactly the adapter of an uninterrupted run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from character.progress import ProgressEvent
from character.stages import dpo
from character.store import LocalStore
from character.training.common import CHECKPOINT_KIND, checkpoint_key
from safetensors.torch import load_file

from tests.unit.training.helpers import context, distill_result, pair_rows

CONFIG = {
    "lr": 5e-3,
    "global_batch": 2,
    "per_device_batch": 2,
    "max_steps": 4,
    "save_steps": 2,
    "max_length": 96,
    "lora_rank": 4,
    "lora_alpha": 8,
}


class KilledAfterFirstCheckpoint(LocalStore):
    """A store on a machine that dies as soon as the first checkpoint is fully stored."""

    def put_record(self, key: str, value: dict[str, Any]) -> None:
        super().put_record(key, value)
        if key.startswith("checkpoints/"):
            raise KeyboardInterrupt("the pod was killed")


def _adapter_weights(store: LocalStore, key: str) -> dict[str, torch.Tensor]:
    return load_file(store.materialize("adapter", key) / "adapter_model.safetensors")


def test_resumed_run_equals_uninterrupted_run(tiny_model: Path, tmp_path: Path) -> None:
    config = dpo.Config.for_scale("demo", CONFIG)
    train = pair_rows(8)

    def ctx_for(store: LocalStore, workdir: str, events: list[ProgressEvent] | None = None) -> Any:
        inputs = {"distill": distill_result(store, train, [])}
        return context(store, tiny_model, "dpo", inputs, tmp_path / workdir, config, events)

    straight_store = LocalStore(tmp_path / "straight")
    straight = dpo.run(ctx_for(straight_store, "work-straight"), config)

    with pytest.raises(KeyboardInterrupt):
        dpo.run(ctx_for(KilledAfterFirstCheckpoint(tmp_path / "resumed"), "work-first-machine"), config)
    store = LocalStore(tmp_path / "resumed")
    events: list[ProgressEvent] = []
    ctx = ctx_for(store, "work-second-machine", events)
    assert store.has(CHECKPOINT_KIND, checkpoint_key(ctx.key, 2))
    assert not store.has("adapter", ctx.key)
    resumed = dpo.run(ctx, config)

    assert events[0].message == "resuming from checkpoint-2"
    assert [e.done for e in events if e.message.startswith("loss")] == [3, 4]  # only the missing steps ran
    assert resumed.metrics["steps"] == straight.metrics["steps"] == 4
    # the whole run's figures, though this process trained only steps 3 and 4
    assert resumed.metrics["resumed_step"] == 2 and straight.metrics["resumed_step"] == 0
    assert resumed.metrics["loss"] == pytest.approx(straight.metrics["loss"], abs=1e-4)
    assert resumed.metrics["train_tokens"] == straight.metrics["train_tokens"] > 0
    assert resumed.metrics["tokens_per_second"] > 0
    assert store.has(CHECKPOINT_KIND, checkpoint_key(ctx.key, 4))

    expected = _adapter_weights(straight_store, straight.artifacts["adapter"].key)
    got = _adapter_weights(store, resumed.artifacts["adapter"].key)
    assert expected.keys() == got.keys() and expected
    for name, tensor in expected.items():
        assert torch.allclose(got[name], tensor, rtol=0, atol=1e-7), name
    # ...and training did move the weights (equality is not two untouched initialisations).
    assert any(t.abs().max() > 0 for n, t in expected.items() if "lora_B" in n)

    # killed after its last checkpoint: nothing is left to train, the figures stay the run's
    again = dpo.run(ctx_for(store, "work-second-machine"), config)
    assert again.metrics["resumed_step"] == 4 and again.metrics["tokens_per_second"] is None
    assert again.metrics["loss"] == resumed.metrics["loss"]
    assert again.metrics["train_tokens"] == resumed.metrics["train_tokens"]
