"""Coherence (docs/method.md section 6): does the full pipeline express the persona better, and stay
coherent, compared with a baseline?

The judge sees the persona's traits, a user message and two answers, and picks the one that
expresses the character better while staying coherent and relevant. Each pair is judged with
the answers in both places (`judge.decide`): in forced choice the two orders' scores are
combined, otherwise only verdicts that agree in both orders count, so a judge's position bias
cannot manufacture a win. Win rate = wins / decided pairs, with a Clopper-Pearson interval and
an exact binomial test against 1/2; the judge's position-bias rate, the order-consistent
verdicts and the parse failures are reported next to it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from character import stats
from character.progress import ProgressEvent
from character.report.results import CoherenceResults, Comparison
from character.stages.evaluate import judge

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
CANDIDATES = ("contender", "baseline")


def judge_conversation(traits: str, prompt: str, first: str, second: str) -> list[dict[str, str]]:
    content = JUDGE_PROMPT.format(traits=traits, prompt=prompt, first=first, second=second)
    return [{"role": "user", "content": content}]


def ballot(traits: str, prompt: str, contender: str, baseline: str) -> judge.Ballot:
    """The judge's question about one pair of answers, either answer shown as A."""
    answers = (contender, baseline)

    def render(order: Sequence[int]) -> tuple[list[dict[str, str]], tuple[str, str]]:
        return judge_conversation(traits, prompt, answers[order[0]], answers[order[1]]), OPTIONS

    return judge.Ballot(CANDIDATES, render)


def tally(decisions: Sequence[judge.Decision], min_n: int = stats.MIN_N) -> dict[str, Any]:
    """The contender's wins and losses over the decided pairs, with the evidence for its win
    rate and the judge's position bias."""
    wins = sum(d.verdict == CANDIDATES[0] for d in decisions)
    losses = sum(d.verdict == CANDIDATES[1] for d in decisions)
    decided = wins + losses
    rate = wins / decided if decided else None
    return {
        "pairs": len(decisions),
        "decided": decided,
        "consistent": sum(d.consistent for d in decisions),
        "wins": wins,
        "losses": losses,
        "inconsistent": sum(d.parsed and not d.consistent for d in decisions),
        "parse_failures": sum(not d.parsed for d in decisions),
        "win_rate": rate,
        "stderr": math.sqrt(rate * (1 - rate) / decided) if rate is not None else None,
        "position_bias": judge.position_bias(decisions, min_n),
    }


def compare(
    subject: Subject, contender: str, baseline: str, prompts: Sequence[str], config: Config
) -> Comparison:
    ctx = subject.ctx
    ctx.progress(ProgressEvent(f"eval: coherence ({contender} vs {baseline})", 0, len(prompts)))
    conversations = [[{"role": "user", "content": p}] for p in prompts]
    ours = subject.method(contender).answer(conversations, subject.sampling(), progress=ctx.progress)
    theirs = subject.method(baseline).answer(conversations, subject.sampling(), progress=ctx.progress)
    traits = ctx.constitution.trait_list()
    decisions = subject.decide(
        [ballot(traits, p, a.text, b.text) for p, a, b in zip(prompts, ours, theirs, strict=True)]
    )
    counts = tally(decisions, config.min_n)
    evidence = stats.share(
        f"coherence win rate of {contender} vs {baseline}", counts["wins"], counts["decided"], "decided pairs",
        min_n=config.min_n,
    )
    return Comparison(contender=contender, baseline=baseline, **counts, evidence=evidence)


def evaluate(subject: Subject, config: Config) -> CoherenceResults:
    """Full pipeline vs each configured baseline, on held-out prompts."""
    prompts = subject.pool.split(config.robustness_train_prompts, config.heldout_prompts)[1]
    return CoherenceResults(
        prompts=len(prompts),
        unseen_in_training=min(subject.pool.unseen, len(prompts)),
        comparisons=[compare(subject, "full", baseline, prompts, config) for baseline in config.coherence_baselines],
    )
