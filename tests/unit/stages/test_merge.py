"""Stage "merge": a folded model computes what base + DPO merged + SFT adapter computed; the
weighted merge's weights are the base's plus each adapter's update times its weight (computed
here by hand from the adapters' files); the stage stores that model with its tokenizer, leaves
the process-wide shared base model untouched, and reports what it did.

The merge itself is tested on `merged_model` (no store, no tokenizer): cheap enough for every
mutant of it. One test drives the whole stage."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from character.errors import InvalidInput
from character.models.loading import load_model
from character.models.refs import resolve_model
from character.progress import ProgressEvent
from character.stages import merge
from character.store import LocalStore
from peft import PeftModel
from transformers import AutoModelForCausalLM

from tests.unit.training.helpers import context, fake_result, random_adapter

INPUT_IDS = torch.tensor([[1, 42, 7, 1000, 5, 99, 3], [8, 16, 2048, 31, 4, 12, 77]])
# The bundled tiny model by name, as a run spec gives it, so that the stage resolves the name
# (and reports doing so). The chat template, for which `tiny_model` may prepare a fresh copy,
# plays no part in a merge.
MODEL = "tiny"

Weights = dict[str, torch.Tensor]


@pytest.fixture(scope="module")
def adapters(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(DPO, SFT) adapter folders with random non-zero weights and different ranks."""
    folder = tmp_path_factory.mktemp("adapters")
    base = resolve_model(MODEL)
    return random_adapter(base, folder / "dpo", rank=4, seed=1), random_adapter(base, folder / "sft", rank=8, seed=2)


def _base() -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(resolve_model(MODEL), dtype=torch.float32)


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=INPUT_IDS).logits


def _merged(adapters: tuple[Path, Path], **config: object) -> torch.nn.Module:
    return merge.merged_model(_base(), *adapters, merge.Config(**config))  # type: ignore[arg-type]


def lora_updates(adapter: Path) -> Weights:
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


def hand_merged(base: Weights, *weighted: tuple[float, Weights]) -> Weights:
    """The base weights plus each update times its weight."""
    merged = {name: value.double().clone() for name, value in base.items()}
    for weight, updates in weighted:
        for name, update in updates.items():
            merged[name] += weight * update
    return merged


def assert_weights_equal(actual: Weights, expected: Weights) -> None:
    assert set(actual) == set(expected)
    for name, value in expected.items():
        assert torch.allclose(actual[name].double(), value, atol=1e-5, rtol=1e-4), name


def test_fold_computes_what_sft_trained(adapters: tuple[Path, Path]) -> None:
    dpo, sft = adapters
    folded = _logits(_merged(adapters))
    # What SFT trained and evaluated: base with DPO merged, then the SFT adapter on top, unmerged.
    reference = _logits(PeftModel.from_pretrained(PeftModel.from_pretrained(_base(), dpo).merge_and_unload(), sft))
    assert torch.allclose(folded, reference, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(folded, _logits(_base()), atol=1e-2)  # the adapters did something


@pytest.mark.parametrize(("dpo_weight", "sft_weight"), [(0.7, 0.2), (0.2, 0.7)])
def test_weighted_merge_equals_the_hand_built_sum_of_scaled_updates(
    adapters: tuple[Path, Path], dpo_weight: float, sft_weight: float
) -> None:
    """Unequal weights both ways round: a swapped or dropped weight changes the sum."""
    merged = _merged(adapters, mode="weighted", dpo_weight=dpo_weight, sft_weight=sft_weight)
    dpo, sft = adapters
    expected = hand_merged(_base().state_dict(), (dpo_weight, lora_updates(dpo)), (sft_weight, lora_updates(sft)))
    assert_weights_equal(merged.state_dict(), expected)


def test_weighted_merge_at_weights_one_equals_the_fold(adapters: tuple[Path, Path]) -> None:
    """LoRA updates add, so folding one adapter after the other is their unweighted sum."""
    whole = _merged(adapters, mode="weighted", dpo_weight=1.0, sft_weight=1.0)
    assert_weights_equal(whole.state_dict(), {k: v.double() for k, v in _merged(adapters).state_dict().items()})


def test_weights_without_weighted_mode_are_refused() -> None:
    with pytest.raises(InvalidInput, match=r"stages\.merge.*sft_weight only apply to mode 'weighted'"):
        merge.Config.for_scale("full", {"sft_weight": 0.5}, where="stages.merge")


class FakeClock:
    """A stand-in for the `time` module as the stage sees it: monotonic() returns the given
    readings in turn, so that the duration it reports is known exactly."""

    def __init__(self, *readings: float) -> None:
        self._readings = iter(readings)

    def monotonic(self) -> float:
        return next(self._readings)


def test_stage_stores_the_merge_and_leaves_the_shared_base_untouched(
    adapters: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dpo, sft = adapters
    store = LocalStore(tmp_path / "store")
    inputs = {
        "dpo": fake_result("dpo", adapter=store.put_dir("adapter", "dpo-a", dpo)),
        "sft": fake_result("sft", adapter=store.put_dir("adapter", "sft-a", sft)),
    }
    config = merge.Config.for_scale("demo", {"mode": "weighted", "dpo_weight": 0.7, "sft_weight": 0.2})
    events: list[ProgressEvent] = []
    ctx = context(store, MODEL, "merge", inputs, tmp_path / "work", config, events)
    shared, _ = load_model(MODEL)  # the process-wide copy other stages and engines read
    base = {name: value.clone() for name, value in shared.state_dict().items()}
    monkeypatch.setattr(merge, "time", FakeClock(100.0, 101.23456))

    result = merge.run(ctx, config)

    assert (result.stage, result.key, list(result.artifacts)) == ("merge", ctx.key, ["model"])
    ref = result.artifacts["model"]
    assert (ref.kind, ref.key) == ("model", ctx.key)
    assert store.manifest("model", ctx.key).meta == {"stage": "merge", "base_model": MODEL, "mode": "weighted"}
    folder = store.materialize("model", ctx.key)
    assert (folder / "tokenizer_config.json").is_file()
    stored = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    assert_weights_equal(stored.state_dict(), hand_merged(base, (0.7, lora_updates(dpo)), (0.2, lora_updates(sft))))
    assert result.metrics == {
        "parameters": sum(p.numel() for p in shared.parameters()),
        "mode": "weighted",
        "seconds": 1.23,
        "weights": {"dpo": 0.7, "sft": 0.2},
    }
    for name, value in shared.state_dict().items():
        assert torch.equal(value, base[name]), f"the merge changed the shared model's {name}"
    assert any(e.task == "prepare tiny" for e in events)  # the stage reports resolving the model
