"""Stage configs resolved once: the config a stage's key was computed from, as recorded.

A run's stage configs are resolved from the scale presets and the spec's overrides once, when
the run is made (`resolve_configs`), and stored in its record (`controller/runs.py`). Every
later hop builds the stage's config from that record (`ResolvedConfig.build`), never from the
presets again, so a preset changed between submit and run cannot change what a stage runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from character.errors import InvalidInput
from character.pipeline.catalog import STAGE_NAMES, stage_module
from character.pipeline.stage import StageConfig
from character.store.digest import digest_of


class ResolvedConfig(BaseModel):
    """One stage's config as resolved at submit, with what proves it unchanged."""

    # Stored in run records, which outlive code versions: a newer writer's extra fields are ignored.
    model_config = ConfigDict(extra="ignore", frozen=True)

    values: dict[str, Any]
    """The config's canonical dump (`model_dump(mode="json")`): what the stage's key hashes."""
    digest: str
    """`digest_of(values)`, written with them: a record whose values were edited no longer matches."""
    schema_version: int
    """The stage's `Config.SCHEMA_VERSION` when it was resolved; code with another version refuses it."""
    given: tuple[str, ...] = ()
    """The fields the preset and overrides set (the others held the code's defaults): the config is
    rebuilt from these, as it was resolved, since a validator may ask which fields were given."""

    @classmethod
    def of(cls, config: StageConfig) -> ResolvedConfig:
        values = config.model_dump(mode="json")
        return cls(
            values=values,
            digest=digest_of(values),
            schema_version=type(config).SCHEMA_VERSION,
            given=tuple(sorted(config.model_fields_set)),
        )

    def build(self, stage: str) -> Any:
        """The stage's config from these recorded values (no presets), after checking that they
        are the ones recorded and that this code reads them as their writer did."""
        config_cls = stage_module(stage).Config
        if digest_of(self.values) != self.digest:
            raise InvalidInput(
                f"the recorded config of stage {stage!r} does not match its digest "
                f"{self.digest[:12]}: the record was edited; resubmit the run spec",
                where=f"stages.{stage}.config",
            )
        if self.schema_version != config_cls.SCHEMA_VERSION:
            raise InvalidInput(
                f"stage {stage!r} was recorded with config schema version {self.schema_version}, "
                f"but this code's is {config_cls.SCHEMA_VERSION}: its presets mean something else "
                "now; resubmit the run spec to resolve it with this code",
                where=f"stages.{stage}.config",
            )
        try:
            config = config_cls.model_validate({k: v for k, v in self.values.items() if k in self.given})
        except ValidationError:
            config = None
        if config is None or config.model_dump(mode="json") != self.values:
            raise InvalidInput(
                f"this code does not rebuild the recorded config of stage {stage!r} (a field or "
                "default changed without a new SCHEMA_VERSION): resubmit the run spec",
                where=f"stages.{stage}.config",
            )
        return config


def resolve_configs(scale: str, overrides: Mapping[str, dict[str, Any]]) -> dict[str, ResolvedConfig]:
    """Every stage's config at `scale` with its `overrides` (errors name `stages.<stage>.<field>`)."""
    return {
        name: ResolvedConfig.of(stage_module(name).Config.for_scale(scale, overrides.get(name), where=f"stages.{name}"))
        for name in STAGE_NAMES
    }
