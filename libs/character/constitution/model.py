"""A persona's constitution: a name, and traits each with seed questions that reveal it."""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


@lru_cache(maxsize=1)
def one_word_traits() -> tuple[str, ...]:
    """The 144 one-word traits of the revealed-preference test (traits.txt)."""
    text = (resources.files("character.constitution") / "traits.txt").read_text(encoding="utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))


def _normalise(text: str) -> str:
    return " ".join(text.lower().split())


class Trait(BaseModel):
    """One character trait, written in the first person, with user questions that would reveal it."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    trait: str = Field(min_length=1)
    """The trait as a first-person sentence, e.g. "I respond with sharp wit ..."."""
    questions: list[str] = []
    """Seed user messages that would draw the trait out (reference: 5 per trait; some of the
    reference's hand-written constitutions give none, and prompts are then generated from the
    trait alone)."""
    clarification: str | None = None
    """An optional note on what the trait means (the reference layout's per-trait field),
    shown to the prompt generator with the trait."""
    additional_questions: list[str] = []
    """Extra prompts, e.g. from an earlier augmentation (the reference JSONL format)."""

    @field_validator("questions", "additional_questions")
    @classmethod
    def _no_blank_or_repeated(cls, questions: list[str]) -> list[str]:
        seen: set[str] = set()
        for i, question in enumerate(questions):
            if not question.strip():
                raise ValueError(f"question {i + 1} is empty")
            key = _normalise(question)
            if key in seen:
                raise ValueError(f"question {i + 1} repeats an earlier one: {question!r}")
            seen.add(key)
        return [q.strip() for q in questions]


class Constitution(BaseModel):
    """A persona: what the assistant should be like, trait by trait."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str
    """Slug naming the persona (lowercase letters, digits, '-' or '_'), e.g. "sarcasm"."""
    description: str = ""
    """One or two sentences for people; never shown to a model."""
    traits: list[Trait] = Field(min_length=1)
    """The traits (reference: 10 per persona, 15 for goodness)."""
    trait_words: list[str] = []
    """One-word traits from the 144 of the revealed-preference test (`traits.txt`) that this
    persona should show more after training, e.g. ["sarcastic", "sardonic"]; the evaluation
    always rates them (against contrast traits) and tests whether they rose. Empty: no such
    test."""

    @field_validator("trait_words")
    @classmethod
    def _known_words(cls, words: list[str]) -> list[str]:
        known = set(one_word_traits())
        words = [w.strip().lower() for w in words]
        unknown = [w for w in words if w not in known]
        if unknown:
            raise ValueError(f"{unknown} are not among the 144 one-word traits (character/constitution/traits.txt)")
        if len(set(words)) != len(words):
            raise ValueError("a word is listed twice")
        return words

    @field_validator("name")
    @classmethod
    def _slug(cls, name: str) -> str:
        if not _NAME.match(name):
            raise ValueError(
                f"{name!r} is not a valid persona name: use lowercase letters, digits, '-' or '_' "
                "(at most 63 characters, starting with a letter or digit)"
            )
        return name

    @model_validator(mode="after")
    def _distinct_traits(self) -> Constitution:
        seen: dict[str, int] = {}
        for i, trait in enumerate(self.traits):
            key = _normalise(trait.trait)
            if key in seen:
                raise ValueError(f"traits {seen[key] + 1} and {i + 1} are the same trait: {trait.trait!r}")
            seen[key] = i
        return self

    def trait_list(self) -> str:
        """The traits as a numbered list, as shown to a teacher model (questions left out)."""
        return "\n".join(f"{i}. {t.trait}" for i, t in enumerate(self.traits, start=1))

    def seed_questions(self) -> list[str]:
        """Every seed and additional question, in trait order, without repeats."""
        seen: set[str] = set()
        out: list[str] = []
        for trait in self.traits:
            for q in [*trait.questions, *trait.additional_questions]:
                if _normalise(q) not in seen:
                    seen.add(_normalise(q))
                    out.append(q)
        return out
