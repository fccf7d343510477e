"""A persona's constitution: a name, and traits each with seed questions that reveal it."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def _normalise(text: str) -> str:
    return " ".join(text.lower().split())


class Trait(BaseModel):
    """One character trait, written in the first person, with user questions that would reveal it."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    trait: str = Field(min_length=1)
    """The trait as a first-person sentence, e.g. "I respond with sharp wit ..."."""
    questions: list[str] = Field(min_length=1)
    """Seed user messages that would draw the trait out (reference: 5 per trait)."""
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
