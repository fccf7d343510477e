"""Content addresses: a stage's key changes exactly when something that decides its output does."""

from __future__ import annotations

from typing import Any

from character.pipeline.dag import STAGE_NAMES, evaluation_key, run_id_from_keys, stage_keys
from character.pipeline.spec import parse_spec
from character.store.digest import digest_of


def keys(**doc: Any) -> dict[str, str]:
    return stage_keys(parse_spec({"constitution": "sarcasm", **doc}))


def changed(a: dict[str, str], b: dict[str, str]) -> set[str]:
    return {name for name in STAGE_NAMES if a[name] != b[name]}


def test_keys_are_stable_and_the_run_id_follows_them() -> None:
    assert keys() == keys()
    spec = parse_spec({"constitution": "sarcasm"})
    assert run_id_from_keys(stage_keys(spec)) == "run-" + stage_keys(spec)["eval"][:12]


def test_a_change_reaches_its_stage_and_everything_downstream_only() -> None:
    base = keys()
    assert changed(base, keys(stages={"sft": {"lr": 1e-5}})) == {"sft", "merge", "eval"}
    assert changed(base, keys(stages={"dpo": {"lr": 1e-5}})) == {"dpo", "introspect", "sft", "merge", "eval"}
    assert changed(base, keys(judge="tiny")) == {"eval"}
    assert changed(base, keys(seed=1)) == set(STAGE_NAMES)
    # where artifacts live is not part of their address
    assert changed(base, keys(store="/elsewhere")) == set()


def test_an_endpoint_teacher_is_addressed_by_what_decides_its_answers() -> None:
    def teacher(**endpoint: Any) -> dict[str, str]:
        return keys(teacher="big", endpoints={"big": {"base_url": "http://a:8000/v1", **endpoint}})

    first = teacher()
    assert changed(keys(teacher="big"), first) >= {"prompts", "distill"}  # a served model is not a local one
    assert changed(first, teacher(base_url="http://b:8000/v1")) >= {"prompts", "distill"}
    assert changed(first, teacher(extra_body={"top_k": 0})) >= {"prompts", "distill"}
    assert changed(first, teacher(concurrency=64, timeout_s=5, api_key_env="OTHER_KEY")) == set()



def evaluation(eval_key: str = "e" * 64, parts: tuple[str, ...] = ("robustness",),
               others: tuple[str, ...] = ("f" * 64,), classifier: str = "frozen") -> str:
    return evaluation_key(eval_key, list(parts), list(others), classifier)


def test_an_evaluation_is_addressed_by_its_run_parts_other_runs_and_classifier() -> None:
    variants = [evaluation(), evaluation(eval_key="0" * 64), evaluation(parts=("robustness", "preferences")),
                evaluation(others=()), evaluation(classifier="finetune")]
    assert len(set(variants)) == len(variants)
    assert evaluation() == variants[0]


def test_an_evaluations_key_is_the_one_reports_were_stored_under_before() -> None:
    """`oct eval` stored reports under this digest before `evaluation_key` was factored out; a
    changed document would leave every stored report unfound (and recomputed)."""
    assert evaluation() == digest_of({"eval": "e" * 64, "parts": ["robustness"], "runs": ["f" * 64],
                                      "classifier": "frozen"})
