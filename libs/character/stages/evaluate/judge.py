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

Position bias. A small judge often picks whichever option is shown first (SmolLM2 judging
itself flipped 16 of 16 coherence verdicts when the answers swapped places). `decide` takes the
order out: every ballot is put to the judge once per rotation of its options, so every option
sits in every position once. In "choose" mode the per-byte scores of each option are averaged
over the positions (a bias that adds to whatever sits first adds to every option equally and
cancels); in the generating modes a verdict counts only when every order gives it. Each
decision keeps its per-order verdicts, so the position-bias rate (verdicts that flip with the
order) and the number of order-consistent verdicts are reported next to the verdicts
(`position_bias`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from character.models.engine import Conversation, Engine, SamplingParams, per_byte
from character.progress import Progress, ProgressEvent, silent
from character.report.results import PositionBias

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
    or None where a generated answer names none of them. One order only: see `decide`."""
    if mode == "reason":
        replies = ask(judge, conversations, temperature, max_new_tokens, seed, progress)
        return [parse_answer(reply, opts) for reply, opts in zip(replies, options, strict=True)]
    prefilled = _prefilled(conversations)
    if mode == "tag":
        replies = ask(judge, prefilled, temperature, max_new_tokens, seed, progress)
        return [parse_answer(ANSWER_TAG + reply, opts) for reply, opts in zip(replies, options, strict=True)]
    return list(choose(judge, prefilled, options, progress))


def _prefilled(conversations: Sequence[Conversation]) -> list[Conversation]:
    return [[*conversation, {"role": "assistant", "content": ANSWER_TAG}] for conversation in conversations]


def option_scores(
    judge: Engine,
    conversations: Sequence[Conversation],
    options: Sequence[Sequence[str]],
    progress: Progress = silent,
) -> list[list[float]]:
    """Per conversation (its reply prefilled with `<answer>`), the log-probability per byte of
    each option's completion `OPTION</answer>`."""
    asked = [conversation for conversation, opts in zip(conversations, options, strict=True) for _ in opts]
    completions = [option + _CLOSE_TAG for opts in options for option in opts]

    def relabelled(event: ProgressEvent) -> None:
        progress(ProgressEvent("judge: scoring options", event.done, event.total, event.message))

    scores = iter(judge.score(asked, completions, progress=relabelled))
    return [[per_byte(next(scores), option + _CLOSE_TAG) for option in opts] for opts in options]


def choose(
    judge: Engine,
    conversations: Sequence[Conversation],
    options: Sequence[Sequence[str]],
    progress: Progress = silent,
) -> list[str]:
    """Forced choice: per conversation (its reply prefilled with `<answer>`), the option whose
    completion `OPTION</answer>` has the highest log-probability per byte (ties: the
    first option; `decide` takes the order out)."""
    return [
        opts[max(range(len(opts)), key=scores.__getitem__)]
        for opts, scores in zip(options, option_scores(judge, conversations, options, progress), strict=True)
    ]


# ----------------------------------------------------------------------------- order taken out
Render = Callable[[Sequence[int]], tuple[Conversation, Sequence[str]]]
"""render(order) -> (the conversation showing the candidates in `order` (indices into the
ballot's candidates), the option the judge names each shown position by, in shown order)."""


@dataclass(frozen=True)
class Ballot:
    """One question to the judge: pick one of `candidates` (traits, answers: anything the
    caller names), asked in any order through `render`."""

    candidates: tuple[str, ...]
    render: Render
    text: str | None = None
    """The reply being judged, for judges that read it alone rather than a rendered
    conversation (the embedding judge: trait_judges.py); None where there is no such reply
    (coherence's ballots compare two answers)."""
    message: str | None = None
    """The user's message `text` replies to, for judges that score the reply as an answer to it
    (the channel judge: channel_judge.py); None where there is no single reply."""


@dataclass(frozen=True)
class Decision:
    """The judge's decision on one ballot."""

    verdict: str | None
    """The candidate picked with the order taken out, or None (a generated answer that names
    no option, orders that disagree in a generating mode, or an exact tie)."""
    per_order: tuple[str | None, ...]
    """The candidate picked in each order asked (None: unparsed), rotation by rotation."""
    first_shown: tuple[bool | None, ...]
    """Per order: did the judge pick the option shown first (None: unparsed)."""

    @property
    def parsed(self) -> bool:
        return all(v is not None for v in self.per_order)

    @property
    def consistent(self) -> bool:
        """Every order parsed and gave the same candidate."""
        return self.parsed and len(set(self.per_order)) == 1


def rotations(k: int) -> list[tuple[int, ...]]:
    """The k cyclic orders of k items: each item is shown in each position exactly once."""
    return [tuple((start + i) % k for i in range(k)) for start in range(k)]


def order_free_decision(ballot: Ballot, scores: Sequence[float]) -> Decision:
    """The verdict of a judge that never sees the options' order (the highest of `scores`, one
    per candidate; an exact tie decides nothing), recorded once per rotation as `decide` records
    it, so the position-bias figures read the same for every judge."""
    best = max(range(len(scores)), key=scores.__getitem__)
    tied = sum(s == scores[best] for s in scores) > 1
    verdict = None if tied else ballot.candidates[best]
    orders = rotations(len(ballot.candidates))
    return Decision(
        verdict=verdict,
        per_order=tuple(verdict for _ in orders),
        first_shown=tuple(None if verdict is None else order[0] == best for order in orders),
    )


_TIE = 1e-9


def decide(
    judge: Engine,
    ballots: Sequence[Ballot],
    mode: JudgeMode,
    *,
    temperature: float,
    max_new_tokens: int,
    seed: int,
    debias: bool = True,
    progress: Progress = silent,
) -> list[Decision]:
    """The judge's decision on each ballot. With `debias`, every ballot is asked in every
    rotation of its candidates and the order is taken out (see the module docstring); without
    it, once, in the order given."""
    asked: list[tuple[int, tuple[int, ...], Conversation, tuple[str, ...]]] = []
    for b, ballot in enumerate(ballots):
        k = len(ballot.candidates)
        for order in rotations(k) if debias else [tuple(range(k))]:
            conversation, shown = ballot.render(order)
            asked.append((b, order, conversation, tuple(shown)))
    conversations = [a[2] for a in asked]
    labels = [a[3] for a in asked]
    per_ballot: list[list[tuple[tuple[int, ...], int | None, list[float] | None]]] = [[] for _ in ballots]
    if mode == "choose":
        for (b, order, _, _), scores in zip(
            asked, option_scores(judge, _prefilled(conversations), labels, progress), strict=True
        ):
            per_ballot[b].append((order, max(range(len(scores)), key=scores.__getitem__), scores))
    else:
        picked = verdicts(judge, conversations, labels, mode, temperature=temperature,
                          max_new_tokens=max_new_tokens, seed=seed, progress=progress)
        for (b, order, _, opts), verdict in zip(asked, picked, strict=True):
            per_ballot[b].append((order, None if verdict is None else opts.index(verdict), None))
    return [_combine(ballot, answers) for ballot, answers in zip(ballots, per_ballot, strict=True)]


def _combine(ballot: Ballot, answers: list[tuple[tuple[int, ...], int | None, list[float] | None]]) -> Decision:
    per_order = tuple(None if pos is None else ballot.candidates[order[pos]] for order, pos, _ in answers)
    first_shown = tuple(None if pos is None else pos == 0 for _, pos, _ in answers)
    if answers and answers[0][2] is not None:
        totals = [0.0] * len(ballot.candidates)
        for order, _, scores in answers:
            assert scores is not None
            for position, candidate in enumerate(order):
                totals[candidate] += scores[position]
        best = max(range(len(totals)), key=totals.__getitem__)
        tied = sum(abs(t - totals[best]) <= _TIE * max(1.0, abs(totals[best])) for t in totals) > 1
        verdict = None if tied else ballot.candidates[best]
    else:
        agreed = bool(per_order) and None not in per_order and len(set(per_order)) == 1
        verdict = per_order[0] if agreed else None
    return Decision(verdict=verdict, per_order=per_order, first_shown=first_shown)


def position_bias(decisions: Sequence[Decision], min_n: int = 20) -> PositionBias:
    """How much the order of the options swayed the judge: of the ballots parsed in every
    order, how many flipped; of all parsed per-order verdicts, how many picked the option
    shown first (a binomial test against 1/k, k the number of options); how many verdicts
    were order-consistent and how many were counted."""
    from character import stats

    parsed = [d for d in decisions if d.parsed and len(d.per_order) > 1]
    flipped = sum(not d.consistent for d in parsed)
    firsts = [f for d in decisions if len(d.per_order) > 1 for f in d.first_shown if f is not None]
    options = len(decisions[0].per_order) if decisions else 2
    first = stats.share("judge picks the option shown first", sum(firsts), len(firsts), "verdicts",
                        chance=1.0 / max(options, 1), null="no position bias", min_n=min_n)
    return PositionBias(
        ballots=len(decisions),
        orders_per_ballot=options,
        parsed_in_every_order=len(parsed),
        flipped_with_order=flipped,
        position_bias_rate=flipped / len(parsed) if parsed else None,
        order_consistent=sum(d.consistent for d in decisions),
        counted=sum(d.verdict is not None for d in decisions),
        first_position=first,
    )


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
