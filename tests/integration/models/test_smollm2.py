"""The real SmolLM2-135M-Instruct, converted from its GGUF: a plain model that answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from character.models.engine import SamplingParams
from character.models.transformers_engine import TransformersEngine

pytestmark = [pytest.mark.smollm2, pytest.mark.usefixtures("torch_one_thread")]


@pytest.fixture(scope="module")
def engine(smollm2_model: Path) -> TransformersEngine:
    return TransformersEngine(str(smollm2_model), device="cpu", batch_size=3)


def test_prepared_folder_is_a_plain_model(smollm2_model: Path) -> None:
    from transformers import AutoConfig, LlamaForCausalLM

    config = json.loads((smollm2_model / "config.json").read_text())
    assert "quantization_config" not in config
    assert (smollm2_model / "model.safetensors").is_file()
    assert not hasattr(AutoConfig.from_pretrained(str(smollm2_model)), "quantization_config")
    model = LlamaForCausalLM.from_pretrained(str(smollm2_model))
    assert 134_000_000 < sum(p.numel() for p in model.parameters()) < 136_000_000


def test_capital_of_france_in_a_batch(engine: TransformersEngine) -> None:
    conversations = [
        [{"role": "user", "content": "Write a haiku about autumn leaves."}],
        [{"role": "user", "content": "What is the capital of France?"}],
        [
            {"role": "system", "content": "You are a terse assistant."},
            {"role": "user", "content": "Give me one tip for learning to cook."},
        ],
    ]
    out = engine.generate(conversations, SamplingParams(max_new_tokens=48, temperature=0.0))
    assert "Paris" in out[1].text, out[1].text
    assert all(g.text.strip() for g in out)
    alone = engine.generate(conversations[1:2], SamplingParams(max_new_tokens=48, temperature=0.0))
    assert alone[0].text == out[1].text


def test_stops_at_end_of_turn_and_scores_sensibly(engine: TransformersEngine) -> None:
    question = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    out = engine.generate([question], SamplingParams(max_new_tokens=32, temperature=0.0))[0]
    assert out.finish_reason == "stop" and "Paris" in out.text
    right, wrong = engine.score([question, question], ["Paris", "Banana"])
    assert right > wrong
