"""A model with a real model's configuration, tokenizer and chat template and random weights,
for a machine the real weights cannot reach (`--random-weights`)."""

from __future__ import annotations

import shutil
from pathlib import Path

RANDOM_WEIGHTS_NOTE = ("WEIGHTS ARE RANDOM (SmolLM2-135M's config, tokenizer and chat template): the answers are "
                       "noise, so they are not compared; the stop token is unreachable, so every answer runs "
                       "to max_new_tokens")
WEIGHT_FILES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".safetensors.index.json", ".bin.index.json")


def build_random_model(source: Path, out: Path, seed: int = 0) -> Path:
    """A model folder at `out` with `source`'s config, tokenizer and chat template (every file
    but the weights, copied as is) and random weights (transformers' own initialisation, fp32),
    in which the stop tokens' embedding rows are zero: with tied embeddings that row is also the
    LM head's, so a stop token's logit is exactly 0 while the largest of the ~49k random logits
    is positive, and greedy decoding never stops early."""
    import torch
    from character.models.chat_template import stop_token_ids
    from character.models.loading import load_tokenizer
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    config = AutoConfig.from_pretrained(str(source))
    tokenizer = load_tokenizer(source)
    try:
        generation = GenerationConfig.from_pretrained(str(source))
    except OSError:
        generation = None
    stops = stop_token_ids(tokenizer, generation)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        model.get_input_embeddings().weight[stops] = 0
        head = model.get_output_embeddings()
        if head is not None:
            head.weight[stops] = 0
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    for f in sorted(source.iterdir()):
        weights = f.name.endswith(WEIGHT_FILES)
        if f.is_file() and not f.name.startswith(".") and f.name != "config.json" and not weights:
            shutil.copy2(f, out / f.name)
    return out
