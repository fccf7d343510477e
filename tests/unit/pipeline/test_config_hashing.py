"""Stage keys hash `model_dump(mode="json")` of the stage configs and the spec fields they use.
pydantic dumps a set in iteration order, which for strings changes from process to process
(hash randomisation), so a set-typed field would give the same config a different key in every
process: a finished stage would never be found again. No config may have one."""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator
from typing import Any

import pytest
from character.pipeline.catalog import STAGE_NAMES, stage_module
from character.pipeline.spec import RunSpec
from pydantic import BaseModel


def _set_fields(model: type[BaseModel], where: str, seen: set[type] | None = None) -> Iterator[str]:
    """Dotted paths of the fields of `model` (and of the models nested in it) typed with a set."""
    seen = seen if seen is not None else set()
    if model in seen:
        return
    seen.add(model)
    for name, field in model.model_fields.items():
        yield from _set_types(field.annotation, f"{where}.{name}", seen)


def _set_types(annotation: Any, where: str, seen: set[type]) -> Iterator[str]:
    origin = typing.get_origin(annotation)
    if annotation in (set, frozenset) or origin in (set, frozenset, typing.AbstractSet):
        yield where
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield from _set_fields(annotation, where, seen)
    if origin is not None or isinstance(annotation, types.UnionType):
        for arg in typing.get_args(annotation):
            yield from _set_types(arg, where, seen)


@pytest.mark.parametrize("stage", STAGE_NAMES)
def test_no_stage_config_field_is_a_set(stage: str) -> None:
    assert list(_set_fields(stage_module(stage).Config, f"stages.{stage}")) == []


def test_no_run_spec_field_is_a_set() -> None:
    assert list(_set_fields(RunSpec, "spec")) == []


def test_the_check_finds_a_nested_set() -> None:
    class Inner(BaseModel):
        tags: frozenset[str] | None = None

    class Outer(BaseModel):
        inner: list[Inner] = []
        names: set[str] = set()

    assert sorted(_set_fields(Outer, "outer")) == ["outer.inner.tags", "outer.names"]
