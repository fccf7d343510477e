"""The run spec: one YAML file that says what to train, on what, at which scale.

Everything is validated before any work starts: unknown keys, impossible values and
per-stage overrides (checked against each stage's own config) are refused with the
key and the reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from character.constitution import Constitution, resolve_constitution
from character.errors import InvalidInput, from_validation
from character.home import oct_home
from character.models.endpoint import Endpoint
from character.pipeline.catalog import STAGE_NAMES
from character.pipeline.configs import ResolvedConfig, resolve_configs
from character.pipeline.publish import PublishTarget
from character.yamldoc import read_mapping

EMBEDDING_JUDGE = "embedding"
"""`judge: embedding` names the sentence-embedding judge of trait choices
(stages/evaluate/trait_judges.py) instead of a model."""
CHANNEL_JUDGE = "channel"
"""`judge: channel` names the noisy-channel judge of trait choices (stages/evaluate/channel_judge.py):
the teacher scores each reply under each trait instead of being asked which trait it shows."""
REPLY_JUDGES = (EMBEDDING_JUDGE, CHANNEL_JUDGE)
"""The judges of trait choices that read a reply rather than answer a question: no model's name,
and pairwise coherence keeps the teacher as its model judge when one of them is the judge."""


def default_store_uri() -> str:
    """The embedded default store: a folder under OCT_HOME."""
    return str(oct_home() / "store")


class RunSpec(BaseModel):
    """A character-training run."""

    model_config = ConfigDict(extra="forbid")

    constitution: str | Constitution
    """A bundled persona name, a constitution file path, or the constitution itself (inline)."""
    model: str = "smollm2"
    """The student: a bundled name (smollm2, tiny), a local folder, s3:// URI or hub name."""
    teacher: str | None = None
    """The model that writes chosen answers; default: the student prompted with the
    constitution (context distillation)."""
    judge: str | None = None
    """The model that rates evaluation outputs (a bundled name, a local folder, an endpoint), or
    "embedding" for the sentence-embedding judge of trait choices, or "channel" for the
    noisy-channel judge (the teacher's likelihood of the reply under each trait); with either,
    pairwise coherence keeps the teacher as its judge. Default: the teacher, or at the demo and
    proof scales whichever of the teacher, the embedding and the channel judge calibrates best
    (the eval config's `choose_judge`)."""
    engine: Literal["transformers", "vllm"] = "transformers"
    """Generation backend for the student and teacher."""
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    """Precision of the engines that generate and score on this machine (student, teacher, judge;
    not endpoints, not training, which keeps float32 on a CPU): `auto` = bfloat16 on a GPU,
    float32 on a CPU. `bfloat16` on a CPU with AVX512-BF16 or AMX generates ~1.5x faster, but
    its proof runs did not keep every verdict of float32 (docs/proof-runs.md, "Precision"):
    compare its figures (`oct compare`) before relying on them. Part of the address of every
    stage that generates or scores."""
    endpoints: dict[str, Endpoint] = {}
    """Models served over an OpenAI-compatible HTTP API, by the name `teacher` or `judge` use,
    e.g. {"big-judge": {"base_url": "http://vllm-judge:8000/v1", "tokenizer": "..."}}."""
    scale: Literal["demo", "proof", "full"] = "demo"
    """Preset sizes: `demo` runs on a 2-core CPU in minutes (shows the machinery; its figures are
    underpowered); `proof` holds enough held-out data to tell a real effect from noise (about 35
    minutes with SmolLM2 on 2 idle CPU cores); `full` = the reference numbers."""
    seed: int = Field(123456, ge=0)
    """Seed for sampling, data splits and training (reference: 123456)."""
    chat_prompts: str = "bundled"
    """General chat prompts: "bundled" (shipped with the library), a JSONL/Parquet path, an
    s3:// URI, or a hub data set name (LIMA, WildChat, Pure-Dove) where a network allows."""
    store: str = Field(default_factory=default_store_uri)
    """Where artifacts and run records live: a local folder or s3://bucket/prefix.
    Not part of any artifact's address."""
    stages: dict[str, dict[str, Any]] = {}
    """Per-stage overrides of the scale preset, e.g. {"dpo": {"lr": 1e-5}}."""
    _configs: dict[str, ResolvedConfig] | None = PrivateAttr(default=None)
    """Every stage's config, resolved once from `scale` and `stages` (or the recorded ones, given
    by `with_configs`). Copies share it: change `scale` or `stages` by parsing a new spec, not by
    `model_copy(update=...)`."""
    publish: PublishTarget | None = None
    """Publish the run as a named persona once it has succeeded, e.g. {name: sarcasm, tag:
    latest} (`oct personas trained` lists it; `oct chat NAME` talks to it). Not part of any
    artifact's address: adding it to a finished run's spec publishes without rerunning."""

    @field_validator("stages")
    @classmethod
    def _known_stages(cls, stages: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name in stages:
            if name not in STAGE_NAMES:
                raise ValueError(f"unknown stage {name!r}; stages are: {', '.join(STAGE_NAMES)}")
        return stages

    @model_validator(mode="after")
    def _reply_judges_are_not_endpoints(self) -> RunSpec:
        for name in REPLY_JUDGES:
            if name in self.endpoints:
                raise ValueError(f"endpoints: {name!r} names the {name} judge; call the endpoint otherwise")
        return self

    @model_validator(mode="after")
    def _student_is_local(self) -> RunSpec:
        if self.model in self.endpoints:
            raise ValueError(
                f"model {self.model!r} is an HTTP endpoint, but the student is trained here: give a "
                "local model, and use endpoints for the teacher or the judge"
            )
        return self

    # ------------------------------------------------------------------ derived values
    @property
    def teacher_model(self) -> str:
        return self.teacher or self.model

    @property
    def judge_model(self) -> str:
        return self.judge or self.teacher_model

    @property
    def model_judge(self) -> str:
        """The model that judges what only a model can (pairwise coherence): the judge, or the
        teacher when the judge is the embedding or the channel judge (the channel judge's scorer)."""
        return self.teacher_model if self.judge_model in REPLY_JUDGES else self.judge_model

    def resolved(self) -> RunSpec:
        """The same spec with the constitution loaded inline, so the spec alone is enough
        to run any stage anywhere (a Kubernetes Job has no access to the submitter's files)."""
        if isinstance(self.constitution, Constitution):
            return self
        return self.model_copy(update={"constitution": resolve_constitution(self.constitution)})

    @property
    def persona(self) -> Constitution:
        spec = self.resolved()
        assert isinstance(spec.constitution, Constitution)
        return spec.constitution

    def stage_configs(self) -> dict[str, ResolvedConfig]:
        """Every stage's config at this scale with its overrides, resolved on first use and kept:
        a run's record stores these, and a spec read from a record carries the recorded ones."""
        if self._configs is None:
            self._configs = resolve_configs(self.scale, self.stages)
        return self._configs

    def with_configs(self, configs: Mapping[str, ResolvedConfig]) -> RunSpec:
        """This spec carrying `configs` (a run record's) instead of resolving its own."""
        spec = self.model_copy()
        spec._configs = dict(configs)
        return spec

    def stage_config(self, stage: str) -> Any:
        """The config of one stage, built from its resolved (or recorded) values, never from the
        presets again."""
        configs = self.stage_configs()
        if stage not in configs:  # a run recorded by older code whose config could not be recovered
            raise InvalidInput(f"the run holds no config for stage {stage!r} (recorded by older code with "
                               "other presets): resubmit the run spec", where=f"stages.{stage}")
        return configs[stage].build(stage)

    def validate_all(self) -> RunSpec:
        """Resolve the constitution and every stage config; returns the resolved spec."""
        spec = self.resolved()
        spec.stage_configs()
        return spec


def load_spec(path: str | Path, **overrides: Any) -> RunSpec:
    """Read a run spec from YAML; `overrides` (CLI flags) win over the file's values. A
    constitution given as a relative file path is found next to the spec file first."""
    path = Path(path)
    doc = read_mapping(path, "run spec")
    constitution = doc.get("constitution")
    if isinstance(constitution, str) and not Path(constitution).is_absolute():
        beside = path.parent / constitution
        if beside.is_file():
            doc["constitution"] = str(beside)
    return parse_spec(doc | {k: v for k, v in overrides.items() if v is not None}, where=str(path))


def parse_spec(doc: dict[str, Any], where: str = "run spec",
               configs: Mapping[str, ResolvedConfig] | None = None) -> RunSpec:
    """Validate a spec given as a mapping (from YAML, a gRPC request, a CLI, a run record).
    `configs`: the stage configs a run record holds, carried instead of resolving the presets."""
    try:
        spec = RunSpec.model_validate(doc)
        return (spec if configs is None else spec.with_configs(configs)).validate_all()
    except ValidationError as err:
        raise from_validation(err, where) from None
    except InvalidInput as err:
        raise InvalidInput(str(err), where=where) from None

