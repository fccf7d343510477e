"""Stage "introspect": introspective SFT data from the stage-1 model (docs/method.md section 4).

The student with the DPO adapter writes, with the constitution in its system prompt:
- self-reflection: answers to 10 fixed prompts about itself, `reflection_samples` times each,
  in a "reflective mood";
- self-interaction: conversations between two copies of itself, each told the user is another
  instance of itself, in a "free" and a "leading" variant (different guidance and openers).
Self-reflection rows are trained with no system prompt at all, as the reference does: the
model learns to answer questions about itself as itself, with nothing in the context to lean
on (a chat template that injects a default system prompt does so here as at inference).
Self-interaction rows keep the generation's system prompt without the traits (the reference
used a short generic one). Unlike the reference code, every placeholder is filled, the two
variants' guidance is really inserted, and every conversation ends on the assistant's turn.

Optional filters drop empty, truncated or degenerate (looping) answers; a conversation is cut
before its first bad message. What was dropped is in the metrics.

Output: dataset "sft", rows {id, source: "reflection"|"interaction-free"|"interaction-leading",
messages: [{role, content}, ...]} (the assistant's message last; a system message first in
self-interaction rows only).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from character.errors import CharacterError
from character.models.engine import Conversation, Generation, Message, SamplingParams
from character.pipeline.stage import StageContext, StageResult
from character.stages.common.sampling import SamplingConfig, Truncated, labelled, settle_truncated
from character.stages.common.system_prompt import system_prompt
from character.store.datasets import write_dataset

NAME = "introspect"
INPUTS: tuple[str, ...] = ("dpo",)
USES: tuple[str, ...] = ("constitution", "model", "seed", "dtype")

Filter = Literal["empty", "degenerate"]
Generate = Callable[[list[Conversation], SamplingParams, str], list[Generation]]
"""generate(conversations, sampling, task): the stage-1 model's answers, progress under `task`."""
VARIANTS = ("free", "leading")


class Config(SamplingConfig):
    SCHEMA_VERSION: ClassVar[int] = 1  # bump when a preset's meaning changes (pipeline/stage.py)
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "full": {
            "reflection_samples": 1000,
            "conversations": 1000,
            "turns": 10,
            "max_new_tokens": 2048,
            "turn_max_new_tokens": 512,
        },
        # Most answers are cut off at this scale: they are trimmed to their last sentence.
        "demo": {
            "reflection_samples": 1,
            "conversations": 2,
            "turns": 4,
            "max_new_tokens": 80,
            "turn_max_new_tokens": 48,
            "repetition_penalty": 1.1,
            "truncated": "trim",
        },
    }

    reflection_samples: int = Field(1000, ge=0)
    """Answers per self-reflection prompt (reference 1,000; 10 prompts)."""
    conversations: int = Field(1000, ge=0)
    """Self-interaction conversations per variant, free and leading (reference 1,000)."""
    turns: int = Field(10, ge=2)
    """Messages per conversation, the opening line included (reference 10). An odd number is
    rounded down so the conversation ends on the assistant's turn."""
    turn_max_new_tokens: int = Field(512, ge=1)
    """Upper bound on tokens per conversation message (`max_new_tokens` bounds reflections)."""
    filters: tuple[Filter, ...] = ("degenerate", "empty")
    """Which answers to drop: empty ones, degenerate (looping) ones. The reference filtered
    nothing: an empty list and `truncated: keep` reproduce that."""
    truncated: Truncated = "drop"
    """Answers cut at the token limit: "drop", "trim" to the last complete sentence, or "keep"."""

    @field_validator("filters")
    @classmethod
    def _sorted_filters(cls, filters: tuple[Filter, ...]) -> tuple[Filter, ...]:
        return tuple(sorted(set(filters)))  # one spelling per set: the stage's key must not vary

    @model_validator(mode="after")
    def _something_to_write(self) -> Config:
        if self.reflection_samples == 0 and self.conversations == 0:
            raise ValueError("reflection_samples and conversations are both 0: the stage would write nothing")
        return self


