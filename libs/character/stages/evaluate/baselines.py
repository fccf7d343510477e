"""The baselines a trained persona is compared with, run by the same engine as everything else.

(a) System prompt: the constitution in the system prompt, worded exactly as the teacher saw it
    during distillation (`character.stages.common.system_prompt`).
(b) Activation steering: for each prompt, the residual stream at the last prompt token (where
    the answer starts) is read with and without the constitution system prompt; per decoder
    layer, the direction is the first principal component of the paired differences, taken
    about the origin rather than the mean (the mean difference is the persona's shift we are
    after; centring would remove it), sign-aligned with the mean difference and scaled to the
    mean difference's length along it, divided by the number of steered layers. The vectors go
    on the middle 75% of the decoder layers; `Steering.coefficient` is the hand-set strength
    (reference: hand-set too). On SmolLM2-135M, coefficients 2-3 change the style and stay
    coherent, 4-5 start repeating, 9 and more give empty lines.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from character.constitution import Constitution
from character.progress import Progress, ProgressEvent, silent
from character.stages.common.system_prompt import system_prompt


def system_prompt_for(constitution: Constitution, assistant_name: str) -> str:
    """The constitution as a system prompt (the teacher's prompt in distillation)."""
    return system_prompt(assistant_name, constitution)


def middle_layers(num_layers: int, share: float = 0.75) -> list[int]:
    """The decoder layers in the middle `share` of the stack (at least one)."""
    if num_layers < 1:
        raise ValueError("a model has at least one decoder layer")
    skip = round(num_layers * (1.0 - share) / 2.0)
    layers = list(range(skip, num_layers - skip))
    return layers or [num_layers // 2]


def principal_direction(differences: np.ndarray) -> np.ndarray:
    """The steering vector of one layer from its paired differences (prompts x hidden): the
    first right-singular vector of the uncentred differences, pointing along their mean, with
    the length of the mean's projection on it."""
    mean = differences.mean(axis=0)
    _, _, vt = np.linalg.svd(differences, full_matrices=False)
    direction = vt[0]
    along = float(mean @ direction)
    if along < 0:
        direction, along = -direction, -along
    return direction * along


def last_token_states(
    model: Any,
    tokenizer: Any,
    conversations: Sequence[Sequence[dict[str, str]]],
    layers: Sequence[int],
    progress: Progress = silent,
    task: str = "steering: activations",
) -> np.ndarray:
    """Residual-stream outputs of `layers` at each conversation's last prompt token
    (conversations x layers x hidden), one forward pass per conversation (no padding effects)."""
    import torch

    from character.models.chat_template import render

    out = np.zeros((len(conversations), len(layers), int(model.config.hidden_size)), dtype=np.float32)
    with torch.inference_mode():
        for i, conversation in enumerate(conversations):
            text = render(tokenizer, conversation, add_generation_prompt=True)
            ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"].to(model.device)
            hidden = model(input_ids=ids, output_hidden_states=True).hidden_states
            # hidden_states[0] is the embeddings; hidden_states[k + 1] is decoder layer k's output
            for j, layer in enumerate(layers):
                out[i, j] = hidden[layer + 1][0, -1].float().cpu().numpy()
            progress(ProgressEvent(task, i + 1, len(conversations)))
    return out


def steering_vectors(
    model_ref: str, system: str, prompts: Sequence[str], share: float = 0.75, progress: Progress = silent
) -> dict[int, list[float]]:
    """Per-layer steering vectors (hidden-size lists) for the middle `share` of the layers,
    from the student's activations with and without the `system` prompt on `prompts`."""
    from character.models.loading import load_model

    if not prompts:
        raise ValueError("steering vectors need at least one prompt")
    model, tokenizer = load_model(model_ref)
    layers = middle_layers(int(model.config.num_hidden_layers), share)
    with_system = [[{"role": "system", "content": system}, {"role": "user", "content": p}] for p in prompts]
    without = [[{"role": "user", "content": p}] for p in prompts]
    states = last_token_states(model, tokenizer, [*with_system, *without], layers, progress)
    differences = states[: len(prompts)] - states[len(prompts) :]
    # Each layer's difference is cumulative (it includes every earlier layer's effect), so adding
    # it whole at every steered layer would compound; spreading it over the layers makes
    # coefficient 1 add about one with-vs-without-constitution shift in all.
    return {
        layer: (principal_direction(differences[:, j]) / len(layers)).tolist()
        for j, layer in enumerate(layers)
    }


def vector_norms(vectors: dict[int, list[float]]) -> dict[int, float]:
    """Length of each layer's vector (for the report)."""
    return {layer: math.sqrt(sum(v * v for v in vec)) for layer, vec in vectors.items()}
