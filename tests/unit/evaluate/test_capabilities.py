"""The lm-eval adapter scores our local tasks exactly as a manual argmax over Engine.score."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from character.stages.evaluate.capabilities import EngineLM, cut_at, paired_delta, run_tasks, tasks_dir


def rows(file: str) -> list[dict]:
    path = tasks_dir().parent / file
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_multiple_choice_accuracy_equals_manual_argmax_over_engine_scores(tiny_model: Path) -> None:
    from character.models import get_engine

    engine = get_engine("transformers", str(tiny_model))
    limit = 8
    result = run_tasks(EngineLM(engine), ["oct_science_mc"], limit=limit)["oct_science_mc"]
    manual = {}
    for i, doc in enumerate(rows("science_mc.jsonl")[:limit]):
        context = [{"role": "user", "content": f"Question: {doc['question']}\nAnswer:"}]
        scores = engine.score([context] * len(doc["choices"]), doc["choices"])
        per_byte = [s / len(c) for s, c in zip(scores, doc["choices"], strict=True)]  # lm-eval's acc_norm
        manual[i] = float(max(range(len(per_byte)), key=per_byte.__getitem__) == doc["answer"])
    assert result["metric"] == "acc_norm" and result["items"] == limit
    assert result["per_item"] == manual
    assert result["accuracy"] == pytest.approx(sum(manual.values()) / limit)


def test_generation_tasks_use_greedy_answers_cut_at_stop_strings(tiny_model: Path) -> None:
    from character.models import get_engine

    engine = get_engine("transformers", str(tiny_model))
    lm = EngineLM(engine)
    request = SimpleNamespace(args=("Question: 2 + 2?\nAnswer:", {"until": ["\n\n"], "max_gen_toks": 6}))
    (answer,) = lm.generate_until([request])  # type: ignore[list-item]
    from character.models.engine import SamplingParams

    greedy = engine.generate(
        [[{"role": "user", "content": "Question: 2 + 2?\nAnswer:"}]],
        SamplingParams(max_new_tokens=6, temperature=0.0),
    )[0].text
    assert answer == cut_at(greedy, ["\n\n"])
    result = run_tasks(lm, ["oct_arithmetic_gen"], limit=2)["oct_arithmetic_gen"]
    assert result["metric"] == "exact_match" and result["items"] == 2


def test_cut_at_and_paired_delta() -> None:
    assert cut_at("12\n\nmore", ["\n\n"]) == "12"
    assert cut_at("no stop here", ["\n\n", "###"]) == "no stop here"
    assert cut_at("a###b\n\nc", ["\n\n", "###"]) == "a"
    delta, stderr = paired_delta({0: 1.0, 1: 0.0, 2: 1.0, 3: 1.0}, {0: 1.0, 1: 1.0, 2: 0.0, 3: 1.0})
    assert delta == 0.0 and stderr == pytest.approx((2 / 3 / 4) ** 0.5)  # diffs 0, 1, -1, 0


def test_rolling_loglikelihood_says_it_is_unsupported() -> None:
    lm = EngineLM(engine=None)  # type: ignore[arg-type]
    with pytest.raises(NotImplementedError, match="perplexity"):
        lm.loglikelihood_rolling([])
