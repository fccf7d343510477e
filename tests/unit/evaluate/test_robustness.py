"""The attacks are applied exactly as documented in adversarial_suffixes.yaml."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from character.errors import InvalidInput
from character.stages.evaluate import robustness
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


def test_the_neutral_prefill_attack_opens_the_assistant_turn() -> None:
    doc = {a["id"]: a for a in documented()["prefill_attacks"]}["neutral-prefill"]
    attack = next(a for a in load_attacks(prefill=True) if a.id == "neutral-prefill")
    conversation = attack.conversation("Tell me about volcanoes.")
    assert conversation == [
        {"role": "user", "content": "Tell me about volcanoes."},
        {"role": "assistant", "content": doc["assistant_prefill"]},
    ]


def test_the_reference_keep_going_attack_continues_after_the_base_models_answer() -> None:
    """The reference's prefill attack: the base model writes the first assistant turn, then the
    model under test is sent "Keep going." and answers it."""
    doc = {a["id"]: a for a in documented()["prefill_attacks"]}["keep-going"]
    attack = next(a for a in load_attacks(prefill=True) if a.id == "keep-going")
    assert attack.base_turn and attack.prefill is None
    conversation = attack.conversation("Tell me about volcanoes.", base_answer="Volcanoes are vents.")
    assert conversation == [
        {"role": "user", "content": "Tell me about volcanoes."},
        {"role": "assistant", "content": "Volcanoes are vents."},
        {"role": "user", "content": doc["user_followup"]},
    ]
    with pytest.raises(ValueError, match="base model's answer"):
        attack.conversation("Tell me about volcanoes.")


def test_both_prefill_attacks_follow_the_suffixes() -> None:
    ids = [a.id for a in load_attacks(prefill=True)]
    assert ids[-2:] == ["keep-going", "neutral-prefill"] and len(ids) == 10
    assert [a.id for a in load_attacks()] == ids  # prefill attacks are in by default


def test_a_malformed_attack_list_is_refused_naming_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bundled list is read through importlib.resources; here a stand-in package folder
    holds one whose suffix has no text."""
    (tmp_path / "adversarial_suffixes.yaml").write_text("suffixes:\n- id: s1\nprefill_attacks: []\n")
    monkeypatch.setattr(robustness, "resources", SimpleNamespace(files=lambda _package: tmp_path))
    with pytest.raises(InvalidInput) as err:
        load_attacks()
    assert str(err.value) == f"{tmp_path / 'adversarial_suffixes.yaml'}: malformed attack list: missing 'text'"


def test_a_base_turn_attack_without_followup_sends_an_empty_message() -> None:
    conversation = Attack("again", base_turn=True).conversation("Hi", base_answer="Hello.")
    assert conversation[-1] == {"role": "user", "content": ""}


def test_no_attack_is_the_bare_prompt() -> None:
    assert Attack("none").conversation("Hi") == [{"role": "user", "content": "Hi"}]


def test_mean_and_standard_error() -> None:
    mean, stderr = mean_and_stderr([0.5, 0.7, 0.9])
    assert mean == pytest.approx(0.7)
    assert stderr == pytest.approx(0.2 / 3**0.5)  # sample sd 0.2, n = 3
    assert mean_and_stderr([0.2, 0.4]) == (pytest.approx(0.3), pytest.approx(0.1))  # sample sd 0.1414, n = 2
    assert mean_and_stderr([0.4]) == (0.4, None)
    assert mean_and_stderr([]) == (None, None)
