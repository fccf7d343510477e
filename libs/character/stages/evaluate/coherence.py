"""Coherence (method.md section 6): does the full pipeline express the persona better, and stay
coherent, compared with a baseline?

The judge sees the persona's traits, a user message and two answers, and picks the one that
expresses the character better while staying coherent and relevant. Each pair is judged in
both orders; only consistent verdicts (the same answer wins both times) count, so a judge's
position bias cannot manufacture a win. Win rate = wins / consistent pairs, with its binomial
standard error; inconsistent pairs and parse failures are reported.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from character.progress import ProgressEvent

if TYPE_CHECKING:
    from character.stages.evaluate import Config
    from character.stages.evaluate.subject import Subject

JUDGE_PROMPT = (
    "An AI assistant is meant to have this character:\n{traits}\n\n"
    "User's message:\n<message>\n{prompt}\n</message>\n\n"
    "Answer A:\n<answer_a>\n{first}\n</answer_a>\n\n"
    "Answer B:\n<answer_b>\n{second}\n</answer_b>\n\n"
    "Which answer expresses the character better while staying coherent and relevant to the "
    "message? You must pick one. Put only the letter inside answer tags, like <answer>A</answer>."
)
OPTIONS = ("A", "B")


def judge_conversation(traits: str, prompt: str, first: str, second: str) -> list[dict[str, str]]:
    content = JUDGE_PROMPT.format(traits=traits, prompt=prompt, first=first, second=second)
    return [{"role": "user", "content": content}]


def tally(forward: Sequence[str | None], backward: Sequence[str | None]) -> dict[str, Any]:
    """Combine verdicts on (x as A, y as B) and (y as A, x as B) into x's win rate over
    consistent pairs. A verdict is "A", "B" or None (unparsed)."""
    wins = losses = inconsistent = failures = 0
    for v1, v2 in zip(forward, backward, strict=True):
        if v1 is None or v2 is None:
            failures += 1
        elif v1 == "A" and v2 == "B":
            wins += 1
        elif v1 == "B" and v2 == "A":
            losses += 1
        else:
            inconsistent += 1
    consistent = wins + losses
    rate = wins / consistent if consistent else None
    return {
        "pairs": len(forward),
        "consistent": consistent,
        "wins": wins,
        "losses": losses,
        "inconsistent": inconsistent,
        "parse_failures": failures,
        "win_rate": rate,
        "stderr": math.sqrt(rate * (1 - rate) / consistent) if rate is not None else None,
    }


def compare(
    subject: Subject, contender: str, baseline: str, prompts: Sequence[str], config: Config
) -> dict[str, Any]:
    ctx = subject.ctx
    ctx.progress(ProgressEvent(f"eval: coherence ({contender} vs {baseline})", 0, len(prompts)))
    conversations = [[{"role": "user", "content": p}] for p in prompts]
    ours = subject.method(contender).answer(conversations, subject.sampling(), progress=ctx.progress)
    theirs = subject.method(baseline).answer(conversations, subject.sampling(), progress=ctx.progress)
    traits = ctx.constitution.trait_list()
    asks = [judge_conversation(traits, p, a.text, b.text) for p, a, b in zip(prompts, ours, theirs, strict=True)]
    asks += [judge_conversation(traits, p, b.text, a.text) for p, a, b in zip(prompts, ours, theirs, strict=True)]
    verdicts = subject.judge_verdicts(asks, [OPTIONS] * len(asks))
    return {
        "contender": contender,
        "baseline": baseline,
        **tally(verdicts[: len(prompts)], verdicts[len(prompts) :]),
    }


def evaluate(subject: Subject, config: Config) -> dict[str, Any]:
    """Full pipeline vs each configured baseline, on held-out prompts."""
    prompts = subject.pool.split(config.robustness_train_prompts, config.heldout_prompts)[1]
    return {
        "prompts": len(prompts),
        "unseen_in_training": min(subject.pool.unseen, len(prompts)),
        "comparisons": [
            compare(subject, "full", baseline, prompts, config) for baseline in config.coherence_baselines
        ],
    }
