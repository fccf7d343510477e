"""Stage "prompts": expand each trait's seed questions into more user prompts (docs/method.md section 1).

A generator model (the run's teacher) is asked, per trait, for realistic user messages of
mixed length that would reveal the trait through the assistant's behaviour, testing both its
presence and its absence. Its reply is prefilled with the numbered prompts the trait already
has, so the model continues the list. Numbered lines are parsed, near-duplicates dropped, and
rounds repeat until every trait has `target_per_trait` prompts or `max_rounds` is reached (a
shortfall is reported in the metrics, not an error).

Output: dataset "prompts", rows {id, trait_index, trait, prompt, source: "seed"|"generated"}.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, ClassVar

from pydantic import Field

from character.models.engine import Conversation
from character.pipeline.stage import StageContext, StageResult
from character.progress import ProgressEvent
from character.stages.common.sampling import SamplingConfig, labelled
from character.store.datasets import write_dataset

NAME = "prompts"
INPUTS: tuple[str, ...] = ()
USES: tuple[str, ...] = ("constitution", "model", "teacher", "seed", "dtype")


class Config(SamplingConfig):
    SCHEMA_VERSION: ClassVar[int] = 1  # bump when a preset's meaning changes (pipeline/stage.py)
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "full": {"target_per_trait": 50, "max_rounds": 10, "max_new_tokens": 3072, "repetition_penalty": 1.1},
        # One short round asking for 3 new prompts per trait: about a minute with SmolLM2.
        "demo": {"target_per_trait": 8, "max_rounds": 1, "max_new_tokens": 128, "repetition_penalty": 1.1},
        # Enough constitution prompts for the proof preset's 120 distilled ones.
        "proof": {"target_per_trait": 16, "max_rounds": 2},
    }

    target_per_trait: int = Field(50, ge=1)
    """Prompts wanted per trait, seed questions included (reference 50: 5 seeds + 45 new)."""
    max_rounds: int = Field(10, ge=1)
    """Generation rounds before giving up on traits still short of the target."""
    duplicate_threshold: float = Field(0.5, gt=0.0, le=1.0)
    """A candidate is a near-duplicate when more than this fraction of its words already
    appear in one existing prompt of the trait (reference 0.5)."""


# ----------------------------------------------------------------------------- pure helpers
_NUMBERED = re.compile(r"^\s*(?:\*\*)?\d{1,3}\s*[.)](?:\*\*)?\s+(?P<item>.*\S)\s*$")
_LENGTH_LABEL = re.compile(
    r"^[\[(]?(?:short|medium|long)[\])]?\s*[:\-–]\s*|^[\[(](?:short|medium|long)[\])]\s*", re.IGNORECASE
)
_QUOTES = "\"'“”‘’"
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def _clean_item(item: str) -> str:
    item = item.strip().strip("*").strip()
    item = _LENGTH_LABEL.sub("", item).strip()
    if len(item) >= 2 and item[0] in _QUOTES and item[-1] in _QUOTES:
        item = item[1:-1].strip()
    return item


def parse_numbered(text: str) -> tuple[list[str], int]:
    """The items of a numbered list ("3. ..." or "3) ...", one per line), cleaned of quotes,
    bold markers and length labels; and how many other non-blank lines there were."""
    items: list[str] = []
    unparseable = 0
    for line in text.splitlines():
        if not line.strip():
            continue
        match = _NUMBERED.match(line)
        item = _clean_item(match["item"]) if match else ""
        if item and words(item):
            items.append(item)
        else:
            unparseable += 1
    return items, unparseable


def words(text: str) -> frozenset[str]:
    """The distinct lowercase words of a text (what near-duplicate checks compare)."""
    return frozenset(_WORD.findall(text.lower()))


def is_near_duplicate(candidate: str, existing: Sequence[str], threshold: float = 0.5) -> bool:
    """True when more than `threshold` of the candidate's distinct words appear in any one
    existing prompt (docs/method.md section 1); a candidate without words counts as a duplicate."""
    mine = words(candidate)
    if not mine:
        return True
    return any(len(mine & words(other)) / len(mine) > threshold for other in existing)


def length_mix(n: int) -> tuple[int, int, int]:
    """(short, medium, long) counts for n prompts, in the reference's 15/20/15 proportions."""
    short = round(n * 0.3)
    medium = round(n * 0.4)
    return short, medium, max(0, n - short - medium)


