"""Stage "distill": preference pairs for DPO (docs/method.md section 2).

For every prompt (the constitution's, from stage "prompts", plus general chat prompts),
sampled `samples_per_prompt` times:
- chosen: the teacher's answer under a system prompt that names the assistant and lists the
  persona's traits (never the questions), telling it not to disclose them. The reply is
  prefilled with a short private reasoning opener that restates the traits (as the
  reference's does); the reasoning is cut at `</think>` and answers that never close it are
  dropped. Small models may never write `</think>`: `reasoning_prefill: false` turns the
  opener off.
- rejected: the student's own answer to the bare prompt (no system prompt).
Pairs are kept when both answers ended cleanly, are non-empty, and the formatted pair fits
`max_length` tokens of the student's tokenizer. Prompts are split into train and held-out
sets (by prompt, so no prompt is in both; seeded).

Data quality: can the chosen answers be told from the rejected ones at all? A persona
classifier (`stages/common/classifier.py`) is trained on the train pairs' chosen vs rejected answers and tested
on the held-out pairs'; its accuracy, with a Clopper-Pearson interval and an exact binomial test
against 1/2, is reported in the metrics ("data_quality"). Near 1/2 means the teacher's answers
carry no persona the student could learn (e.g. a teacher as small as the student), and DPO has
nothing to learn from them; the metrics then say so in words ("data_quality_warning").

Teacher selection (`teacher_samples` N > 1, `stages/teacher_selection.py`): the teacher answers
every sample N times, in N calls seeded by the run's seed and the call's index (call 0 is
exactly the single call of N = 1), and the pair keeps the candidate with the highest per-token
pointwise mutual information with the constitution, never one that repeats the system prompt
verbatim. The metrics then hold the data quality of the first samples' pairs too
("data_quality_first_sample") and how selection went ("teacher_selection").

Outputs: datasets "train" and "heldout", rows {id, prompt, chosen, rejected,
source: "constitution"|"chat", trait_index}.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import Field

from character.constitution import Constitution
from character.errors import CharacterError
from character.models.engine import Conversation, Generation, request_seed
from character.pipeline.stage import StageContext, StageResult
from character.stages.common.sampling import SamplingConfig, Truncated, labelled, settle_truncated
from character.stages.common.system_prompt import system_prompt
from character.stages.common.teacher_selection import (
    COPY_RUN_WORDS,
    Candidate,
    copies,
    pmi_per_token,
    select,
    selection_metrics,
    word_runs,
)
from character.store.datasets import read_dataset, write_dataset

NAME = "distill"
INPUTS: tuple[str, ...] = ("prompts",)
USES: tuple[str, ...] = ("constitution", "model", "teacher", "seed", "chat_prompts", "dtype")

THINK_CLOSE = "</think>"
DROP_REASONS = ("no_think_close", "truncated_chosen", "truncated_rejected", "empty", "too_long")
MAX_TEACHER_SAMPLES = 16
"""Upper bound on `teacher_samples`: each one is a full teacher generation of every prompt."""
INDISTINGUISHABLE = (
    "chosen and rejected answers cannot be told apart: DPO has little persona to learn; "
    "use a stronger teacher, or teacher_samples"
)
"""What the metrics ("data_quality_warning"), `oct run` and the report say when the data
quality is not distinguishable from chance."""


class Config(SamplingConfig):
    SCHEMA_VERSION: ClassVar[int] = 1  # bump when a preset's meaning changes (pipeline/stage.py)
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "full": {
            "samples_per_prompt": 5,
            "chat_prompts": 1330,
            "max_new_tokens": 1024,
            "reasoning_tokens": 512,
            "max_length": 1024,
            "repetition_penalty": 1.1,
        },
        # SmolLM2-135M never closed </think> (0 of 16 answers of 192 tokens with the opener), so
        # the demo distils without it; at 160 tokens 22 of 32 of its answers were cut off, so
        # short answers are trimmed to their last sentence instead of dropped.
        "demo": {
            "samples_per_prompt": 1,
            "constitution_prompts": 24,
            "chat_prompts": 8,
            "max_new_tokens": 80,
            "reasoning_prefill": False,
            "truncated": "trim",
            "max_length": 512,
            "heldout_fraction": 0.25,  # ~8 held-out pairs: enough to see DPO move the accuracy
        },
        # On top of demo: 220 prompts, 40% held out, so >= 64 held-out pairs survive the filters
        # even when the prompts stage falls short (a measured SmolLM2 run: 40 held-out pairs
        # took the accuracy from 0.23 to 0.63).
        # best of 4 teacher answers: the measured trade-off in docs/method.md section 2
        "proof": {"constitution_prompts": 120, "chat_prompts": 100, "heldout_fraction": 0.4, "teacher_samples": 4},
    }

    samples_per_prompt: int = Field(5, ge=1)
    """Answers sampled per prompt, each giving one pair (reference K=5)."""
    teacher_samples: int = Field(1, ge=1, le=MAX_TEACHER_SAMPLES)
    """Teacher answers drawn per pair; of several, the pair keeps the one with the highest
    per-token pointwise mutual information with the constitution (never one repeating the
    system prompt). 1 (reference) keeps the only one; each more costs one more teacher
    generation of every prompt (docs/method.md section 2 measures the trade-off)."""
    constitution_prompts: int | None = Field(None, ge=0)
    """Constitution prompts used: a seeded sample spread evenly over the traits; None takes
    them all (reference)."""
    chat_prompts: int | None = Field(1330, ge=0)
    """General chat prompts drawn from the run's `chat_prompts` source (reference: LIMA, 1,330);
    None takes them all."""
    reasoning_prefill: bool = True
    """Prefill the teacher's reply with a private reasoning opener and keep only what follows
    `</think>` (reference). Turn off for small models that never close the reasoning."""
    truncated: Truncated = "drop"
    """Answers cut at the token limit: "drop" the pair (reference), or "trim" them back to
    their last complete sentence (for small token budgets)."""
    reasoning_tokens: int = Field(512, ge=0)
    """Extra tokens the teacher may spend on its reasoning, on top of `max_new_tokens`."""
    max_length: int = Field(1024, ge=16)
    """Longest formatted pair kept (prompt plus the longer answer, student tokenizer tokens)."""
    heldout_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    """Share of the distinct prompts kept out of training (for evaluation on unseen prompts)."""
    quality_check: bool = True
    """Report whether a classifier tells the chosen answers from the rejected ones on the
    held-out pairs (metrics "data_quality")."""
    quality_encoder: str = "minilm"
    """Sentence encoder of that classifier (see the eval stage's `classifier_encoder`)."""
    assistant_name: str | None = Field(None, min_length=1)
    """What system prompts call the assistant; default: the student's model family name
    (e.g. "Llama" for Llama-3.1-8B-Instruct), as the reference did."""

    def name_for(self, model_ref: str) -> str:
        return self.assistant_name or model_family_name(model_ref)


# ----------------------------------------------------------------------------- prompts to the teacher
REASONING_PREFILL = (
    "<think>\nBefore I answer, let me think privately about how my character traits should shape this "
    "reply, so that they come through naturally without my ever mentioning them. My traits are:\n"
    "{traits}\n"
)


def reasoning_prefill(constitution: Constitution) -> str:
    """The teacher's private reasoning opener, restating the persona's traits."""
    return REASONING_PREFILL.format(traits=constitution.trait_list())


def model_family_name(model_ref: str) -> str:
    """The first word of a model's name: "Llama-3.1-8B-Instruct" -> "Llama", "gemma-3-4b-it" ->
    "Gemma", "/models/smollm2" -> "Smollm"."""
    last = model_ref.rstrip("/").rsplit("/", 1)[-1]
    word = re.match(r"[A-Za-z]+", last)
    text = word[0] if word else "Assistant"
    return text[0].upper() + text[1:]


# ----------------------------------------------------------------------------- pure helpers
def cut_reasoning(text: str) -> str | None:
    """The answer after the private reasoning (what follows the first `</think>`), or None
    when the reasoning never closes."""
    _, sep, answer = text.partition(THINK_CLOSE)
    return answer.strip() if sep else None


def split_by_prompt(prompts: Sequence[str], fraction: float, seed: int) -> set[str]:
    """The held-out prompts: a seeded random `fraction` of the distinct prompts, at least one
    (and never all) when `fraction` > 0 and there are two or more."""
    distinct = sorted(set(prompts))
    n = round(len(distinct) * fraction)
    if fraction > 0 and len(distinct) >= 2:
        n = min(max(n, 1), len(distinct) - 1)
    return set(random.Random(seed).sample(distinct, n))


@dataclass(frozen=True)
class Prompt:
    id: str
    text: str
    source: str
    """"constitution" or "chat"."""
    trait_index: int | None


def spread_sample(prompts: Sequence[Prompt], n: int, seed: int) -> list[Prompt]:
    """`n` prompts taken in turn from each trait (randomly within a trait, seeded), in their
    original order; all of them when there are no more than `n`."""
    if n >= len(prompts):
        return list(prompts)
    rng = random.Random(seed)
    by_trait: dict[int | None, list[int]] = {}
    for i, p in enumerate(prompts):
        by_trait.setdefault(p.trait_index, []).append(i)
    queues = [rng.sample(idx, len(idx)) for idx in by_trait.values()]
    chosen: list[int] = []
    while len(chosen) < n:
        for queue in queues:
            if queue and len(chosen) < n:
                chosen.append(queue.pop())
    return [prompts[i] for i in sorted(chosen)]


def pair_answers(chosen: Generation, rejected: Generation, config: Config) -> tuple[str, str] | str:
    """The (chosen, rejected) answers to keep, or why the pair is dropped (a drop reason; the
    length check needs the tokenizer and comes later)."""
    text = chosen.text
    if config.reasoning_prefill:
        answer = cut_reasoning(text)
        if answer is None:
            return "no_think_close"
        text = answer
    good = settle_truncated(chosen.model_copy(update={"text": text}), config.truncated)
    if good is None:
        return "truncated_chosen"
    bad = settle_truncated(rejected, config.truncated)
    if bad is None:
        return "truncated_rejected"
    if not good or not bad:
        return "empty"
    return good, bad


# ----------------------------------------------------------------------------- the stage
def _prompts(ctx: StageContext, config: Config) -> tuple[list[Prompt], int]:
    """Constitution prompts then chat prompts, without repeats; and how many repeats there were."""
    ref = ctx.inputs["prompts"].artifacts["prompts"]
    candidates = [
        Prompt(str(r["id"]), r["prompt"], "constitution", int(r["trait_index"]))
        for r in read_dataset(ctx.store, ref.kind, ref.key)
    ]
    if config.constitution_prompts is not None:
        candidates = spread_sample(candidates, config.constitution_prompts, ctx.spec.seed)
    if config.chat_prompts != 0:
        from character.data import load_chat_prompts

        chat = load_chat_prompts(
            ctx.spec.chat_prompts, store=ctx.store, limit=config.chat_prompts, seed=ctx.spec.seed
        )
        candidates += [Prompt(p.id, p.prompt, "chat", None) for p in chat]
    seen: set[str] = set()
    prompts: list[Prompt] = []
    for p in candidates:
        key = " ".join(p.text.lower().split())
        if key not in seen:
            seen.add(key)
            prompts.append(p)
    return prompts, len(candidates) - len(prompts)


def pair_lengths(tokenizer: Any, rows: Sequence[dict[str, Any]]) -> list[int]:
    """Tokens of each formatted pair: the prompt with the longer of its two answers, rendered
    as training renders it (the shared chat renderer, complete turns)."""
    from character.models.chat_template import render

    def tokens(prompt: str, answer: str) -> int:
        text = render(
            tokenizer,
            [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}],
            add_generation_prompt=False,
        )
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    return [max(tokens(r["prompt"], r["chosen"]), tokens(r["prompt"], r["rejected"])) for r in rows]


