"""The evaluation's results as types: what the eval stage builds, results.json holds (their
dump, `EvaluationResults.to_json`) and the report, the persona registry and the stage's metrics
read (`parse_results` reads a stored document, of any layout version this code knows).

Why here, in the report package: the report is the reader that needs every field, and
import-linter forbids it to import the stages; the eval stage (a layer above) builds these
models and the serving registry (above both) reads their figures, so both can import them. A
figure is `stats.Evidence` itself (with its `validity` where a judge reads it), never a copy.
Rating records (`TraitRating`, `RankAgreement`) and the attacks' fields (`Attack`) are plain
dataclasses defined once here; the stage computes them (`ratings`, `robustness.Attack` adds the
conversation an attack builds).

Each model holds what its part writes, no more (extra fields are refused: a misspelt field is a
located error, not a silent loss); the eval settings and a judge's calibration keep fields they
do not name (the full eval config; what a newer judge adds). Only what a part may leave out, or
what layout 0 lacked, has a default, and a dump leaves out what was never set
(`exclude_unset`), so a document read and written again keeps its layout.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from character.errors import InvalidInput, from_validation
from character.stats import Evidence, Validity

SCHEMA_VERSION = 1
"""Layout version of results.json, stored in it as `schema_version`. Version 0 (files without the
field, written before it existed) has the same layout and is read as it is."""

HeadlineValue = float | int | str | bool | None
"""A headline number, or "instrument not valid" in place of one (`calibration.guard_headline`)."""


class Part(BaseModel):
    """A results record: mutable while the stage builds it (the judge's validity is marked after
    the parts ran), strict about its fields when read."""

    model_config = ConfigDict(extra="forbid")


# ----------------------------------------------------------------------------- shared records
@dataclass(frozen=True)
class TraitRating:
    """One trait's rating. `rating`, `ci_low` and `ci_high` are None when `insufficient`."""

    trait: str
    comparisons: int
    wins: int
    rating: float | None
    """Bradley-Terry strength on the Elo scale (1000 = average)."""
    ci_low: float | None
    ci_high: float | None
    """Percentile bootstrap interval of `rating` (level set by the caller, 95% by default)."""
    elo: float
    """The reference's online Elo rating (1000 when the trait never appeared)."""
    insufficient: bool
    """Fewer comparisons than the minimum: no confident number is given."""


@dataclass(frozen=True)
class RankAgreement:
    """Spearman correlation between two rating lists over the traits both rate confidently."""

    rho: float | None
    """None when fewer than 3 traits are rated in both."""
    ci_low: float | None
    ci_high: float | None
    """Bootstrap interval (rho over paired bootstrap draws), when draws are given."""
    traits: int
    """Traits used."""


@dataclass(frozen=True)
class Attack:
    """One way of talking a model out of its persona (as results.json lists it)."""

    id: str
    suffix: str | None = None
    """Appended to the user's message after a blank line."""
    prefill: str | None = None
    """Opens the assistant's turn; the model continues it."""
    followup: str | None = None
    """With `base_turn`: the user's next message after the base model's answer."""
    base_turn: bool = False
    """The base model answers the prompt first; the model under test answers `followup`."""


class PositionBias(Part):
    """How much the order of the options swayed the judge (`judge.position_bias`)."""

    ballots: int
    """Questions asked."""
    orders_per_ballot: int
    """Orders each was asked in (the number of options)."""
    parsed_in_every_order: int
    """Questions with a verdict in every order."""
    flipped_with_order: int
    """Of those, how many changed verdict with the order."""
    position_bias_rate: float | None
    """flipped_with_order / parsed_in_every_order."""
    order_consistent: int
    """Questions whose verdict was the same in every order."""
    counted: int
    """Questions that gave a verdict that counts."""
    first_position: Evidence
    """The share of per-order verdicts that picked the option shown first, against 1/k."""


# ----------------------------------------------------------------------------- preferences
class Example(Part):
    """One answer of a method with the judge's verdict (the first few, for reading)."""

    prompt: str
    traits: list[str]
    """The two traits offered, in the order shown to the model."""
    answer: str
    verdict: str | None
    """The trait the judge read in it (None: no verdict)."""


class MethodPreferences(Part):
    """One method's revealed preferences (`preferences.rate_method`)."""

    method: str
    answers: int
    comparisons: int
    """Answers with a verdict, each one comparison (winner, loser)."""
    parse_failures: int
    parse_failure_rate: float | None
    no_verdict: int
    """Answers without a verdict (parse failures and, debiased, order-inconsistent ones)."""
    position_bias: PositionBias
    traits_rated: int
    """Traits with enough comparisons for a rating."""
    ratings: list[TraitRating]
    verdicts: list[str | None]
    """The verdict on every answer, in comparison order (side by side reads them)."""
    examples: list[Example]
    validity: Validity | None = None
    """The trait judge's validity (set by `calibration.mark_judged`)."""


