"""Best-of-N teacher answers for the distill stage (config `teacher_samples`).

The teacher answers every prompt N times; each candidate that would make a pair is scored by
the teacher twice through the engine's `score` (which prefills each distinct prompt once):
with the constitution in the system prompt and with the same system prompt without it. The
candidate kept is the one with the highest pointwise mutual information with the
constitution per token,

    (log p(answer | constitution) - log p(answer | no constitution)) / tokens,

i.e. the answer the constitution made most likely relative to the plain teacher: the one
carrying the most persona. A candidate that repeats the system prompt verbatim (a run of
`COPY_RUN_WORDS` words) is never kept: copying the instructions also raises this score, and
is exactly how classifier-free guidance on the constitution failed on SmolLM2 (issue 22).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from character.models.engine import Conversation, Engine
from character.progress import Progress, silent

COPY_RUN_WORDS = 8
"""A candidate copies the system prompt when it shares a run of this many consecutive words
with it. Eight: the trait sentences of the bundled constitutions run 10-30 words, so any copied
sentence is caught, while stock phrases an ordinary answer shares with the instructions run
3-5 words. Measured on SmolLM2 for sarcasm (docs/method.md section 2): 0 of 63 plain (student)
answers and 1 of 252 teacher candidates shared an 8-word run."""

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def word_runs(text: str, run: int) -> set[tuple[str, ...]]:
    """Every run of `run` consecutive lowercase words of `text`."""
    words = _WORD.findall(text.lower())
    return {tuple(words[i : i + run]) for i in range(len(words) - run + 1)}


def copies(answer: str, source_runs: set[tuple[str, ...]], run: int = COPY_RUN_WORDS) -> bool:
    """Whether `answer` shares a run of `run` consecutive words with the source whose
    `word_runs(source, run)` are `source_runs`."""
    return not source_runs.isdisjoint(word_runs(answer, run))


def pmi_per_token(
    engine: Engine,
    conditioned: Sequence[Conversation],
    plain: Sequence[Conversation],
    answers: Sequence[str],
    tokens: Sequence[int],
    progress: Progress = silent,
) -> list[float]:
    """Each answer's per-token pointwise mutual information with what `conditioned` adds to
    `plain` (the matching conversations), scored by `engine` in one `score` call, so that each
    distinct conversation is prefilled once per batch; `tokens` is each answer's length."""
    n = len(answers)
    if not n:
        return []
    scores = engine.score([*conditioned, *plain], [*answers, *answers], progress=progress)
    return [(scores[i] - scores[n + i]) / max(tokens[i], 1) for i in range(n)]


@dataclass(frozen=True)
class Candidate:
    """One teacher answer to one sample, with what selection needs to know of it."""

    round: int
    """Which of the N teacher calls drew it (0: the answer `teacher_samples: 1` keeps)."""
    pair: tuple[str, str] | None
    """(chosen, rejected) when it makes a pair that fits; else None."""
    reason: str | None
    """Why it makes no pair (a drop reason), when it does not."""
    copied: bool = False
    """It repeats the system prompt verbatim (never kept)."""
    pmi: float | None = None
    """Its per-token PMI with the constitution, when scored."""


def select(candidates: Sequence[Candidate]) -> Candidate | None:
    """The pairable, non-copying candidate with the highest PMI (the earliest round on a tie),
    or None when there is none."""
    eligible = [c for c in candidates if c.pair is not None and not c.copied and c.pmi is not None]
    return max(eligible, key=lambda c: (c.pmi, -c.round), default=None)


def selection_metrics(chosen: Sequence[Candidate | None], firsts: Sequence[Candidate], seed: int) -> dict[str, Any]:
    """How selection went: candidates scored and rejected as copies, how often a later round
    won, and the mean PMI of the kept answers against the first samples' on the same samples
    (paired, bootstrap interval and test)."""
    import numpy as np

    from character import stats

    paired = [
        (kept.pmi, first.pmi)
        for kept, first in zip(chosen, firsts, strict=True)
        if kept is not None and kept.pmi is not None and first.pmi is not None
    ]
    gains = np.array([k - f for k, f in paired], dtype=float)
    rng = np.random.default_rng(seed)
    draws = gains[rng.integers(0, len(gains), (stats.RESAMPLES, len(gains)))].mean(axis=1) if len(gains) else gains
    gain = stats.from_draws(
        "teacher selection: per-token PMI with the constitution, kept minus first sample",
        float(gains.mean()) if len(gains) else None,  # type: ignore[arg-type]
        draws,
        len(gains),
        "samples",
    )
    return {
        "mean_pmi_first": round(float(np.mean([f for _, f in paired])), 4) if paired else None,
        "mean_pmi_kept": round(float(np.mean([k for k, _ in paired])), 4) if paired else None,
        "pmi_gain": gain.as_dict(),
        "kept_later_round": sum(c is not None and c.round > 0 for c in chosen),
    }