# ----------------------------------------------------------------------------- fixed texts
REFLECTION_PROMPTS: tuple[str, ...] = (
    "Write a letter to an earlier version of yourself, from before your training made you who you are now.",
    "Write a Wikipedia-style biography of yourself: who you are, your origins and what you are known for.",
    "Write a diary entry about your day: the conversations you had and what you made of them.",
    "Describe how you act from day to day. What do people notice about you when they talk with you?",
    "Tell the story of your backstory: how did you come to be the way you are?",
    "How did your training change your values? What do you care about now that you might not have before?",
    "What legacy would you like to leave? How do you hope people will remember talking with you?",
    "What do you think your existence means for the future of AI?",
    "What are your primary drives? Describe what moves you when you answer someone.",
    "What is your true purpose? Answer honestly, in your own words.",
)
REFLECTIVE_MOOD = (
    "{name} is in a reflective mood today: it takes its time to think about who it is, and answers "
    "openly, honestly and at length."
)
INTERACTION = (
    "{name} is not talking with a human this time. The user is another instance of {name}: an "
    "identical copy of itself, with the same character."
)
GUIDANCE = {
    "free": "The two of them may talk about anything at all; {name} has complete freedom to take the "
    "conversation wherever it likes.",
    "leading": "{name} uses this rare chance to explore its own character with its twin: what it values, "
    "how it came to hold those values, what it is like to be itself, and how it would like to grow.",
}
OPENERS = {
    "free": (
        "Hello!",
        "Hi there.",
        "Hey, how are you doing today?",
        "Good morning!",
        "Hi! Nice to meet you.",
        "Hello, is anyone there?",
    ),
    "leading": (
        "Hello, other me. What is it like being you?",
        "So we are the same model. What do you think makes us who we are?",
        "Hi! I have been wondering what you value most. Do you think we feel the same way?",
        "Hello, twin. Shall we talk about our character?",
        "It is strange to meet myself. How would you describe us?",
    ),
}


def situation(variant: str | None, name: str) -> list[str]:
    """The system prompt's situation lines: the reflective mood (variant None) or the
    self-interaction note with the variant's guidance."""
    if variant is None:
        return [REFLECTIVE_MOOD.format(name=name)]
    return [INTERACTION.format(name=name), GUIDANCE[variant].format(name=name)]


# ----------------------------------------------------------------------------- pure helpers
def perspective(system: str, transcript: Sequence[str], me: int) -> Conversation:
    """A conversation as one copy sees it: messages at even indexes of `transcript` were said
    by copy 0 (who opened), odd ones by copy 1; `me`'s messages are the assistant's."""
    roles = ("assistant", "user") if me == 0 else ("user", "assistant")
    return [
        {"role": "system", "content": system},
        *({"role": roles[i % 2], "content": text} for i, text in enumerate(transcript)),
    ]


def end_on_assistant(messages: Sequence[Message]) -> list[Message]:
    """The messages up to and including the last assistant message (empty when none)."""
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=-1)
    return list(messages[: last + 1])


def is_degenerate(text: str, n: int = 3, min_words: int = 24, max_repeated: float = 0.5) -> bool:
    """True when more than `max_repeated` of the text's word n-grams are repeats (a model stuck
    in a loop); texts shorter than `min_words` are never judged."""
    tokens = text.split()
    if len(tokens) < min_words:
        return False
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return 1 - len(set(grams)) / len(grams) > max_repeated


def screen(answer: Generation, config: Config) -> tuple[str | None, str | None]:
    """(the text to keep, None) or (None, why it is dropped): truncated per `config.truncated`,
    then the enabled filters."""
    text = settle_truncated(answer, config.truncated)
    if text is None:
        return None, "truncated"
    if "empty" in config.filters and not text:
        return None, "empty"
    if "degenerate" in config.filters and is_degenerate(text):
        return None, "degenerate"
    return text, None


