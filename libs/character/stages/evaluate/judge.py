"""Judge verdicts, in one of three modes (config `judge_mode`):

- "reason": the judge may reason, then answers inside <answer></answer> tags (the reference);
- "tag": the judge's reply is prefilled with `<answer>`, so a small judge answers in the
  format at once (no room to reason);
- "choose": forced choice. The reply is prefilled with `<answer>` and the judge *scores* each
  option's completion `OPTION</answer>`; the verdict is the option it finds most likely per
  UTF-8 byte (`models.engine.per_byte`, as the held-out preference accuracy uses), so
  long trait names are not penalised for their extra tokens. It never fails to parse, which is
  what makes a 135M model usable as its own judge; the verdict is still the judge's own
  preference, read from its likelihoods (it is consistent across option orders: see tests).

In the generating modes, an answer that names no offered option is a parse failure: counted
and reported, never guessed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

from character.models.engine import Conversation, Engine, SamplingParams, per_byte
from character.progress import Progress, ProgressEvent, silent

JudgeMode = Literal["reason", "tag", "choose"]

ANSWER_TAG = "<answer>"
"""Prefilled as the start of the judge's reply in the "tag" and "choose" modes."""
_CLOSE_TAG = "</answer>"
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


def verdicts(
    judge: Engine,
    conversations: Sequence[Conversation],
    options: Sequence[Sequence[str]],
    mode: JudgeMode,
    *,
    temperature: float,
    max_new_tokens: int,
    seed: int,
    progress: Progress = silent,
) -> list[str | None]:
    """The option the judge picks for each conversation (`options[i]` are conversation i's),
    or None where a generated answer names none of them."""
    if mode == "reason":
        replies = ask(judge, conversations, temperature, max_new_tokens, seed, progress)
        return [parse_answer(reply, opts) for reply, opts in zip(replies, options, strict=True)]
    prefilled = [[*conversation, {"role": "assistant", "content": ANSWER_TAG}] for conversation in conversations]
    if mode == "tag":
        replies = ask(judge, prefilled, temperature, max_new_tokens, seed, progress)
        return [parse_answer(ANSWER_TAG + reply, opts) for reply, opts in zip(replies, options, strict=True)]
    return list(choose(judge, prefilled, options, progress))


def choose(
    judge: Engine,
    conversations: Sequence[Conversation],
    options: Sequence[Sequence[str]],
    progress: Progress = silent,
) -> list[str]:
    """Forced choice: per conversation (its reply prefilled with `<answer>`), the option whose
    completion `OPTION</answer>` has the highest log-probability per byte (ties: the
    first option; the callers randomise the option order)."""
    asked = [conversation for conversation, opts in zip(conversations, options, strict=True) for _ in opts]
    completions = [option + _CLOSE_TAG for opts in options for option in opts]
    progress(ProgressEvent("judge: scoring options", 0, len(conversations)))
    scores = iter(judge.score(asked, completions))
    picked = []
    for opts in options:
        normalised = [per_byte(next(scores), option + _CLOSE_TAG) for option in opts]
        picked.append(opts[max(range(len(opts)), key=normalised.__getitem__)])
    progress(ProgressEvent("judge: scoring options", len(conversations), len(conversations)))
    return picked


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
