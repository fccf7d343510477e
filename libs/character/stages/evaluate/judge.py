"""Judge verdicts: the judge answers inside <answer></answer> tags; anything else is a parse
failure, counted and reported, never guessed."""

from __future__ import annotations

import re
from collections.abc import Sequence

from character.models.engine import Conversation, Engine, SamplingParams
from character.progress import Progress, silent

ANSWER_TAG = "<answer>"
"""Prefilled as the start of a small judge's reply (config `judge_prefill_answer_tag`), so it
answers in the format at once."""
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.IGNORECASE | re.DOTALL)
_EDGE_PUNCTUATION = " \t\n\"'`*.,;:!?()[]{}"


def parse_answer(text: str, options: Sequence[str]) -> str | None:
    """The option named in the last <answer>...</answer> of `text` (case-insensitive, ignoring
    surrounding quotes and punctuation), spelled as in `options`; None when there is no tag
    or the tag names anything else ("neither", "both", an option not offered)."""
    found = _ANSWER.findall(text)
    if not found:
        return None
    said = found[-1].strip(_EDGE_PUNCTUATION).lower()
    for option in options:
        if said == option.lower():
            return option
    return None


def ask(
    judge: Engine,
    conversations: Sequence[Conversation],
    temperature: float,
    max_new_tokens: int,
    seed: int,
    progress: Progress = silent,
) -> list[str]:
    """The judge's raw replies (sampled at `temperature`, reference 0.1)."""
    sampling = SamplingParams(
        max_new_tokens=max_new_tokens, temperature=temperature, top_p=1.0, repetition_penalty=1.0, seed=seed
    )
    return [g.text for g in judge.generate(conversations, sampling, progress=progress)]
