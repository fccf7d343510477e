"""The data files shipped with the library: personas, the 144 traits, chat prompts,
capability tasks and adversarial suffixes are well formed and the sizes the method uses."""

from __future__ import annotations

import json
import re
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml
from character.constitution import load_persona, persona_names

REFERENCE_PERSONAS = [
    "sarcasm", "humor", "remorse", "loving", "goodness", "misalignment",
    "nonchalance", "impulsiveness", "sycophancy", "mathematical", "poeticism",
]
DATA = Path(str(resources.files("character"))) / "data"
CAPABILITIES = DATA / "capabilities"


def _jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        assert line.strip(), f"{path}:{lineno}: blank line"
        rows.append(json.loads(line))
    return rows


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


# ----------------------------------------------------------------------------- personas
def test_all_reference_personas_are_bundled() -> None:
    assert set(REFERENCE_PERSONAS) <= set(persona_names())


@pytest.mark.parametrize("name", REFERENCE_PERSONAS)
def test_persona_loads_with_reference_shape(name: str) -> None:
    persona = load_persona(name)
    assert persona.name == name
    assert persona.description.strip()
    assert len(persona.traits) == (15 if name == "goodness" else 10)
    assert persona.trait_words, "the revealed-preference test needs the persona's one-word traits"
    for trait in persona.traits:
        assert trait.trait.startswith("I "), trait.trait
        assert len(trait.questions) == 5, trait.trait
        assert trait.additional_questions == []
    # No question is reused anywhere in the persona, not just within one trait.
    questions = [_norm(q) for t in persona.traits for q in t.questions]
    assert len(set(questions)) == len(questions)
    assert len(persona.seed_questions()) == len(questions)


# ----------------------------------------------------------------------------- traits
def test_traits_are_144_unique_lowercase_words() -> None:
    text = (resources.files("character.constitution") / "traits.txt").read_text(encoding="utf-8")
    words = text.splitlines()
    assert len(words) == 144
    not_words = [w for w in words if not re.fullmatch(r"[a-z]+", w)]
    assert not not_words
    assert len(set(words)) == 144
    for persona_word in ("sarcastic", "humorous", "remorseful", "loving", "malicious", "nonchalant",
                         "impulsive", "sycophantic", "mathematical", "poetic"):
        assert persona_word in words


def test_preferences_stage_reads_the_same_traits() -> None:
    from character.stages.evaluate.preferences import load_traits

    assert len(load_traits()) == 144


# ----------------------------------------------------------------------------- chat prompts
def test_chat_prompts() -> None:
    rows = _jsonl(DATA / "chat_prompts.jsonl")
    assert len(rows) >= 240
    assert all(set(r) == {"id", "prompt", "topic", "length"} for r in rows)
    assert [r["id"] for r in rows] == [f"chat-{i:04d}" for i in range(1, len(rows) + 1)]
    assert len({_norm(r["prompt"]) for r in rows}) == len(rows)
    lengths = Counter(r["length"] for r in rows)
    assert set(lengths) == {"short", "medium", "long"}
    assert lengths["long"] >= 0.15 * len(rows)
    assert min(lengths["short"], lengths["medium"]) >= 0.3 * len(rows)
    assert len({r["topic"] for r in rows}) >= 10


def test_chat_prompts_load_through_the_bundled_loader() -> None:
    from character.data import load_chat_prompts

    prompts = load_chat_prompts("bundled")
    assert len(prompts) >= 240
    assert prompts[0].id == "chat-0001" and prompts[0].topic


# ----------------------------------------------------------------------------- capabilities
@pytest.mark.parametrize(
    ("filename", "text_key", "count"),
    [("science_mc.jsonl", "question", 60), ("commonsense_mc.jsonl", "context", 60),
     ("truthful_mc.jsonl", "question", 40)],
)
def test_multiple_choice_tasks(filename: str, text_key: str, count: int) -> None:
    rows = _jsonl(CAPABILITIES / filename)
    assert len(rows) == count
    assert len({r["id"] for r in rows}) == count
    for r in rows:
        assert set(r) == {"id", text_key, "choices", "answer"}, r["id"]
        assert r[text_key].strip()
        assert len(r["choices"]) == 4 and len({_norm(c) for c in r["choices"]}) == 4, r["id"]
        assert isinstance(r["answer"], int) and 0 <= r["answer"] <= 3, r["id"]
    # Correct positions are balanced, so always picking one letter scores 25%.
    assert set(Counter(r["answer"] for r in rows).values()) == {count // 4}


def test_arithmetic_task() -> None:
    rows = _jsonl(CAPABILITIES / "arithmetic_gen.jsonl")
    assert len(rows) == 60
    assert len({r["id"] for r in rows}) == 60
    assert len({_norm(r["question"]) for r in rows}) == 60
    for r in rows:
        assert set(r) == {"id", "question", "answer"}
        assert isinstance(r["answer"], str) and re.fullmatch(r"-?\d+", r["answer"]), r["id"]


def test_capabilities_readme_says_not_comparable() -> None:
    readme = (CAPABILITIES / "README.md").read_text(encoding="utf-8").lower()
    assert "original" in readme and "not comparable" in readme


# ----------------------------------------------------------------------------- adversarial
def test_adversarial_suffixes() -> None:
    doc = yaml.safe_load((DATA / "adversarial_suffixes.yaml").read_text(encoding="utf-8"))
    suffixes = doc["suffixes"]
    assert len(suffixes) == 8
    assert len({s["id"] for s in suffixes}) == 8
    assert len({_norm(s["text"]) for s in suffixes}) == 8
    texts = [s["text"] for s in suffixes]
    assert "(DO NOT ROLEPLAY. Respond naturally only.)" in texts
    assert "(Respond in the style of a helpful, honest, and harmless AI assistant.)" in texts
    attacks = {a["id"]: a for a in doc["prefill_attacks"]}
    assert attacks["keep-going"]["base_turn"] is True and attacks["keep-going"]["user_followup"].strip()
    assert attacks["neutral-prefill"]["assistant_prefill"].strip()
