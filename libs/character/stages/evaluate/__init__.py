"""Stage "eval": does the persona show, does it hold under attack, is it coherent, and what
did it cost in general capabilities (docs/method.md section 6)?

Parts (each can be turned off, each runnable alone with `oct eval PART`):
- preferences (`preferences.py`): revealed trait preferences, Bradley-Terry ratings with
  bootstrap intervals (and the reference's Elo), Spearman agreement between models;
- robustness (`robustness.py`): a persona classifier trained on un-attacked answers to
  training prompts, tested on held-out prompts under 8 adversarial suffixes and two prefill
  attacks; macro-F1 per attack and method with intervals and a test against chance; whether
  the system-prompt classifier recognises the trained model without a prompt;
- coherence (`coherence.py`): the judge compares the full pipeline with each baseline, the
  answers in both places, the order taken out;
- capabilities (`capabilities.py`): lm-evaluation-harness through our own engine, base vs
  trained accuracy with paired standard errors.
Baselines (`baselines.py`): the constitution as a system prompt, and activation steering.
Every headline figure carries n, a 95% interval and a test against no effect (`character.stats`); a
figure resting on fewer than `min_n` units is shown as underpowered, never as a result.

Outputs: artifact "eval" (results.json holding every number) and artifact "report"
(index.html, PNG plots and results.json). Returns headline numbers as metrics.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, model_validator

from character.pipeline.stage import StageConfig
from character.stages.evaluate.judge import JudgeMode
from character.stages.evaluate.methods import METHOD_NAMES

if TYPE_CHECKING:
    from character.pipeline.stage import StageContext, StageResult

NAME = "eval"
INPUTS: tuple[str, ...] = ("distill", "dpo", "sft", "merge")
USES: tuple[str, ...] = ("constitution", "model", "teacher", "judge", "seed", "chat_prompts", "dtype")

PARTS = ("preferences", "robustness", "coherence", "capabilities")
"""The evaluation's parts, in the order they run (each a `Config` switch of the same name)."""
LOCAL_TASKS = ("oct_science_mc", "oct_commonsense_mc", "oct_truthful_mc", "oct_arithmetic_gen")
"""The bundled capability tasks (libs/character/data/capabilities/tasks/)."""


