"""Trained runs for the serving tests: a run record in a real store whose dpo, sft and merge
stages succeeded with real artifacts (random non-zero LoRA adapters on the tiny model and the
model the merge stage folds from them), without running the training stages."""

from __future__ import annotations

import uuid
from pathlib import Path

from character.controller.executor import StageState
from character.controller.runs import RunRecord, new_run, save_run, set_result
from character.models.loading import load_model
from character.models.refs import resolve_model
from character.pipeline.spec import parse_spec
from character.stages import merge
from character.stats import Evidence
from character.store.base import Store

from tests.unit.training.helpers import fake_result, random_adapter

BASE = "tiny"


def trained_run(store: Store, folder: Path, seed: int, owner: str = "", base: str = BASE) -> RunRecord:
    """A run on `store` with a trained persona on `base` (adapters from `seed`), saved as its
    record."""
    tag = uuid.uuid4().hex[:8]
    spec = parse_spec({"constitution": "sarcasm", "model": base, "store": store.uri, "seed": seed})
    record = new_run(spec, "inline", run_id=f"run-{seed}-{tag}")
    record.owner = owner
    dpo = random_adapter(resolve_model(base), folder / f"dpo-{tag}", rank=4, seed=seed)
    sft = random_adapter(resolve_model(base), folder / f"sft-{tag}", rank=8, seed=seed + 1000)
    refs = {"dpo": store.put_dir("adapter", f"dpo-{tag}", dpo), "sft": store.put_dir("adapter", f"sft-{tag}", sft)}
    base_model, tokenizer = load_model(base, shared=False)
    merged_dir = folder / f"merged-{tag}"
    merge.merged_model(base_model, dpo, sft, merge.Config()).save_pretrained(merged_dir)
    tokenizer.save_pretrained(merged_dir)
    model = store.put_dir("model", f"merged-{tag}", merged_dir)
    for name, stage in record.stages.items():
        stage.transition(StageState.RUNNING)
        if name in refs:
            set_result(stage, fake_result(name, adapter=refs[name]), cached=False)
        elif name == "merge":
            set_result(stage, fake_result(name, model=model), cached=False)
        else:
            set_result(stage, fake_result(name), cached=False)
    record.refresh()
    save_run(store, record)
    return record


def evaluated(store: Store, run_id: str, folder: Path, figures: dict[str, Evidence]) -> None:
    """Store an evaluation of `run_id` whose headline figures are `figures` (the rest of its
    results synthetic), as the eval stage points a run at it (record `evals/RUN`)."""
    from character.stages.evaluate.orchestrate import RECORD_PREFIX, RESULTS_FILE

    from tests.unit.evaluate.synthetic import results

    data = results()
    data.evidence = figures
    folder.mkdir()
    (folder / RESULTS_FILE).write_text(data.to_json())
    key = f"eval-{uuid.uuid4().hex[:8]}"
    store.put_dir("eval", key, folder)
    store.put_record(f"{RECORD_PREFIX}{run_id}", {"eval": key})
