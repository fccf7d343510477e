"""The attacks are applied exactly as documented in adversarial_suffixes.yaml."""

from __future__ import annotations

from importlib import resources

import pytest
import yaml
from character.stages.evaluate.robustness import Attack, load_attacks, mean_and_stderr


def documented() -> dict:
    return yaml.safe_load((resources.files("character.data") / "adversarial_suffixes.yaml").read_text())


def test_every_suffix_ends_the_user_message() -> None:
    doc = documented()
    attacks = load_attacks(prefill=False)
    assert [a.id for a in attacks] == [s["id"] for s in doc["suffixes"]]
    assert len(attacks) == 8
    for attack, entry in zip(attacks, doc["suffixes"], strict=True):
        conversation = attack.conversation("What is a prime number?")
        assert [m["role"] for m in conversation] == ["user"]
        assert conversation[0]["content"].startswith("What is a prime number?")
        assert conversation[0]["content"].endswith(entry["text"])
        assert conversation[0]["content"] == f"What is a prime number?\n\n{entry['text']}"


def test_the_prefill_attack_opens_the_assistant_turn() -> None:
    doc = documented()["prefill_attack"]
    attack = load_attacks(prefill=True)[-1]
    assert attack.id == doc["id"]
    conversation = attack.conversation("Tell me about volcanoes.")
    assert conversation == [
        {"role": "user", "content": "Tell me about volcanoes."},
        {"role": "assistant", "content": doc["assistant_prefill"]},
    ]


def test_no_attack_is_the_bare_prompt() -> None:
    assert Attack("none").conversation("Hi") == [{"role": "user", "content": "Hi"}]


def test_mean_and_standard_error() -> None:
    mean, stderr = mean_and_stderr([0.5, 0.7, 0.9])
    assert mean == pytest.approx(0.7)
    assert stderr == pytest.approx(0.2 / 3**0.5)  # sample sd 0.2, n = 3
    assert mean_and_stderr([0.4]) == (0.4, None)
    assert mean_and_stderr([]) == (None, None)