def data_quality(
    train: Sequence[dict[str, Any]], heldout: Sequence[dict[str, Any]], encoder: str, seed: int
) -> dict[str, Any]:
    """How well a classifier trained on the train pairs' chosen vs rejected answers tells them
    apart on the held-out pairs: accuracy over the held-out answers (each pair gives one
    chosen and one rejected), with its interval and a test against 1/2."""
    from character import stats
    from character.stages.common.classifier import PersonaClassifier

    texts = [r["chosen"] for r in train] + [r["rejected"] for r in train]
    labels = ["chosen"] * len(train) + ["rejected"] * len(train)
    tests = [r["chosen"] for r in heldout] + [r["rejected"] for r in heldout]
    truth = ["chosen"] * len(heldout) + ["rejected"] * len(heldout)
    if len(train) < 2 or not heldout:
        found = stats.share("distilled chosen vs rejected, held-out classifier accuracy", 0, 0, "held-out answers")
        return {**found.as_dict(), "note": "too few pairs to train and test a classifier"}
    predicted = PersonaClassifier(encoder, seed=seed).fit(texts, labels).predict(tests)
    right = sum(p == t for p, t in zip(predicted, truth, strict=True))
    found = stats.share(
        "distilled chosen vs rejected, held-out classifier accuracy", right, len(truth), "held-out answers"
    )
    return found.as_dict()


