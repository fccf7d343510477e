"""Baselines: the steering vector's shape and direction, and that steering changes answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from character.constitution import load_persona
from character.models.engine import SamplingParams, Steering
from character.stages.evaluate.baselines import (
    middle_layers,
    principal_direction,
    steering_vectors,
    system_prompt_for,
)


def test_middle_layers_cover_three_quarters_of_the_stack() -> None:
    assert middle_layers(32) == list(range(4, 28))  # 24 of 32
    assert middle_layers(30) == list(range(4, 26))
    assert middle_layers(2) == [0, 1]
    assert middle_layers(1) == [0]


def test_principal_direction_points_along_the_mean_difference() -> None:
    rng = np.random.default_rng(0)
    shift = np.zeros(16)
    shift[3] = -2.0  # the persona moves activations along -e3
    differences = shift + 0.1 * rng.standard_normal((40, 16))
    vector = principal_direction(differences)
    assert vector.shape == (16,)
    assert vector[3] < 0  # sign-aligned with the mean, whatever sign the SVD returned
    assert abs(vector[3]) == pytest.approx(2.0, rel=0.05)  # scaled to the mean shift along it
    assert np.abs(np.delete(vector, 3)).max() < 0.1


def test_steering_vectors_have_hidden_size_and_change_generations(tiny_model: Path) -> None:
    from character.models import get_engine
    from character.models.loading import load_model

    persona = load_persona("sarcasm")
    vectors = steering_vectors(
        str(tiny_model), system_prompt_for(persona, "Tiny"), persona.seed_questions()[:4]
    )
    model, _ = load_model(str(tiny_model))
    hidden, layers = int(model.config.hidden_size), int(model.config.num_hidden_layers)
    assert sorted(vectors) == middle_layers(layers)
    assert all(len(v) == hidden and np.linalg.norm(v) > 0 for v in vectors.values())

    engine = get_engine("transformers", str(tiny_model))
    conversations = [[{"role": "user", "content": "Tell me about the sea."}]]
    greedy = SamplingParams(max_new_tokens=12, temperature=0.0)
    plain = engine.generate(conversations, greedy)[0].text
    steered = engine.generate(conversations, greedy, steering=Steering(vectors=vectors, coefficient=8.0))[
        0
    ].text
    assert steered != plain
    assert engine.generate(conversations, greedy)[0].text == plain  # the hooks are gone afterwards