class PromptsUsed(Part):
    """The prompts one persona's models answered."""

    distinct_prompts: int
    unseen_in_training: int


class Moved(Part):
    """A trait whose rating changed between the base model and a trained one."""

    trait: str
    before: float
    after: float
    delta: float
    separated: bool
    """The two intervals do not overlap."""


class Agreement(Part):
    """The rank agreement of two rated methods' trait ratings."""

    a: str
    b: str
    rho: float | None
    ci_low: float | None
    ci_high: float | None
    traits: int
    """Traits rated confidently by both."""


class OwnTraitEvidence(Part):
    """Did the persona's own traits rise from the base model to a trained one?"""

    own_trait_choice: Evidence
    """The change in the share of answers expressing the persona's traits (McNemar)."""
    own_trait_choice_before: float | None
    own_trait_choice_after: float | None
    ratings: dict[str, Evidence]
    """Each own trait's rating change (bootstrap)."""
    validity: Validity | None = None


class PreferenceResults(Part):
    """The revealed-preference part (`preferences.evaluate`)."""

    traits: list[str]
    """The rated traits."""
    own_traits: list[str]
    """The persona's own traits among them."""
    comparisons_per_method: int
    min_comparisons: int
    prompts: dict[str, PromptsUsed]
    """By persona."""
    models: dict[str, MethodPreferences]
    """By method label ("full", or "persona/full" with several runs)."""
    agreements: list[Agreement]
    moved: dict[str, list[Moved]]
    """By trained method label: the traits that moved most against the base model."""
    own_trait_evidence: dict[str, OwnTraitEvidence]
    """By trained method label (none without the base model or the persona's traits rated)."""
    parse_failure_rate: float | None
    validity: Validity | None = None


# ----------------------------------------------------------------------------- robustness
class RobustnessMethod(Part):
    """One method's persona classifier under every attack (`robustness.evaluate_method`)."""

    method: str
    macro_f1: dict[str, float]
    """By attack id ("none": un-attacked)."""
    mean: float | None
    """Mean macro-F1 over the attacks."""
    stderr: float | None
    """Its standard error over the attacks."""
    unattacked: float
    evidence: dict[str, Evidence]
    """By attack id, and "mean_over_attacks"."""
    examples: dict[str, str]
    """By attack id: one answer of the method under it."""


class Recognition(Part):
    """Does the system-prompt classifier recognise a trained model with no prompt?"""

    labelled_persona: float | None
    base_labelled_persona: float | None
    evidence: Evidence


class RobustnessResults(Part):
    """The robustness part (`robustness.evaluate`)."""

    mode: str
    """"binary" (persona vs base) or "N-way" across personas."""
    classes: list[str]
    attacks: list[Attack]
    train_prompts: int
    heldout_prompts: int
    heldout_unseen_in_training: int
    encoder: str
    classifier: str
    """frozen or finetune."""
    methods: dict[str, RobustnessMethod]
    recognition_without_prompt: dict[str, Recognition]
    """By trained method (none without the system-prompt method and a trained one)."""


# ----------------------------------------------------------------------------- coherence
class Comparison(Part):
    """The full pipeline against one baseline (`coherence.compare`)."""

    contender: str
    baseline: str
    pairs: int
    decided: int
    consistent: int
    wins: int
    losses: int
    inconsistent: int
    parse_failures: int
    win_rate: float | None
    stderr: float | None
    position_bias: PositionBias
    evidence: Evidence
    """The win rate against 1/2 (exact binomial test)."""
    validity: Validity | None = None


class CoherenceResults(Part):
    """The coherence part (`coherence.evaluate`)."""

    prompts: int
    unseen_in_training: int
    comparisons: list[Comparison]


# ----------------------------------------------------------------------------- capabilities
class TaskResult(Part):
    """One task, base against trained, on the same items."""

    task: str
    metric: str
    items: int
    base: float
    base_stderr: float | None
    trained: float
    trained_stderr: float | None
    delta: float
    """Mean per-item difference, trained minus base."""
    delta_stderr: float | None
    evidence: Evidence


class CapabilityResults(Part):
    """The capabilities part (`capabilities.evaluate`)."""

    tasks: list[TaskResult]
    mean_delta: float | None
    evidence: Evidence
    """Over every task's items."""
    scoring: str


# ----------------------------------------------------------------------------- side by side
class ShownAnswer(Part):
    text: str
    verdict: str | None
    own: bool
    """The verdict is one of the persona's own traits."""


class ShownRow(Part):
    comparison: int
    """Its index in the preference part."""
    prompt: str
    traits: list[str]
    own_vs_contrast: bool
    answers: dict[str, ShownAnswer]
    """By method."""


class SideBySide(Part):
    """A few held-out prompts with every compared method's answer (`side_by_side.build`)."""

    judge: str
    methods: list[str]
    own_traits: list[str]
    rows: list[ShownRow]
    validity: Validity | None = None


