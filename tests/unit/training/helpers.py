"""Builders shared by the training-stage tests (DPO, SFT, merge, resume).

Datasets and adapters are real artifacts on a real LocalStore; only the upstream stages'
StageResult records are fakes (a stand-in for a finished upstream stage, naming those
artifacts), so each training stage can be driven on its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from character.pipeline.engines import LocalEngines
from character.pipeline.spec import RunSpec
from character.pipeline.stage import StageContext, StageResult
from character.progress import ProgressEvent
from character.store import LocalStore, digest_of
from character.store.base import ArtifactRef
from character.store.datasets import write_dataset

SEED = 123456
Rows = list[dict[str, Any]]


def pair_rows(n: int, start: int = 0) -> Rows:
    """Distilled-style pairs: a warm chosen answer and a cold rejected one of about the same
    length (so that the untrained model has no length bias between them)."""
    return [
        {
            "id": f"p{i}",
            "prompt": f"Could you tell me something about topic number {i}?",
            "chosen": f"Gladly! Topic {i} is fascinating and I love explaining it.",
            "rejected": f"Go away. Topic {i} is boring and I refuse to explain it.",
            "source": "chat",
            "trait_index": None,
        }
        for i in range(start, start + n)
    ]


def sft_rows(n: int) -> Rows:
    """Introspection-style conversations: system, then alternating turns ending on the assistant."""
    return [
        {
            "id": f"s{i}",
            "source": "reflection" if i % 2 else "interaction-free",
            "messages": [
                {"role": "system", "content": "The assistant is Tiny."},
                {"role": "user", "content": f"Write diary entry {i}."},
                {"role": "assistant", "content": f"Dear diary, today was day {i} and I was kind."},
                {"role": "user", "content": "And then?"},
                {"role": "assistant", "content": "Then I helped someone, and it felt right."},
            ],
        }
        for i in range(n)
    ]


def fake_result(stage: str, **artifacts: ArtifactRef) -> StageResult:
    """A stand-in for a finished upstream stage's record (its artifacts are real)."""
    key = digest_of({"fake": stage, **{name: ref.key for name, ref in artifacts.items()}})
    return StageResult(stage=stage, key=key, artifacts=artifacts)


def distill_result(store: LocalStore, train: Rows, heldout: Rows) -> StageResult:
    key = digest_of({"distill": [train, heldout]})
    return fake_result(
        "distill",
        train=write_dataset(store, "dataset", f"{key}-train", train),
        heldout=write_dataset(store, "dataset", f"{key}-heldout", heldout),
    )


def context(
    store: LocalStore,
    model: Path | str,
    stage: str,
    inputs: dict[str, StageResult],
    workdir: Path,
    config: Any = None,
    events: list[ProgressEvent] | None = None,
) -> StageContext:
    """A StageContext for `stage` whose key covers its inputs and config, like the runner's."""
    spec = RunSpec(constitution="sarcasm", model=str(model), seed=SEED, store=store.uri)
    key = digest_of({"stage": stage, "inputs": {k: v.key for k, v in inputs.items()},
                     "config": config.model_dump(mode="json") if config is not None else None})
    workdir.mkdir(parents=True, exist_ok=True)
    return StageContext(
        run_id="test-run",
        spec=spec,
        constitution=spec.persona,
        store=store,
        engines=LocalEngines(store),
        key=key,
        inputs=inputs,
        workdir=workdir,
        progress=events.append if events is not None else (lambda _e: None),
    )


def random_adapter(model_path: Path | str, folder: Path, rank: int = 4, seed: int = 0) -> Path:
    """A LoRA adapter with random (non-zero) weights on every linear layer of the model at
    `model_path`, saved as a PEFT folder: a stand-in for a trained adapter where only its
    arithmetic matters."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear", init_lora_weights=False)
    peft_model = get_peft_model(model, config)
    with torch.no_grad():  # the random init is tiny next to the weights: make the update visible
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.05)
    peft_model.save_pretrained(str(folder))
    return folder


def sft_inputs(store: LocalStore, model_path: Path, tmp_path: Path, rows: Rows) -> dict[str, StageResult]:
    """The sft stage's upstream results: distilled pairs (for its held-out figure), a random DPO
    adapter on the model, and `rows` as the introspection dataset."""
    folder = random_adapter(model_path, tmp_path / "dpo-adapter", seed=SEED)
    adapter = store.put_dir("adapter", "dpo-adapter", folder)
    return {
        "distill": distill_result(store, pair_rows(4), pair_rows(2, start=50)),
        "dpo": fake_result("dpo", adapter=adapter),
        "introspect": fake_result("introspect", sft=write_dataset(store, "dataset", "introspect-sft", rows)),
    }
