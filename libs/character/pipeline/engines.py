"""Engines for stages that run in this process (the `inline` executor, `oct run`, `oct stage`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from character.models.endpoint import Endpoint
from character.models.engine import AdapterRef, Engine
from character.store.base import Store

if TYPE_CHECKING:
    from character.pipeline.spec import RunSpec

ARTIFACT_MODEL_PREFIX = "artifact://model/"


class LocalEngines:
    """One engine per model reference, created on first use and kept for the process: models
    named in `endpoints` are reached over HTTP, the others run here on the `kind` backend."""

    def __init__(self, store: Store, kind: str = "transformers", endpoints: Mapping[str, Endpoint] | None = None):
        self.store = store
        self.kind = kind
        self.endpoints = dict(endpoints or {})
        self._engines: dict[str, Engine] = {}

    @classmethod
    def for_spec(cls, store: Store, spec: RunSpec) -> LocalEngines:
        return cls(store, spec.engine, spec.endpoints)

    def engine(self, model: str) -> Engine:
        if model not in self._engines:
            from character.models import get_engine

            if model in self.endpoints:
                self._engines[model] = self.endpoints[model].open(model)
                return self._engines[model]
            path = model
            if model.startswith(ARTIFACT_MODEL_PREFIX):
                path = str(self.store.materialize("model", model.removeprefix(ARTIFACT_MODEL_PREFIX)))
            self._engines[model] = get_engine(self.kind, path)
        return self._engines[model]

    def adapter(self, key: str) -> AdapterRef:
        return self.store.materialize("adapter", key)
