"""The stage catalog, the one place the pipeline loads the stages (by importlib, which
import-linter cannot see): every entry is a loadable stage of its own name, and the catalog
and the stages package list the same stages."""

from __future__ import annotations

import pkgutil

import character.stages
import pytest
from character.errors import NotFound
from character.pipeline.catalog import STAGE_MODULES, STAGE_NAMES, stage_module
from character.pipeline.stage import StageConfig

SHARED = {"character.stages.common"}
"""The stages' shared helpers: a package of `character.stages` that is not a stage."""


@pytest.mark.parametrize("name", STAGE_NAMES)
def test_every_catalogued_stage_loads_as_a_stage_of_its_name(name: str) -> None:
    module = stage_module(name)
    assert module.__name__ == STAGE_MODULES[name]
    assert name == module.NAME
    assert issubclass(module.Config, StageConfig)
    assert callable(module.run)
    assert all(isinstance(field, str) for field in module.USES)
    earlier = STAGE_NAMES[: STAGE_NAMES.index(name)]
    assert set(module.INPUTS) <= set(earlier), f"{name} reads a stage that does not come before it"


def test_the_catalog_lists_every_stage_module_and_nothing_else() -> None:
    found = {m.name for m in pkgutil.iter_modules(character.stages.__path__, "character.stages.")}
    assert found - SHARED == set(STAGE_MODULES.values())
    assert found >= SHARED


def test_an_unknown_stage_is_refused_with_the_stage_names() -> None:
    with pytest.raises(NotFound, match="stages are: prompts, distill"):
        stage_module("train")