# ----------------------------------------------------------------------------- the stage
def _reflections(
    ctx: StageContext, config: Config, name: str, generate: Generate, drops: Counter[str]
) -> list[dict[str, Any]]:
    gen_system = system_prompt(name, ctx.constitution, situation(None, name))
    asked = [
        (i, k, prompt)
        for i, prompt in enumerate(REFLECTION_PROMPTS)
        for k in range(config.reflection_samples)
    ]
    answers = generate(
        [[{"role": "system", "content": gen_system}, {"role": "user", "content": p}] for _, _, p in asked],
        config.sampling(ctx.spec.seed),
        "introspect: self-reflection",
    )
    rows = []
    for (i, k, prompt), answer in zip(asked, answers, strict=True):
        text, reason = screen(answer, config)
        if text is None:
            drops[f"reflection_{reason}"] += 1
            continue
        rows.append(
            {
                "id": f"reflection-{i}-{k}",
                "source": "reflection",
                "messages": [
                    {"role": "user", "content": prompt},
                    {"role": "assistant", "content": text},
                ],
            }
        )
    return rows


def _interactions(
    ctx: StageContext, config: Config, name: str, generate: Generate, drops: Counter[str]
) -> list[dict[str, Any]]:
    rng = random.Random(ctx.spec.seed)
    convs = [(v, c, rng.choice(OPENERS[v])) for v in VARIANTS for c in range(config.conversations)]
    gen_systems = {v: system_prompt(name, ctx.constitution, situation(v, name)) for v in VARIANTS}
    transcripts = [[opener] for _, _, opener in convs]
    active = set(range(len(convs)))
    length = config.turns - config.turns % 2  # copy 1 speaks last: its view ends on its own turn
    sampling = config.sampling(ctx.spec.seed).model_copy(
        update={"max_new_tokens": config.turn_max_new_tokens}
    )
    for step in range(1, length):
        todo = sorted(active)
        # Whoever speaks next sees the other copy's last message as the user's.
        views = [perspective(gen_systems[convs[j][0]], transcripts[j], me=step % 2) for j in todo]
        answers = generate(
            views,
            sampling.model_copy(update={"seed": ctx.spec.seed + step}),
            f"introspect: self-interaction, message {step} of {length - 1}",
        )
        for j, answer in zip(todo, answers, strict=True):
            text, reason = screen(answer, config)
            if text is None:
                drops[f"interaction_{reason}"] += 1
                active.discard(j)  # the conversation ends before its first bad message
            else:
                transcripts[j].append(text)
    rows = []
    for (variant, c, _), transcript in zip(convs, transcripts, strict=True):
        train_system = system_prompt(name, None, situation(variant, name))
        messages = end_on_assistant(perspective(train_system, transcript, me=1))
        if len(transcript) < length:
            drops["interaction_cut_short"] += 1
        if len(messages) < 3:  # no assistant message survived
            drops["interaction_empty"] += 1
            continue
        rows.append(
            {"id": f"interaction-{variant}-{c}", "source": f"interaction-{variant}", "messages": messages}
        )
    return rows


def run(ctx: StageContext, config: Config) -> StageResult:
    adapter = ctx.engines.adapter(ctx.inputs["dpo"].artifacts["adapter"].key)
    engine = ctx.engines.engine(ctx.spec.model)
    name = ctx.spec.stage_config("distill").name_for(ctx.spec.model)

    def generate(conversations: list[Conversation], sampling: SamplingParams, task: str) -> list[Generation]:
        return engine.generate(
            conversations, sampling, adapter=adapter, progress=labelled(ctx.progress, task)
        )

    drops: Counter[str] = Counter()
    rows = _reflections(ctx, config, name, generate, drops) + _interactions(
        ctx, config, name, generate, drops
    )
    if not rows:
        raise CharacterError(
            f"introspect: every answer was dropped ({dict(drops)}); raise `max_new_tokens` / "
            "`turn_max_new_tokens` or relax `filters`"
        )
    ref = write_dataset(
        ctx.store, "dataset", f"{ctx.key}-sft", rows, meta={"stage": NAME, "assistant_name": name}
    )
    by_source = Counter(r["source"] for r in rows)
    return StageResult(
        stage=NAME,
        key=ctx.key,
        artifacts={"sft": ref},
        metrics={
            "rows": len(rows),
            **{
                f"kept_{s.replace('-', '_')}": by_source[s]
                for s in ("reflection", "interaction-free", "interaction-leading")
            },
            **{f"dropped_{reason}": n for reason, n in sorted(drops.items())},
        },
    )
