"""The engines of this process: one pool, used by every way of running stages here.

A model is loaded once per (store, backend kind, model reference) and an endpoint client is
opened once per endpoint (its settings, not only its name: two runs may give one name to two
servers). Where several threads share the pool (the generation service's RPCs and tasks, the
inline executor), `locked` serializes the calls on each engine, since an engine switches
adapters and steering hooks on one set of weights; `max_loaded` bounds the models kept
loaded (the least recently used is dropped; a stage still using it keeps its reference).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from character.models.endpoint import Endpoint
from character.models.engine import AdapterRef, Conversation, Engine, Generation, SamplingParams, Steering
from character.progress import Progress, silent
from character.store.base import Store

if TYPE_CHECKING:
    from character.pipeline.spec import RunSpec

ARTIFACT_MODEL_PREFIX = "artifact://model/"
"""How a model reference names a model stored by a stage (`<prefix><key>`, the merge stage's
output): the pool materializes it from the run's store; admission lets remote specs name it."""


class LockedEngine(Engine):
    """One engine whose calls run one at a time."""

    def __init__(self, engine: Engine):
        self.name = engine.name
        self.precision = engine.precision
        self._engine = engine
        self._lock = threading.Lock()

    def generate(self, conversations: Sequence[Conversation], sampling: SamplingParams,
                 adapter: AdapterRef | None = None, steering: Steering | None = None,
                 progress: Progress = silent) -> list[Generation]:
        with self._lock:
            return self._engine.generate(conversations, sampling, adapter=adapter, steering=steering,
                                         progress=progress)

    def score(self, conversations: Sequence[Conversation], continuations: Sequence[str],
              adapter: AdapterRef | None = None, progress: Progress = silent) -> list[float]:
        with self._lock:
            return self._engine.score(conversations, continuations, adapter=adapter, progress=progress)


class EnginePool:
    """Engines created on first use and kept for the process (see the module docstring)."""

    def __init__(self, locked: bool = False, max_loaded: int | None = None):
        self.locked = locked
        self.max_loaded = max_loaded
        self._engines: OrderedDict[tuple[str, ...], Engine] = OrderedDict()
        self._lock = threading.Lock()

    def engines(self, store: Store, kind: str = "transformers",
                endpoints: Mapping[str, Endpoint] | None = None, dtype: str = "auto") -> LocalEngines:
        """A run's view of the pool: its store, backend, endpoints and precision."""
        return LocalEngines(store, kind, endpoints, pool=self, dtype=dtype)

    def for_spec(self, store: Store, spec: RunSpec) -> LocalEngines:
        return self.engines(store, spec.engine, spec.endpoints, spec.dtype)

    def engine(self, store: Store, kind: str, model: str, endpoint: Endpoint | None = None,
               dtype: str = "auto") -> Engine:
        """The engine of `model`: over HTTP when an endpoint serves it, else loaded here in `dtype`."""
        if endpoint is not None:
            ident: tuple[str, ...] = ("endpoint", model, json.dumps(endpoint.model_dump(mode="json"), sort_keys=True))
        else:
            ident = ("local", store.uri, kind, model, dtype)
        with self._lock:  # two first calls for one model must not load it twice
            if ident not in self._engines:
                engine = endpoint.open(model) if endpoint is not None else self._load(store, kind, model, dtype)
                self._engines[ident] = LockedEngine(engine) if self.locked else engine
                self._evict()
            self._engines.move_to_end(ident)
            return self._engines[ident]

    def _evict(self) -> None:
        """Drop the least recently used loaded models beyond `max_loaded` (endpoint clients hold no weights)."""
        if self.max_loaded is None:
            return
        local = [ident for ident in self._engines if ident[0] == "local"]
        for ident in local[: max(0, len(local) - self.max_loaded)]:
            del self._engines[ident]

    @staticmethod
    def _load(store: Store, kind: str, model: str, dtype: str) -> Engine:
        from character.models import get_engine

        path = model
        if model.startswith(ARTIFACT_MODEL_PREFIX):
            path = str(store.materialize("model", model.removeprefix(ARTIFACT_MODEL_PREFIX)))
        return get_engine(kind, path, dtype=dtype)


class LocalEngines:
    """An `EngineProvider` for stages running in this process: models named in `endpoints` are
    reached over HTTP, the others run here on the `kind` backend in `dtype` (the spec's
    precision). Engines come from `pool` (default: a pool of its own, for one stage or one run)."""

    def __init__(self, store: Store, kind: str = "transformers", endpoints: Mapping[str, Endpoint] | None = None,
                 pool: EnginePool | None = None, dtype: str = "auto"):
        self.store = store
        self.kind = kind
        self.endpoints = dict(endpoints or {})
        self.pool = pool or EnginePool()
        self.dtype = dtype

    @classmethod
    def for_spec(cls, store: Store, spec: RunSpec) -> LocalEngines:
        return cls(store, spec.engine, spec.endpoints, dtype=spec.dtype)

    def engine(self, model: str) -> Engine:
        return self.pool.engine(self.store, self.kind, model, self.endpoints.get(model), self.dtype)

    def adapter(self, key: str) -> AdapterRef:
        return self.store.materialize("adapter", key)
