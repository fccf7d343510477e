"""Sampling settings and answer handling shared by the generating stages (prompts, distill,
introspect): the sampling config, what to do with an answer cut at the token limit, and
progress events renamed after the part of a stage they belong to."""

from __future__ import annotations

import dataclasses
import re
from typing import Literal

from pydantic import Field

from character.models.engine import Generation, SamplingParams
from character.pipeline.stage import StageConfig
from character.progress import Progress


class SamplingConfig(StageConfig):
    """Sampling settings shared by the generating stages (the seed comes from the run spec)."""

    max_new_tokens: int = Field(512, ge=1)
    """Upper bound on tokens per generated answer."""
    temperature: float = Field(0.7, ge=0.0)
    """Sampling temperature (reference 0.7); 0 is greedy."""
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    """Nucleus sampling mass (reference 0.95)."""
    repetition_penalty: float = Field(1.0, gt=0.0)
    """>1 discourages repeating tokens."""

    def sampling(self, seed: int) -> SamplingParams:
        return SamplingParams(
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            repetition_penalty=self.repetition_penalty,
            seed=seed,
        )


Truncated = Literal["drop", "trim", "keep"]
"""What to do with an answer cut at the token limit: drop it, trim it back to its last
complete sentence (dropping it when it has none), or keep it as generated."""

_SENTENCE_END = re.compile(r"[.!?…][\"'”’)\]*]*(?=\s|$)|\n")


def trim_to_sentence(text: str) -> str | None:
    """The text up to and including its last complete sentence (or line), or None."""
    ends = [m.end() for m in _SENTENCE_END.finditer(text.rstrip())]
    trimmed = text[: ends[-1]].strip() if ends else ""
    return trimmed or None


def settle_truncated(answer: Generation, policy: Truncated) -> str | None:
    """The answer's text to use (stripped), or None when it must be dropped: an answer that
    ended cleanly is used whole; one cut at the token limit follows `policy`."""
    if answer.finish_reason != "length" or policy == "keep":
        return answer.text.strip()
    return trim_to_sentence(answer.text) if policy == "trim" else None


def labelled(progress: Progress, task: str) -> Progress:
    """`progress` with each event's task renamed, so an engine's "generate" events say which
    part of a stage they belong to."""
    return lambda event: progress(dataclasses.replace(event, task=task))
