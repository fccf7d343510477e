"""Stage "merge": the final model, with the DPO and SFT adapters folded into the weights
(docs/method.md section 5), saved as a plain transformers folder with its tokenizer.

Modes:
- "fold" (default, exact): base + DPO adapter merged, then + SFT adapter merged; the result
  computes exactly what base + DPO merged + SFT adapter computed during SFT.
- "weighted": peft's weighted combination (`add_weighted_adapter`, "cat": the exact sum of
  each adapter's update times its weight) applied to the base, as in the reference release
  (DPO x1.0 + SFT x0.25). An approximation: the SFT adapter was trained on the DPO-merged
  weights, so scaling its update gives a model no training step produced (with both weights
  1.0 it equals "fold", since LoRA updates add).

Output: model "model" (config, safetensors weights, tokenizer). Metrics: parameter count,
seconds, mode and weights.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import model_validator

from character.pipeline.stage import StageConfig, StageContext, StageResult

NAME = "merge"
INPUTS: tuple[str, ...] = ("dpo", "sft")
USES: tuple[str, ...] = ("model",)


class Config(StageConfig):
    SCHEMA_VERSION: ClassVar[int] = 1  # bump when a preset's meaning changes (pipeline/stage.py)
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"demo": {}, "full": {}}

    mode: Literal["fold", "weighted"] = "fold"
    """"fold": merge DPO then SFT into the weights (exact); "weighted": a weighted sum of the
    two adapters' updates on the base (the reference release's way, an approximation)."""
    dpo_weight: float = 1.0
    """Weight of the DPO adapter's update in "weighted" mode (reference release 1.0)."""
    sft_weight: float = 0.25
    """Weight of the SFT adapter's update in "weighted" mode (reference release 0.25)."""

    @model_validator(mode="after")
    def _weights_need_weighted_mode(self) -> Config:
        given = sorted({"dpo_weight", "sft_weight"} & self.model_fields_set)
        if self.mode == "fold" and given:
            raise ValueError(f"{', '.join(given)} only apply to mode 'weighted' (fold adds both adapters)")
        return self


def merged_model(base: Any, dpo_adapter: Path, sft_adapter: Path, config: Config) -> Any:
    """`base` (a transformers model, consumed) with both adapters merged into its weights."""
    from peft import PeftModel

    if config.mode == "fold":
        model = PeftModel.from_pretrained(base, dpo_adapter).merge_and_unload()
        return PeftModel.from_pretrained(model, sft_adapter).merge_and_unload()
    model = PeftModel.from_pretrained(base, dpo_adapter, adapter_name="dpo")
    model.load_adapter(sft_adapter, adapter_name="sft")
    model.add_weighted_adapter(["dpo", "sft"], [config.dpo_weight, config.sft_weight],
                               adapter_name="combined", combination_type="cat")
    model.set_adapter("combined")
    return model.merge_and_unload(adapter_names=["combined"])


def run(ctx: StageContext, config: Config) -> StageResult:
    from character.models.loading import load_model

    started = time.monotonic()
    adapters = {name: ctx.store.materialize("adapter", ctx.inputs[name].artifacts["adapter"].key)
                for name in ("dpo", "sft")}
    base, tokenizer = load_model(ctx.spec.model, shared=False, progress=ctx.progress)
    model = merged_model(base, adapters["dpo"], adapters["sft"], config)
    with tempfile.TemporaryDirectory(prefix="oct-merged-") as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        meta = {"stage": NAME, "base_model": ctx.spec.model, "mode": config.mode}
        ref = ctx.store.put_dir("model", ctx.key, Path(tmp), meta=meta)
    metrics: dict[str, Any] = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "mode": config.mode,
        "seconds": round(time.monotonic() - started, 2),
    }
    if config.mode == "weighted":
        metrics["weights"] = {"dpo": config.dpo_weight, "sft": config.sft_weight}
    return StageResult(stage=NAME, key=ctx.key, artifacts={"model": ref}, metrics=metrics)
