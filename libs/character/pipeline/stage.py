"""What every pipeline stage looks like.

A stage is a module in `character.stages`, listed in `pipeline/catalog.py:STAGE_MODULES`,
exposing:
- `NAME`: its name in the DAG; `INPUTS`: the upstream stages it reads;
- `USES`: the run-spec fields its output depends on (part of its content address);
- `Config`: a `StageConfig` subclass with `PRESETS` for the `demo`, `proof` and `full`
  scales (`proof` builds on `demo`: `SCALE_BASES`) and its
  `SCHEMA_VERSION` (recorded with the run's resolved config: `pipeline/configs.py`);
- `run(ctx: StageContext, config: Config) -> StageResult`.

Stages read their inputs from the store, write their outputs to the store (atomically,
content-addressed by `ctx.key`), report progress through `ctx.progress`, and never
talk gRPC or Kubernetes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, Self

from pydantic import BaseModel, ConfigDict, ValidationError

from character.errors import from_validation
from character.progress import Progress, silent
from character.store.base import ArtifactRef, Store

if TYPE_CHECKING:
    from character.constitution import Constitution
    from character.models.engine import AdapterRef, Engine
    from character.pipeline.spec import RunSpec

Scale = str  # "demo" | "proof" | "full"

SCALE_BASES: dict[str, str] = {"proof": "demo"}
"""A scale built on another: its preset is the base scale's with its own entries on top, so a
stage that needs nothing different at `proof` runs at its `demo` values."""


class StageConfig(BaseModel):
    """Base of every stage's config: unknown keys are errors, presets per scale."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"demo": {}, "full": {}}
    """Field values per scale; `full` holds the reference numbers of docs/method.md."""

    SCHEMA_VERSION: ClassVar[int] = 1
    """The version of this config's meaning, recorded with every resolved config of a run. Bump it
    when a preset's meaning changes (a field renamed, a default or preset value that now means
    something else): records resolved by the older code are then refused, not run differently."""

    @classmethod
    def for_scale(cls, scale: Scale, overrides: dict[str, Any] | None = None, where: str = "") -> Self:
        """The preset for `scale` with `overrides` applied; errors name the offending key."""
        base = cls.PRESETS.get(SCALE_BASES[scale], {}) if scale in SCALE_BASES else {}
        values = {**base, **cls.PRESETS.get(scale, {}), **(overrides or {})}
        try:
            return cls.model_validate(values)
        except ValidationError as err:
            raise from_validation(err, None, prefix=(where,)) from None


class StageResult(BaseModel):
    """What a finished stage leaves behind (itself stored as the `stage` artifact)."""

    stage: str
    key: str
    """The stage's content address (digest of its inputs and config)."""
    artifacts: dict[str, ArtifactRef] = {}
    """Named outputs, e.g. {"pairs": ..., "heldout": ...}."""
    metrics: dict[str, Any] = {}
    """Counts, timings and measurements worth reporting (dropped examples, accuracies, ...)."""


class EngineProvider(Protocol):
    """Gives stages engines and adapters without them knowing where models run."""

    def engine(self, model: str) -> Engine:
        """An engine serving `model` (a model reference, or `artifact://model/<key>`)."""
        ...

    def adapter(self, key: str) -> AdapterRef:
        """The stored adapter artifact `key`, in the form the engines accept."""
        ...


@dataclass
class StageContext:
    """Everything a stage may touch."""

    run_id: str
    spec: RunSpec
    constitution: Constitution
    store: Store
    engines: EngineProvider
    key: str
    """This stage's content address; outputs are stored under it."""
    inputs: dict[str, StageResult]
    """Results of the upstream stages, by stage name."""
    workdir: Path
    """Local scratch space for this stage (survives restarts: checkpoints go here too)."""
    progress: Progress = field(default=silent)


class StageModule(Protocol):
    NAME: str
    INPUTS: tuple[str, ...]
    USES: tuple[str, ...]
    Config: type[StageConfig]

    def run(self, ctx: StageContext, config: Any) -> StageResult: ...