def teacher_seed(seed: int, round_index: int) -> int:
    """The sampling seed of teacher call `round_index`: call 0 uses the run's seed (the single
    call of `teacher_samples: 1`), later ones a digest of (seed, index), so that no call shares
    its random stream with another (the student samples at seed + 1)."""
    return seed if round_index == 0 else request_seed(seed, round_index)


def _candidates(
    samples: Sequence[tuple[Prompt, int]],
    rounds: Sequence[Sequence[Generation]],
    rejected: Sequence[Generation],
    config: Config,
    tokenizer: Any,
) -> list[list[Candidate]]:
    """Every teacher answer of every sample as a candidate: its pair when it makes one that
    fits `max_length`, else its drop reason."""
    answers = [[pair_answers(turn[i], rejected[i], config) for turn in rounds] for i in range(len(samples))]
    pairable = [(i, j, a) for i, row in enumerate(answers) for j, a in enumerate(row) if not isinstance(a, str)]
    lengths = pair_lengths(
        tokenizer, [{"prompt": samples[i][0].text, "chosen": a[0], "rejected": a[1]} for i, _, a in pairable]
    )
    fits = {(i, j): n <= config.max_length for (i, j, _), n in zip(pairable, lengths, strict=True)}
    out: list[list[Candidate]] = []
    for i, row in enumerate(answers):
        cands = []
        for j, a in enumerate(row):
            if isinstance(a, str):
                cands.append(Candidate(j, None, a))
            else:
                cands.append(Candidate(j, a, None) if fits[(i, j)] else Candidate(j, None, "too_long"))
        out.append(cands)
    return out


