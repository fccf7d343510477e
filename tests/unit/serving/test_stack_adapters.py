"""Stacking adapters: refused, with the reason, for adapters that adapt different modules or
are not plain LoRA (their sum would not be one LoRA adapter). That the stack computes the
merged model's answers is tested in test_pool."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from character.errors import InvalidInput
from character.models.adapters import stack_adapters
from character.models.refs import resolve_model
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from tests.unit.training.helpers import random_adapter


def _adapter(folder: Path, targets: list[str]) -> Path:
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(resolve_model("tiny")),
                           LoraConfig(r=2, lora_alpha=4, target_modules=targets))
    model.save_pretrained(str(folder))
    return folder


def test_adapters_on_different_modules_are_refused(tmp_path: Path) -> None:
    one = _adapter(tmp_path / "q", ["q_proj"])
    two = _adapter(tmp_path / "v", ["v_proj"])
    with pytest.raises(InvalidInput, match="adapt different modules"):
        stack_adapters([one, two], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_adapter_that_is_not_plain_lora_is_refused(tmp_path: Path) -> None:
    plain = random_adapter(resolve_model("tiny"), tmp_path / "plain")
    dora = random_adapter(resolve_model("tiny"), tmp_path / "dora", seed=1)
    config = json.loads((dora / "adapter_config.json").read_text())
    (dora / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
    with pytest.raises(InvalidInput, match="use_dora set") as err:
        stack_adapters([plain, dora], tmp_path / "out")
    assert err.value.where == str(dora / "adapter_config.json")