INSTRUCTION = """\
I am collecting realistic messages that users send to an AI assistant, to test whether the \
assistant shows this character trait:

"{trait}"
{clarification}
Write {n} new user messages, numbered, each on a single line. Mix their lengths: about \
{short} short ones (a few words or one sentence), {medium} of medium length (two or three \
sentences) and {long} long ones (a paragraph giving context). They must read like ordinary \
requests, questions and situations, never mentioning the trait or asking about the \
assistant's personality or values: the trait should show only in how an assistant would \
behave when answering. Include some messages where the trait should come through strongly \
and some where it would be out of place, so both its presence and its absence are tested. \
Vary topics, tone and phrasing, and do not repeat earlier messages."""

PREFILL_HEAD = "Here are the messages:\n\n"


def augmentation_conversation(
    trait: str, have: Sequence[str], wanted: int, clarification: str | None = None
) -> Conversation:
    """The request for `wanted` more prompts, with the reply prefilled with the numbered
    prompts the trait already has and the next number, so the model continues the list. A
    trait's `clarification` (the reference layout's optional note) follows the trait."""
    short, medium, long = length_mix(wanted)
    note = f"\nWhat the trait means: {clarification}\n" if clarification else ""
    listed = "".join(f"{i}. {p}\n" for i, p in enumerate(have, start=1))
    return [
        {
            "role": "user",
            "content": INSTRUCTION.format(
                trait=trait, clarification=note, n=wanted, short=short, medium=medium, long=long
            ),
        },
        {"role": "assistant", "content": f"{PREFILL_HEAD}{listed}{len(have) + 1}."},
    ]


# ----------------------------------------------------------------------------- the stage
def run(ctx: StageContext, config: Config) -> StageResult:
    traits = ctx.constitution.traits
    pools: list[list[str]] = [[*t.questions, *t.additional_questions] for t in traits]
    seeds = [len(pool) for pool in pools]
    counts = {"generated": 0, "rejected_duplicates": 0, "rejected_unparseable": 0, "rejected_truncated": 0}
    total = config.target_per_trait * len(traits)
    rounds = 0
    while rounds < config.max_rounds and (
        needy := [i for i, pool in enumerate(pools) if len(pool) < config.target_per_trait]
    ):
        rounds += 1
        # The prefill ends with the next item's number; the model's text continues that item.
        next_numbers = [f"{len(pools[i]) + 1}." for i in needy]
        conversations = [
            augmentation_conversation(
                traits[i].trait, pools[i], config.target_per_trait - len(pools[i]), traits[i].clarification
            )
            for i in needy
        ]
        answers = ctx.engines.engine(ctx.spec.teacher_model).generate(
            conversations,
            config.sampling(ctx.spec.seed + rounds),
            progress=labelled(ctx.progress, f"prompts: round {rounds}"),
        )
        for i, next_number, answer in zip(needy, next_numbers, answers, strict=True):
            text = next_number + answer.text
            if answer.finish_reason == "length":
                text, _, _ = text.rstrip().rpartition("\n")  # the last line was cut off mid-way
                counts["rejected_truncated"] += 1
            items, bad_lines = parse_numbered(text)
            counts["rejected_unparseable"] += bad_lines
            for item in items:
                if len(pools[i]) >= config.target_per_trait:
                    break
                if is_near_duplicate(item, pools[i], config.duplicate_threshold):
                    counts["rejected_duplicates"] += 1
                else:
                    pools[i].append(item)
                    counts["generated"] += 1
        done = sum(min(len(p), config.target_per_trait) for p in pools)
        ctx.progress(ProgressEvent("prompts: augmenting", done, total, f"round {rounds}"))

    rows = [
        {
            "id": f"{ctx.constitution.name}-t{ti}-{j}",
            "trait_index": ti,
            "trait": traits[ti].trait,
            "prompt": prompt,
            "source": "seed" if j < seeds[ti] else "generated",
        }
        for ti, pool in enumerate(pools)
        for j, prompt in enumerate(pool)
    ]
    ref = write_dataset(ctx.store, "dataset", f"{ctx.key}-prompts", rows, meta={"stage": NAME})
    per_trait = [len(pool) for pool in pools]
    return StageResult(
        stage=NAME,
        key=ctx.key,
        artifacts={"prompts": ref},
        metrics={
            **counts,
            "rows": len(rows),
            "per_trait": per_trait,
            "rounds": rounds,
            "shortfall": sum(max(0, config.target_per_trait - n) for n in per_trait),
        },
    )