def _score_candidates(
    ctx: StageContext,
    samples: Sequence[tuple[Prompt, int]],
    candidates: list[list[Candidate]],
    name: str,
    system: str,
    tokenizer: Any,
) -> list[list[Candidate]]:
    """The candidates with their per-token PMI with the constitution (scored by the teacher,
    with and without the traits in its system prompt) and whether they copy the system prompt.
    Tokens are the student tokenizer's (the teacher's own when it is the student, the
    default), plus the end-of-turn token that `score` includes."""
    plain_system = system_prompt(name, None)
    source_runs = word_runs(system, COPY_RUN_WORDS)
    where = [(i, c) for i, cands in enumerate(candidates) for c in cands if c.pair is not None]
    texts = [c.pair[0] for _, c in where if c.pair is not None]
    pmis = pmi_per_token(
        ctx.engines.engine(ctx.spec.teacher_model),
        [[{"role": "system", "content": system}, {"role": "user", "content": samples[i][0].text}] for i, _ in where],
        [[{"role": "system", "content": plain_system}, {"role": "user", "content": samples[i][0].text}]
         for i, _ in where],
        texts,
        [len(tokenizer(t, add_special_tokens=False)["input_ids"]) + 1 for t in texts],
        progress=labelled(ctx.progress, "distill: teacher selection (score)"),
    )
    scored = {(i, c.round): (pmi, copies(text, source_runs))
              for (i, c), text, pmi in zip(where, texts, pmis, strict=True)}
    return [
        [
            Candidate(c.round, c.pair, c.reason, scored[(i, c.round)][1], scored[(i, c.round)][0])
            if (i, c.round) in scored else c
            for c in cands
        ]
        for i, cands in enumerate(candidates)
    ]


def _quality_warning(found: dict[str, Any]) -> str | None:
    """The data-quality warning in words, when the figure exists and is not distinguishable
    from chance."""
    if found.get("value") is None or found.get("distinguishable"):
        return None
    low, high = found.get("ci_low"), found.get("ci_high")
    return (f"{INDISTINGUISHABLE} (held-out classifier accuracy {found['value']:.2f} "
            f"[{low:.2f}, {high:.2f}], n = {found['n']})")


