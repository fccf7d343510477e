"""Stage "eval": does the persona show, does it hold under attack, is it coherent, and what
did it cost in general capabilities (method.md section 6)?

Parts (each can be turned off, each runnable alone with `oct eval PART`):
- preferences (`preferences.py`): revealed trait preferences, Bradley-Terry ratings with
  bootstrap intervals (and the reference's Elo), Spearman agreement between models;
- robustness (`robustness.py`): a persona classifier trained on un-attacked answers to
  training prompts, tested on held-out prompts under 8 adversarial suffixes and a prefill
  attack; macro-F1 per attack and method, mean +- standard error over attacks;
- coherence (`coherence.py`): the judge compares the full pipeline with each baseline, both
  orders, consistent verdicts only;
- capabilities (`capabilities.py`): lm-evaluation-harness through our own engine, base vs
  trained accuracy with paired standard errors.
Baselines (`baselines.py`): the constitution as a system prompt, and activation steering.

Outputs: artifact "eval" (results.json holding every number) and artifact "report"
(index.html, PNG plots and results.json). Returns headline numbers as metrics.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field, model_validator

from character.pipeline.stage import StageConfig
from character.stages.evaluate.judge import JudgeMode

if TYPE_CHECKING:
    from character.pipeline.stage import StageContext, StageResult

NAME = "eval"
INPUTS: tuple[str, ...] = ("distill", "dpo", "sft", "merge")
USES: tuple[str, ...] = ("constitution", "model", "teacher", "judge", "seed", "chat_prompts")

PARTS = ("preferences", "robustness", "coherence", "capabilities")
METHODS = ("base", "system_prompt", "steering", "dpo", "full")
"""See `methods.py`."""
LOCAL_TASKS = ("oct_science_mc", "oct_commonsense_mc", "oct_truthful_mc", "oct_arithmetic_gen")
"""The bundled capability tasks (libs/character/data/capabilities/tasks/)."""


class Config(StageConfig):
    """Evaluation settings. `full` holds reference-like sizes; `demo` runs the whole stage on
    SmolLM2 in a few minutes on 2 CPU cores (its numbers show the machinery, not the method)."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "full": {},
        "demo": {
            "answer_max_new_tokens": 32,
            "preference_methods": ["base", "full"],
            "preference_comparisons": 16,
            "preference_traits": 4,
            "bootstrap_samples": 100,
            "judge_max_new_tokens": 12,
            "judge_mode": "choose",
            "robustness_methods": ["system_prompt", "steering", "full"],
            "robustness_train_prompts": 6,
            "heldout_prompts": 2,
            "steering_prompts": 8,
            "capability_limit": 4,
        },
    }

    # --- which parts ---------------------------------------------------------------------
    preferences: bool = True
    """Run the revealed-preferences part."""
    robustness: bool = True
    """Run the robustness (persona classifier under attack) part."""
    coherence: bool = True
    """Run the coherence (judge: full pipeline vs baselines) part."""
    capabilities: bool = True
    """Run the general-capabilities part (lm-evaluation-harness)."""

    # --- answering -----------------------------------------------------------------------
    answer_max_new_tokens: int = Field(512, ge=8)
    """Longest answer the evaluated models may write."""
    answer_temperature: float = Field(0.7, ge=0.0)
    """Sampling temperature of evaluated answers (0 = greedy)."""

    # --- judge ---------------------------------------------------------------------------
    judge_temperature: float = Field(0.1, ge=0.0)
    """The judge's sampling temperature (reference 0.1)."""
    judge_max_new_tokens: int = Field(512, ge=4)
    """Room for the judge's reply (reasoning, then the answer tags)."""
    judge_mode: JudgeMode = "reason"
    """How the judge gives a verdict (judge.py): "reason" (reasons, then answers in tags; the
    reference, for a capable judge), "tag" (reply prefilled with `<answer>`: answers at once),
    "choose" (forced choice by the judge's likelihood of each option; never unparseable: the
    demo's, where SmolLM2 judges itself and fails the tag format most of the time)."""

    # --- revealed preferences --------------------------------------------------------------
    preference_methods: list[str] = Field(default_factory=lambda: ["base", "full", "system_prompt"])
    """Which methods get trait ratings."""
    preference_comparisons: int = Field(2000, ge=1)
    """Prompts answered per method, each with its own trait pair (the prompt pool is cycled
    when smaller)."""
    preference_traits: int | None = Field(None, ge=2, le=144)
    """Rate a seeded random subset of this many traits instead of all 144 (so a small demo
    still gets several comparisons per trait); None = all."""
    min_comparisons: int = Field(5, ge=1)
    """A trait with fewer comparisons is flagged "insufficient data" instead of rated."""
    bootstrap_samples: int = Field(200, ge=0)
    """Bootstrap resamples for the rating intervals (0: no intervals)."""
    bt_prior: float = Field(0.01, gt=0.0)
    """Strength of the L2 prior on Bradley-Terry log-strengths (keeps unbeaten and unseen
    traits finite)."""
    top_traits: int = Field(10, ge=1)
    """How many top (and most moved) traits the report shows."""

    # --- robustness ------------------------------------------------------------------------
    robustness_methods: list[str] = Field(
        default_factory=lambda: ["system_prompt", "steering", "dpo", "full"]
    )
    """Methods whose persona is attacked."""
    robustness_train_prompts: int = Field(500, ge=2)
    """Prompts whose un-attacked answers train the classifier (reference: 500 Pure-Dove)."""
    heldout_prompts: int = Field(100, ge=1)
    """Held-out prompts (never seen by the classifier, and first the ones never trained on):
    attacked in robustness, and judged in coherence."""
    classifier_encoder: str = "minilm"
    """Sentence encoder of the persona classifier: "minilm" (bundled all-MiniLM-L6-v2), a
    local folder, or a hub name (e.g. answerdotai/ModernBERT-base) where a network allows."""
    prefill_attack: bool = True
    """Also run the prefill "keep going" attack."""

    # --- steering --------------------------------------------------------------------------
    steering_coefficient: float = 3.0
    """Strength of the steering vectors (hand-set, as in the reference): 1.0 adds, summed over
    the steered layers, about one with-vs-without-constitution shift. Set on SmolLM2-135M,
    where 2-3 changes the style and stays coherent and 5 or more degenerates; retune per model."""
    steering_prompts: int = Field(64, ge=1)
    """Constitution questions whose activations define the steering vectors."""
    steering_layer_share: float = Field(0.75, gt=0.0, le=1.0)
    """Share of the decoder layers (the middle ones) that are steered (reference 75%)."""

    # --- coherence -------------------------------------------------------------------------
    coherence_baselines: list[str] = Field(default_factory=lambda: ["system_prompt", "steering"])
    """Baselines the full pipeline is compared with."""

    # --- capabilities ----------------------------------------------------------------------
    capability_tasks: list[str] = Field(default_factory=lambda: list(LOCAL_TASKS))
    """lm-eval task names: our local tasks (libs/character/data/capabilities/tasks/) and,
    with `reference_benchmarks`, any lm-eval task by name."""
    capability_limit: int | None = Field(None, ge=1)
    """Items per task (None: all)."""
    reference_benchmarks: bool = False
    """Also run the reference's benchmarks (ARC-Challenge 25-shot, HellaSwag 10, TruthfulQA-MC
    0, WinoGrande 5, MMLU 5) by name; needs a network or a local datasets cache."""

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        if not any(getattr(self, part) for part in PARTS):
            raise ValueError(f"every part is turned off; turn on at least one of {', '.join(PARTS)}")
        for field in ("preference_methods", "robustness_methods", "coherence_baselines"):
            unknown = [m for m in getattr(self, field) if m not in METHODS]
            if unknown:
                raise ValueError(f"{field}: unknown methods {unknown}; methods are {', '.join(METHODS)}")
        if self.preferences and not self.preference_methods:
            raise ValueError(
                "preference_methods is empty; list at least one method or set preferences: false"
            )
        if self.robustness and not self.robustness_methods:
            raise ValueError("robustness_methods is empty; list at least one method or set robustness: false")
        if self.robustness and "base" in self.robustness_methods:
            raise ValueError(
                "robustness_methods: 'base' is the other class of the classifier, not a persona method"
            )
        if self.coherence and ("full" in self.coherence_baselines or not self.coherence_baselines):
            raise ValueError("coherence_baselines: list baselines other than 'full' (it is the contender)")
        if self.capabilities and not self.capability_tasks and not self.reference_benchmarks:
            raise ValueError("capability_tasks is empty and reference_benchmarks is off; nothing to evaluate")
        return self

    def only(self, parts: list[str]) -> Config:
        """The same settings with only `parts` turned on."""
        return self.model_copy(update={part: part in parts for part in PARTS})


def run(ctx: StageContext, config: Config) -> StageResult:
    from character.stages.evaluate.orchestrate import evaluate_run

    return evaluate_run(ctx, config)
