"""Stage "distill" with `teacher_samples` N: the kept answer is the candidate with the highest
per-token PMI with the constitution (measured again here through the teacher's own `score`),
never one that repeats the system prompt, N = 1 is the single teacher call of before, and the
same run gives the same selection."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from character.errors import InvalidInput
from character.models.engine import AdapterRef, Conversation, Engine, Generation, SamplingParams, Steering
from character.models.loading import load_tokenizer
from character.pipeline.engines import LocalEngines
from character.pipeline.spec import RunSpec
from character.pipeline.stage import StageContext, StageResult
from character.progress import Progress, silent
from character.stages import distill
from character.stages.common.teacher_selection import COPY_RUN_WORDS, Candidate, copies, select, word_runs
from character.store import LocalStore
from character.store.datasets import read_dataset, write_dataset

QUESTIONS = [f"Question number {i}: what would you do about the weather?" for i in range(6)]
SETTINGS: dict[str, Any] = {
    "samples_per_prompt": 1,
    "constitution_prompts": None,
    "chat_prompts": 0,
    "max_new_tokens": 6,
    "reasoning_prefill": False,
    "truncated": "keep",  # a random model's answers all hit the token limit
    "heldout_fraction": 0.5,
    "quality_check": True,
}


class CopyingTeacher(Engine):
    """A fake teacher, named as such: the tiny model, except that in its second generation call
    with a system prompt (the second teacher sample) every answer repeats the system prompt's
    trait list, as guidance on the constitution made SmolLM2 do. No real small model copies
    reliably enough to test the rejection on every sample."""

    def __init__(self, real: Engine):
        self.real, self.name, self.teacher_calls = real, real.name, 0

    def generate(
        self,
        conversations: Sequence[Conversation],
        sampling: SamplingParams,
        adapter: AdapterRef | None = None,
        steering: Steering | None = None,
        progress: Progress = silent,
    ) -> list[Generation]:
        out = self.real.generate(conversations, sampling, adapter, steering, progress)
        if conversations and conversations[0][0]["role"] == "system":
            self.teacher_calls += 1
            if self.teacher_calls == 2:
                copied = conversations[0][0]["content"].split("Its character traits are:")[1].split("\n\n")[0]
                return [Generation(text=copied, finish_reason="stop", num_tokens=40) for _ in out]
        return out

    def score(
        self,
        conversations: Sequence[Conversation],
        continuations: Sequence[str],
        adapter: AdapterRef | None = None,
        progress: Progress = silent,
    ) -> list[float]:
        return self.real.score(conversations, continuations, adapter, progress)


class CopyingEngines(LocalEngines):
    """Local engines whose teacher is a `CopyingTeacher`."""

    def __init__(self, store: LocalStore):
        super().__init__(store)
        self.wrapped: dict[int, Engine] = {}

    def engine(self, model: str) -> Engine:
        engine = super().engine(model)
        return self.wrapped.setdefault(id(engine), CopyingTeacher(engine))


def run_distill(
    tmp_path: Path, model: Path, teacher_samples: int, copying: bool = False
) -> tuple[StageResult, list[dict[str, Any]], StageContext]:
    store = LocalStore(tmp_path / "store")
    rows = [
        {"id": f"c{i}", "trait_index": i % 3, "trait": "t", "prompt": q, "source": "seed"}
        for i, q in enumerate(QUESTIONS)
    ]
    ref = write_dataset(store, "dataset", "fake-prompts", rows)
    spec = RunSpec(
        model=str(model),
        constitution="sarcasm",
        scale="demo",
        seed=123456,
        stages={"distill": {**SETTINGS, "teacher_samples": teacher_samples}},
    )
    engines = CopyingEngines(store) if copying else LocalEngines(store)
    ctx = StageContext(
        run_id="run-test",
        spec=spec,
        constitution=spec.persona,
        store=store,
        engines=engines,
        key="test-distill",
        inputs={"prompts": StageResult(stage="prompts", key="fake", artifacts={"prompts": ref})},
        workdir=tmp_path / "work",
    )
    result = distill.run(ctx, spec.stage_config("distill"))
    kept = [
        *read_dataset(store, "dataset", result.artifacts["train"].key),
        *read_dataset(store, "dataset", result.artifacts["heldout"].key),
    ]
    return result, kept, ctx


def measured_pmi(ctx: StageContext, model: Path, rows: Sequence[dict[str, Any]]) -> list[float]:
    """Per-token PMI of each row's chosen answer with the constitution, scored here by the
    teacher's engine (the definition in the stage's docs, not the stage's own code)."""
    name = distill.Config.for_scale("demo").name_for(ctx.spec.model)
    engine = ctx.engines.engine(ctx.spec.teacher_model)
    tokenizer = load_tokenizer(model)
    with_traits = [
        [
            {"role": "system", "content": distill.system_prompt(name, ctx.constitution)},
            {"role": "user", "content": r["prompt"]},
        ]
        for r in rows
    ]
    without = [
        [{"role": "system", "content": distill.system_prompt(name, None)}, {"role": "user", "content": r["prompt"]}]
        for r in rows
    ]
    answers = [r["chosen"] for r in rows]
    a, b = engine.score(with_traits, answers), engine.score(without, answers)
    return [
        (x - y) / (len(tokenizer(t, add_special_tokens=False)["input_ids"]) + 1)
        for x, y, t in zip(a, b, answers, strict=True)
    ]