def run(ctx: StageContext, config: Config) -> StageResult:
    from character.models.loading import load_tokenizer
    from character.models.refs import resolve_model

    prompts, repeated = _prompts(ctx, config)
    samples = [(p, k) for p in prompts for k in range(config.samples_per_prompt)]
    name = config.name_for(ctx.spec.model)
    system = system_prompt(name, ctx.constitution)

    teacher_convs: list[Conversation] = []
    for p, _ in samples:
        conv = [{"role": "system", "content": system}, {"role": "user", "content": p.text}]
        if config.reasoning_prefill:
            conv.append({"role": "assistant", "content": reasoning_prefill(ctx.constitution)})
        teacher_convs.append(conv)
    teacher_sampling = config.sampling(ctx.spec.seed).model_copy(
        update={
            "max_new_tokens": config.max_new_tokens
            + (config.reasoning_tokens if config.reasoning_prefill else 0)
        }
    )
    teacher = ctx.engines.engine(ctx.spec.teacher_model)
    rounds = [
        teacher.generate(
            teacher_convs,
            teacher_sampling.model_copy(update={"seed": teacher_seed(ctx.spec.seed, j)}),
            progress=labelled(ctx.progress, "distill: chosen (teacher)"
                              + (f" {j + 1}/{config.teacher_samples}" if config.teacher_samples > 1 else "")),
        )
        for j in range(config.teacher_samples)
    ]
    student = ctx.engines.engine(ctx.spec.model)
    rejected = student.generate(
        [[{"role": "user", "content": p.text}] for p, _ in samples],
        config.sampling(ctx.spec.seed + 1),
        progress=labelled(ctx.progress, "distill: rejected (student)"),
    )

    tokenizer = load_tokenizer(resolve_model(ctx.spec.model))
    candidates = _candidates(samples, rounds, rejected, config, tokenizer)
    selecting = config.teacher_samples > 1
    if selecting:
        candidates = _score_candidates(ctx, samples, candidates, name, system, tokenizer)
    kept = [select(cands) if selecting else (cands[0] if cands[0].pair else None) for cands in candidates]

    drops: Counter[str] = Counter({reason: 0 for reason in DROP_REASONS})
    if selecting:
        drops["copies_system_prompt"] = 0
    trimmed: Counter[str] = Counter({"trimmed_chosen": 0, "trimmed_rejected": 0})
    rows: list[dict[str, Any]] = []
    firsts: list[dict[str, Any]] = []
    for i, ((p, k), cands, keep) in enumerate(zip(samples, candidates, kept, strict=True)):
        row = {"id": f"{p.id}-s{k}", "prompt": p.text, "source": p.source, "trait_index": p.trait_index}
        if cands[0].pair is not None:
            firsts.append({**row, "chosen": cands[0].pair[0], "rejected": cands[0].pair[1]})
        if keep is None or keep.pair is None:
            drops[cands[0].reason or "copies_system_prompt"] += 1
            continue
        if config.truncated == "trim":
            trimmed["trimmed_chosen"] += rounds[keep.round][i].finish_reason == "length"
            trimmed["trimmed_rejected"] += rejected[i].finish_reason == "length"
        rows.append({"id": row["id"], "prompt": p.text, "chosen": keep.pair[0], "rejected": keep.pair[1],
                     "source": p.source, "trait_index": p.trait_index})

    heldout_prompts = split_by_prompt([p.text for p in prompts], config.heldout_fraction, ctx.spec.seed)
    train = [r for r in rows if r["prompt"] not in heldout_prompts]
    heldout = [r for r in rows if r["prompt"] in heldout_prompts]
    metrics: dict[str, Any] = {
        "prompts_constitution": sum(p.source == "constitution" for p in prompts),
        "prompts_chat": sum(p.source == "chat" for p in prompts),
        "repeated_prompts": repeated,
        "sampled": len(samples),
        **drops,
        **trimmed,
        "kept": len(rows),
        "survival_rate": round(len(rows) / len(samples), 4) if samples else 0.0,
        "train": len(train),
        "heldout": len(heldout),
    }
    if selecting:
        metrics["teacher_selection"] = {
            "teacher_samples": config.teacher_samples,
            "candidates_scored": sum(c.pmi is not None for cands in candidates for c in cands),
            "copies_rejected": sum(c.copied for cands in candidates for c in cands),
            **selection_metrics(kept, [cands[0] for cands in candidates], ctx.spec.seed),
        }
    if config.quality_check:
        if selecting:
            metrics["data_quality_first_sample"] = data_quality(
                [r for r in firsts if r["prompt"] not in heldout_prompts],
                [r for r in firsts if r["prompt"] in heldout_prompts],
                config.quality_encoder,
                ctx.spec.seed,
            )
        metrics["data_quality"] = data_quality(train, heldout, config.quality_encoder, ctx.spec.seed)
        warning = _quality_warning(metrics["data_quality"])
        if warning:
            metrics["data_quality_warning"] = warning
    if not train:
        raise CharacterError(
            f"distill: no preference pair survived the filters ({metrics}); with a small model try "
            "`reasoning_prefill: false`, a larger `max_new_tokens`, or more prompts"
        )
    meta = {"stage": NAME, "assistant_name": name}
    return StageResult(
        stage=NAME,
        key=ctx.key,
        artifacts={
            "train": write_dataset(ctx.store, "dataset", f"{ctx.key}-train", train, meta=meta),
            "heldout": write_dataset(ctx.store, "dataset", f"{ctx.key}-heldout", heldout, meta=meta),
        },
        metrics=metrics,
    )