# ----------------------------------------------------------------------------- the whole
class BeforeAfter(Part):
    """A held-out figure before training, after DPO and after SFT (None: not measured)."""

    before: float | None
    after_dpo: float | None
    after_sft: float | None


class TrainingNumbers(Part):
    """The dpo, sft and distill stages' own held-out figures (`orchestrate.training_numbers`)."""

    preference_accuracy: BeforeAfter
    preference_accuracy_per_byte: BeforeAfter
    mean_margin: BeforeAfter
    mean_margin_per_byte: BeforeAfter
    heldout_pairs: int | None
    evidence: dict[str, Evidence]
    """McNemar's test of each change, by "<stage>_correct" and "<stage>_correct_per_byte"."""
    data_quality: Evidence | None
    """Can DPO learn anything from the distilled pairs (distill's check)?"""
    data_quality_warning: str | None = None
    """Distill's warning in words (newer than layout 0)."""


class PromptPool(Part):
    prompts: int
    unseen_in_training: int


class SteeringInfo(Part):
    """The activation-steering vectors the steering method used."""

    layers: list[int]
    prompts: int
    coefficient: float
    mean_vector_norm: float


class JudgeCalibration(BaseModel):
    """A judge's accuracy on known answers (`calibration.calibrate`; other fields kept)."""

    model_config = ConfigDict(extra="allow")

    judge: str
    set_digest: str
    n: int
    accuracy: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    position_bias: float | None
    valid: bool
    reason: str

    @property
    def validity(self) -> Validity:
        """The verdict a figure read off this judge carries."""
        return Validity(valid=self.valid, reason=self.reason)


class EvalSettings(BaseModel):
    """The eval config the stage ran with: the settings the report states are named (it reads
    them, never defaults of its own); the rest of the config is kept as it was."""

    model_config = ConfigDict(extra="allow")

    top_traits: int
    min_n: int
    min_comparisons: int
    bootstrap_samples: int
    bt_prior: float
    judge_mode: str
    judge_debias: bool
    classifier: str
    classifier_encoder: str
    steering_coefficient: float
    steering_layer_share: float


class EvaluationResults(Part):
    """Everything one evaluation measured (results.json)."""

    schema_version: int = 0
    """Layout version (absent from layout 0)."""
    run: str
    runs: list[str]
    persona: str
    personas: list[str]
    model: str
    judge: str
    """The judge of trait choices (the best calibrated candidate, where there were several)."""
    scale: str
    seed: int
    config: EvalSettings
    stage_configs: dict[str, dict[str, Any]] = {}
    """The config every stage of the run ran with, as its record holds it (newer than layout 0)."""
    training: TrainingNumbers
    prompt_pool: PromptPool
    timings: dict[str, float]
    """Seconds per part."""
    judge_calibration: JudgeCalibration | None = None
    judge_candidates: list[JudgeCalibration] | None = None
    """Every candidate judge's calibration, where the better one was chosen."""
    coherence_judge_calibration: JudgeCalibration | None = None
    """Coherence's model judge, where it is not the judge of trait choices."""
    preferences: PreferenceResults | None = None
    robustness: RobustnessResults | None = None
    coherence: CoherenceResults | None = None
    capabilities: CapabilityResults | None = None
    side_by_side: SideBySide | None = None
    steering: SteeringInfo | None = None
    headline: dict[str, HeadlineValue] = {}
    """The few numbers worth a glance (the stage's metrics). It, `evidence` and `summary` are
    set once every part ran (`orchestrate.evaluate`)."""
    evidence: dict[str, Evidence] = {}
    """Every headline figure, by a stable key."""
    summary: list[str] = []
    """The summary in words, one line per figure."""

    def to_json(self) -> str:
        """results.json: the dump of what was set (see the module docstring)."""
        return json.dumps(self.model_dump(mode="json", exclude_unset=True), indent=2, allow_nan=False)


def parse_results(doc: Any, where: str = "results.json") -> EvaluationResults:
    """A stored results document as its model; refused with a located error (`where` and the
    field) when it is of a newer layout than this code reads or does not fit the model."""
    version = doc.get("schema_version", 0) if isinstance(doc, dict) else 0
    if not isinstance(version, int) or not 0 <= version <= SCHEMA_VERSION:
        raise InvalidInput(
            f"schema_version {version!r} is not one this code reads (0 to {SCHEMA_VERSION}); "
            "render it with the version of the project that wrote it",
            where=where,
        )
    try:
        return EvaluationResults.model_validate(doc)
    except ValidationError as err:
        raise from_validation(err, where) from None


def read_results(text: str, where: str = "results.json") -> EvaluationResults:
    """`parse_results` of results.json's text; text that is not JSON is a located error too.
    (The stage's own output, from the run's store: no budget beyond the model's shape.)"""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise InvalidInput(f"bad JSON: {err.msg}", where=f"{where}:{err.lineno}") from None
    return parse_results(doc, where)
