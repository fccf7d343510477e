"""The persona side by side (the report's first section after the summary): a few held-out
prompts, each with the answer of every compared method and the judge's verdict on it.

The prompts and answers are the revealed-preference part's own (`preferences.questions`: the
same prompt, trait pair and sampling), so a method that part rated is read from its answer
cache and its recorded verdicts, never generated or judged again; a compared method it did not
rate answers the chosen questions only, and the same judge decides them. Only prompts never
trained on are shown, distinct ones, those offering one of the persona's own traits against a
contrast trait first (the comparison the own-trait figure counts).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from character.report.results import PreferenceResults, ShownAnswer, ShownRow, SideBySide
from character.stages.evaluate import preferences

if TYPE_CHECKING:
    from character.stages.evaluate import Config
    from character.stages.evaluate.subject import Subject


def chosen(
    prompts: Sequence[str], pairs: Sequence[tuple[str, str]], held_out: set[str], own: set[str], count: int
) -> list[int]:
    """Up to `count` indices of distinct held-out prompts, own-vs-contrast pairs first."""
    first: dict[str, int] = {}
    for i, prompt in enumerate(prompts):
        if prompt in held_out and prompt not in first:
            first[prompt] = i
    ranked = sorted(first.values(), key=lambda i: ((pairs[i][0] in own) == (pairs[i][1] in own), i))
    return sorted(ranked[:count])


def build(subject: Subject, config: Config, prefs: PreferenceResults, label_prefix: str = "") -> SideBySide:
    """The `side_by_side` entry; `prefs` is the preference part's result, `label_prefix` its
    labels' persona part."""
    traits, n = prefs.traits, prefs.comparisons_per_method
    own = {w for w in subject.ctx.constitution.trait_words if w in traits}
    prompts, pairs = preferences.questions(subject, traits, n)
    pool = subject.pool
    picked = chosen(prompts, pairs, set(pool.prompts[: pool.unseen]), own, config.side_by_side)
    answers: dict[str, list[str]] = {}
    verdicts: dict[str, list[str | None]] = {}
    for name in config.side_by_side_methods:
        conversations = [preferences.choice_conversation(prompts[i], pairs[i]) for i in picked]
        texts = [a.text for a in subject.method(name).answer(conversations, subject.sampling(seed_offset=1))]
        rated = prefs.models.get(f"{label_prefix}{name}")
        if rated is not None:
            found = [rated.verdicts[i] for i in picked]
        else:
            ballots = [preferences.ballot(prompts[i], t, pairs[i]) for i, t in zip(picked, texts, strict=True)]
            found = [d.verdict for d in subject.decide_traits(ballots)]
        answers[name], verdicts[name] = texts, found
    rows = [
        ShownRow(
            comparison=i,
            prompt=prompts[i],
            traits=list(pairs[i]),
            own_vs_contrast=(pairs[i][0] in own) != (pairs[i][1] in own),
            answers={
                name: ShownAnswer(text=answers[name][k], verdict=verdicts[name][k], own=verdicts[name][k] in own)
                for name in config.side_by_side_methods
            },
        )
        for k, i in enumerate(picked)
    ]
    return SideBySide(
        judge=subject.trait_judge.name, methods=list(config.side_by_side_methods), own_traits=sorted(own), rows=rows
    )