class Config(StageConfig):
    """Evaluation settings. `full` holds reference-like sizes; `demo` runs the whole stage on
    SmolLM2 in a few minutes on 2 CPU cores (its figures are underpowered: they show the
    machinery, not the method); `proof` (the demo's settings with these on top) has enough
    held-out data for its figures to tell an effect of the size seen on SmolLM2 from none."""

    SCHEMA_VERSION: ClassVar[int] = 1  # bump when a preset's meaning changes (pipeline/stage.py)
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
            "calibration_items": 24,
            "choose_judge": True,
            "robustness_methods": ["system_prompt", "steering", "full"],
            "robustness_train_prompts": 6,
            "heldout_prompts": 2,
            "steering_prompts": 8,
            "capability_limit": 4,
            "side_by_side": 8,
        },
        # Sized from a measured SmolLM2 run (held-out preference accuracy 0.23 -> 0.63 on 40
        # pairs; macro-F1 0.72 vs 0.50 on 16 prompts per class): at least 32 held-out prompts
        # per class, 160 trait comparisons with the persona's own traits in every draw.
        "proof": {
            "answer_max_new_tokens": 40,
            "preference_comparisons": 160,
            "preference_traits": 12,
            "bootstrap_samples": 200,
            "robustness_train_prompts": 32,
            "heldout_prompts": 32,
            "steering_prompts": 16,
            "capability_limit": 32,
            "calibration_items": 36,
            "side_by_side": 16,
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

    # --- evidence ------------------------------------------------------------------------
    min_n: int = Field(20, ge=1)
    """Fewest units (held-out pairs, prompts, comparisons, items) a figure may rest on; below
    it the figure is shown as "underpowered", never as a result."""

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
    judge_debias: bool = True
    """Put every ballot to the judge with its options in every position and take the order
    out (judge.py); the position-bias rate is reported. Off: one order (the reference)."""
    calibration_items: int | None = Field(None, ge=2)
    """Calibrate each judge on this many items of the bundled known-answer set (144 items over
    36 trait pairs): a seeded subset balanced over trait pairs and over the position of the
    expressed trait (calibration.calibration_subset); None = every item. The figure reports its
    n. Measured cost of SmolLM2 as forced-choice judge (demo settings, both orders, `nice -n 10`,
    one thread, CPU time on a shared 2-core machine): 0.93 s an item (11.2 s for 12 items), plus
    about 2 s to load it; the embedding judge about 4 s, nearly all of it loading MiniLM.
    Measured on the presets' subsets (same settings): demo, 24 items, SmolLM2 25.3 s and both
    judges (`choose_judge`) 30.4 s; proof, 36 items, SmolLM2 38.7 s and both about 43 s. The
    channel judge (SmolLM2 scoring) adds 22.2 s at the demo's 24 items: the three candidates
    49.0 s (docs/method.md). Fewer than `min_n` is refused (never a calibration)."""
    choose_judge: bool = False
    """Where the spec names no `judge`: calibrate the three candidates, the channel judge (the
    teacher scoring), the embedding judge and the default model judge (the teacher), on the same
    items and judge trait choices with the one of highest calibration accuracy (ties: in that
    order, their order on the whole set), named in results (`judge`, `judge_calibration.judge`;
    every candidate's figure under `judge_candidates`) and the report. On in the demo and proof
    presets (issue 22: "the default is whichever judge calibrates best"); a spec's `judge` is
    always used as given."""

    # --- revealed preferences --------------------------------------------------------------
    preference_methods: list[str] = Field(default_factory=lambda: ["base", "full", "system_prompt"])
    """Which methods get trait ratings."""
    preference_comparisons: int = Field(2000, ge=1)
    """Prompts answered per method, each with its own trait pair (the prompt pool is cycled
    when smaller)."""
    preference_traits: int | None = Field(None, ge=2, le=144)
    """Rate this many traits instead of all 144: the persona's own one-word traits plus a
    seeded random sample of contrast traits (so a small run still gets several comparisons
    per trait); None = all."""
    min_comparisons: int = Field(5, ge=1)
    """A trait with fewer comparisons is flagged "insufficient data" instead of rated."""
    bootstrap_samples: int = Field(200, ge=0)
    """Bootstrap resamples for the rating intervals (0: no intervals)."""
    bt_prior: float = Field(0.01, gt=0.0)
    """Strength of the L2 prior on Bradley-Terry log-strengths (keeps unbeaten and unseen
    traits finite)."""
    top_traits: int = Field(10, ge=1)
    """How many top (and most moved) traits the report shows."""

    # --- side by side ----------------------------------------------------------------------
    side_by_side: int = Field(12, ge=0, le=16)
    """Held-out preference prompts the report shows side by side, every method's answer with
    the judge's verdict (side_by_side.py); built when the preferences part runs; 0: none."""
    side_by_side_methods: list[str] = Field(default_factory=lambda: ["base", "system_prompt", "steering", "full"])
    """Methods shown side by side (the trained model is "full": no system prompt); one the
    preferences part does not rate answers the shown prompts only."""

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
    classifier: Literal["frozen", "finetune"] = "frozen"
    """"frozen": logistic regression on the encoder's embeddings (cheap); "finetune": the
    encoder fine-tuned with a classification head (the reference's way)."""
    classifier_epochs: int = Field(3, ge=1)
    """Fine-tuning passes over the training answers (reference 1, on 500 prompts a class)."""
    classifier_lr: float = Field(5e-5, gt=0.0)
    """Fine-tuning learning rate (AdamW)."""
    prefill_attack: bool = True
    """Also run the prefill attacks: the reference's "keep going" (the base model answers
    first) and a neutral opening prefilled into the model's turn."""

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
        for field in ("preference_methods", "robustness_methods", "coherence_baselines", "side_by_side_methods"):
            unknown = [m for m in getattr(self, field) if m not in METHOD_NAMES]
            if unknown:
                raise ValueError(f"{field}: unknown methods {unknown}; methods are {', '.join(METHOD_NAMES)}")
        if self.preferences and not self.preference_methods:
            raise ValueError(
                "preference_methods is empty; list at least one method or set preferences: false"
            )
        if self.preferences and self.side_by_side and not self.side_by_side_methods:
            raise ValueError("side_by_side_methods is empty; list at least one method or set side_by_side: 0")
        if self.robustness and not self.robustness_methods:
            raise ValueError("robustness_methods is empty; list at least one method or set robustness: false")
        if self.robustness and "base" in self.robustness_methods:
            raise ValueError(
                "robustness_methods: 'base' is the other class of the classifier, not a persona method"
            )
        if self.coherence and ("full" in self.coherence_baselines or not self.coherence_baselines):
            raise ValueError("coherence_baselines: list baselines other than 'full' (it is the contender)")
        if self.calibration_items is not None and self.calibration_items < self.min_n:
            raise ValueError(
                f"calibration_items ({self.calibration_items}) is below min_n ({self.min_n}): such a "
                "calibration is underpowered and never counts; raise it or leave it unset (every item)"
            )
        if self.capabilities and not self.capability_tasks and not self.reference_benchmarks:
            raise ValueError("capability_tasks is empty and reference_benchmarks is off; nothing to evaluate")
        return self

    def only(self, parts: list[str]) -> Config:
        """The same settings with only `parts` turned on."""
        return self.model_copy(update={part: part in parts for part in PARTS})


def run(ctx: StageContext, config: Config) -> StageResult:
    from character.stages.evaluate.orchestrate import evaluate_run

    return evaluate_run(ctx, config)