Run = tuple[StageResult, list[dict[str, Any]], StageContext]


@pytest.fixture(scope="module")
def one(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    return run_distill(tmp_path_factory.mktemp("one"), tiny_model, 1)


@pytest.fixture(scope="module")
def three(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    return run_distill(tmp_path_factory.mktemp("three"), tiny_model, 3)


def test_selection_raises_the_measured_pmi_over_the_first_sample(tiny_model: Path, one: Run, three: Run) -> None:
    (single, first_rows, ctx), (selected, kept_rows, _) = one, three
    first = measured_pmi(ctx, tiny_model, first_rows)
    kept = measured_pmi(ctx, tiny_model, kept_rows)
    assert len(first) == len(kept) == len(QUESTIONS)
    assert len(set(first)) == len(first)  # the constitution changes how likely each answer is
    # by rows in the same order (the same samples), every kept answer is at least as good
    assert [r["id"] for r in first_rows] == [r["id"] for r in kept_rows]
    assert all(k >= f - 1e-4 for k, f in zip(kept, first, strict=True))
    assert sum(kept) / len(kept) > sum(first) / len(first)
    selection = selected.metrics["teacher_selection"]
    assert selection["mean_pmi_kept"] == pytest.approx(sum(kept) / len(kept), abs=1e-3)
    assert selection["mean_pmi_first"] == pytest.approx(sum(first) / len(first), abs=1e-3)
    changed = sum(a["chosen"] != b["chosen"] for a, b in zip(first_rows, kept_rows, strict=True))
    assert selection["kept_later_round"] == changed > 0
    assert selection["candidates_scored"] == 3 * len(QUESTIONS) and selection["copies_rejected"] == 0
    # the quality figure before selection is the N = 1 run's, on the same pairs
    assert selected.metrics["data_quality_first_sample"] == single.metrics["data_quality"]
    assert "teacher_selection" not in single.metrics and "data_quality_first_sample" not in single.metrics


def test_one_teacher_sample_is_the_single_seeded_teacher_call(one: Run) -> None:
    """N = 1 keeps the answer of one teacher call at the run's seed, as the stage always did."""
    _, rows, ctx = one
    config = ctx.spec.stage_config("distill")
    assert isinstance(config, distill.Config)
    name = config.name_for(ctx.spec.model)
    convs = [
        [{"role": "system", "content": distill.system_prompt(name, ctx.constitution)}, {"role": "user", "content": q}]
        for q in QUESTIONS
    ]
    answers = ctx.engines.engine(ctx.spec.teacher_model).generate(convs, config.sampling(ctx.spec.seed))
    by_question = sorted(rows, key=lambda r: QUESTIONS.index(r["prompt"]))
    assert [r["chosen"] for r in by_question] == [a.text.strip() for a in answers]


def test_a_candidate_repeating_the_system_prompt_is_never_kept(tiny_model: Path, tmp_path: Path) -> None:
    result, rows, ctx = run_distill(tmp_path, tiny_model, 2, copying=True)
    system = distill.system_prompt(distill.Config.for_scale("demo").name_for(ctx.spec.model), ctx.constitution)
    runs = word_runs(system, COPY_RUN_WORDS)
    selection = result.metrics["teacher_selection"]
    assert selection["copies_rejected"] == len(QUESTIONS)  # every second sample copied, each caught
    assert len(rows) == len(QUESTIONS)  # the first samples were kept instead
    assert not any(copies(r["chosen"], runs) for r in rows)
    assert selection["kept_later_round"] == 0


def test_the_same_run_selects_the_same_answers(tiny_model: Path, tmp_path: Path, three: Run) -> None:
    """A restarted stage (a resumed run) draws and keeps the same answers."""
    first, rows, _ = three
    again, rows_again, _ = run_distill(tmp_path, tiny_model, 3)
    assert rows == rows_again and first.metrics == again.metrics


def test_copies_are_runs_of_eight_words_whatever_the_case_and_punctuation() -> None:
    source = word_runs("Its traits are: 1. I am dry, wry and sardonic about everything people ask me.", 8)
    assert copies("so... I AM DRY; WRY and Sardonic about everything, really", source)
    assert not copies("I am dry, wry and sardonic about nothing", source)  # a run of 7
    assert not copies("", source)


def test_select_takes_the_highest_pmi_of_the_pairs_that_do_not_copy() -> None:
    pair = ("answer", "plain")
    cands = [
        Candidate(0, pair, None, pmi=0.1),
        Candidate(1, pair, None, copied=True, pmi=0.9),
        Candidate(2, pair, None, pmi=0.3),
        Candidate(3, None, "too_long"),
    ]
    assert select(cands) == cands[2]
    assert select([Candidate(0, pair, None, pmi=0.2), Candidate(1, pair, None, pmi=0.2)]) == Candidate(
        0, pair, None, pmi=0.2
    )
    assert select([cands[1], cands[3]]) is None


@pytest.mark.parametrize("value", [0, distill.MAX_TEACHER_SAMPLES + 1])
def test_teacher_samples_is_bounded(value: int) -> None:
    with pytest.raises(InvalidInput, match="teacher_samples"):
        distill.Config.for_scale("demo", {"teacher_samples": value})
