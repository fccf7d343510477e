"""Engines for stages that run in this process (the `inline` executor, `oct run`, `oct stage`)."""

from __future__ import annotations

from character.models.engine import AdapterRef, Engine
from character.store.base import Store

ARTIFACT_MODEL_PREFIX = "artifact://model/"


class LocalEngines:
    """One engine per model reference, created on first use and kept for the process."""

    def __init__(self, store: Store, kind: str = "transformers"):
        self.store = store
        self.kind = kind
        self._engines: dict[str, Engine] = {}

    def engine(self, model: str) -> Engine:
        if model not in self._engines:
            from character.models import get_engine

            path = model
            if model.startswith(ARTIFACT_MODEL_PREFIX):
                path = str(self.store.materialize("model", model.removeprefix(ARTIFACT_MODEL_PREFIX)))
            self._engines[model] = get_engine(self.kind, path)
        return self._engines[model]

    def adapter(self, key: str) -> AdapterRef:
        return self.store.materialize("adapter", key)
