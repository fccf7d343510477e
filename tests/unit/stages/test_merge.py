"""Stage "merge": a folded model computes what base + DPO merged + SFT adapter computed; the
weighted combination runs, equals folding at weights (1, 1) and differs at (1, 0.25)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from character.errors import InvalidInput
from character.stages import merge
from character.store import LocalStore
from peft import PeftModel
from transformers import AutoModelForCausalLM

from tests.unit.training.helpers import context, fake_result, random_adapter

INPUT_IDS = torch.tensor([[1, 42, 7, 1000, 5, 99, 3], [8, 16, 2048, 31, 4, 12, 77]])


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=INPUT_IDS).logits


def _run(tiny_model: Path, tmp_path: Path, overrides: dict[str, object]) -> tuple[torch.Tensor, dict]:  # type: ignore[type-arg]
    store = LocalStore(tmp_path / "store")
    dpo_dir, sft_dir = tmp_path / "dpo-adapter", tmp_path / "sft-adapter"
    if not dpo_dir.exists():
        random_adapter(tiny_model, dpo_dir, rank=4, seed=1)
        random_adapter(tiny_model, sft_dir, rank=8, seed=2)
    inputs = {
        "dpo": fake_result("dpo", adapter=store.put_dir("adapter", "dpo-a", dpo_dir)),
        "sft": fake_result("sft", adapter=store.put_dir("adapter", "sft-a", sft_dir)),
    }
    config = merge.Config.for_scale("demo", overrides)
    ctx = context(store, tiny_model, "merge", inputs, tmp_path / "work", config)
    result = merge.run(ctx, config)
    folder = store.materialize("model", result.artifacts["model"].key)
    assert (folder / "config.json").is_file() and (folder / "tokenizer_config.json").is_file()
    merged = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    return _logits(merged), result.metrics


def _base(tiny_model: Path) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)


def test_fold_equals_base_plus_adapters(tiny_model: Path, tmp_path: Path) -> None:
    folded, metrics = _run(tiny_model, tmp_path, {})
    assert metrics["mode"] == "fold"
    assert metrics["parameters"] == sum(p.numel() for p in _base(tiny_model).parameters())

    # What SFT trained and evaluated: base with DPO merged, then the SFT adapter on top, unmerged.
    dpo_merged = PeftModel.from_pretrained(_base(tiny_model), tmp_path / "dpo-adapter").merge_and_unload()
    reference = _logits(PeftModel.from_pretrained(dpo_merged, tmp_path / "sft-adapter"))
    assert torch.allclose(folded, reference, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(folded, _logits(_base(tiny_model)), atol=1e-2)  # the adapters did something


def test_weighted_mode(tiny_model: Path, tmp_path: Path) -> None:
    folded, _ = _run(tiny_model, tmp_path, {})
    weighted, metrics = _run(tiny_model, tmp_path, {"mode": "weighted"})
    assert metrics["weights"] == {"dpo": 1.0, "sft": 0.25}
    assert not torch.allclose(weighted, folded, atol=1e-3)
    whole, _ = _run(tiny_model, tmp_path, {"mode": "weighted", "sft_weight": 1.0})
    assert torch.allclose(whole, folded, atol=1e-4, rtol=1e-4)  # LoRA updates add


def test_weights_without_weighted_mode_are_refused() -> None:
    with pytest.raises(InvalidInput, match=r"stages\.merge.*sft_weight only apply to mode 'weighted'"):
        merge.Config.for_scale("full", {"sft_weight": 0.5}, where="stages.merge")


def lora_updates(adapter: Path) -> dict[str, torch.Tensor]:
    """Each adapted weight's update, scaling * B @ A, computed by hand from the adapter's files
    (keyed by the base model's parameter name)."""
    import json

    from safetensors.torch import load_file

    config = json.loads((adapter / "adapter_config.json").read_text())
    assert not config.get("use_rslora") and not config.get("use_dora")
    scaling = config["lora_alpha"] / config["r"]
    tensors = load_file(str(adapter / "adapter_model.safetensors"))
    updates = {}
    for name, a in tensors.items():
        if ".lora_A." in name:
            b = tensors[name.replace(".lora_A.", ".lora_B.")]
            base_name = name.removeprefix("base_model.model.").replace(".lora_A.weight", ".weight")
            updates[base_name] = scaling * (b.double() @ a.double())
    assert updates, f"no LoRA weights in {adapter}"
    return updates


Weights = dict[str, torch.Tensor]


def hand_merged(base: Weights, *weighted: tuple[float, Weights]) -> Weights:
    """The base weights plus each update times its weight."""
    merged = {name: value.double().clone() for name, value in base.items()}
    for weight, updates in weighted:
        for name, update in updates.items():
            merged[name] += weight * update
    return merged


def assert_weights_equal(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert set(actual) == set(expected)
    for name, value in expected.items():
        assert torch.allclose(actual[name].double(), value, atol=1e-5, rtol=1e-4), name


@pytest.mark.parametrize(("dpo_weight", "sft_weight"), [(0.7, 0.2), (0.2, 0.7)])
def test_weighted_merge_equals_the_hand_built_sum_of_scaled_updates(
    tiny_model: Path, tmp_path: Path, dpo_weight: float, sft_weight: float
) -> None:
    """Unequal weights both ways round: a swapped or dropped weight changes the sum."""
    store = LocalStore(tmp_path / "store")
    _run(tiny_model, tmp_path, {"mode": "weighted", "dpo_weight": dpo_weight, "sft_weight": sft_weight})
    (folder,) = (m for m in store.list("model"))
    merged = AutoModelForCausalLM.from_pretrained(store.materialize("model", folder.key), dtype=torch.float32)
    expected = hand_merged(_base(tiny_model).state_dict(), (dpo_weight, lora_updates(tmp_path / "dpo-adapter")),
                           (sft_weight, lora_updates(tmp_path / "sft-adapter")))
    assert_weights_equal(merged.state_dict(), expected)
