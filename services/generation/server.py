"""The generation service: hosts the models. `Generate` and `Score` serve the other
services' model calls; the prompts and distill stages run here as tasks, on the same
loaded models.

Models are loaded once per (store, engine kind, model) and shared by tasks and RPCs; calls
on one model are serialized, since an engine switches adapters and steering hooks on a
single set of weights.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import grpc
from character.controller.tasks import StageJobs
from character.errors import InvalidInput, NotFound
from character.models.engine import AdapterRef, Conversation, Engine, Generation, SamplingParams, Steering
from character.pipeline.engines import LocalEngines
from character.pipeline.spec import RunSpec
from character.pipeline.stage import EngineProvider
from character.progress import Progress, silent
from character.store.base import Store

from services.api.character.v1 import generation_pb2, generation_pb2_grpc
from services.common import convert
from services.common.catalog import SERVICES
from services.common.server import ServeOptions, Server, worker_server
from services.common.tasks import TaskServicer

INFO = SERVICES["generation"]
MAX_CONVERSATIONS = 100_000
"""Conversations per Generate or Score call (a full-scale stage sends a few thousand)."""


class LockedEngine(Engine):
    """One engine whose calls run one at a time."""

    def __init__(self, engine: Engine):
        self.name = engine.name
        self._engine = engine
        self._lock = threading.Lock()

    def generate(self, conversations: Sequence[Conversation], sampling: SamplingParams,
                 adapter: AdapterRef | None = None, steering: Steering | None = None,
                 progress: Progress = silent) -> list[Generation]:
        with self._lock:
            return self._engine.generate(conversations, sampling, adapter=adapter, steering=steering,
                                         progress=progress)

    def score(self, conversations: Sequence[Conversation], continuations: Sequence[str],
              adapter: AdapterRef | None = None) -> list[float]:
        with self._lock:
            return self._engine.score(conversations, continuations, adapter=adapter)


class SharedEngines:
    """The engines of this process, one per (store, kind, model), locked."""

    def __init__(self, store: Store, kind: str):
        self._local = LocalEngines(store, kind)
        self._engines: dict[str, Engine] = {}
        self._lock = threading.Lock()

    def engine(self, model: str) -> Engine:
        with self._lock:  # two first calls for one model must not load it twice
            if model not in self._engines:
                self._engines[model] = LockedEngine(self._local.engine(model))
            return self._engines[model]

    def adapter(self, key: str) -> AdapterRef:
        return self._local.adapter(key)


class GenerationServicer(TaskServicer, generation_pb2_grpc.GenerationServiceServicer):
    def __init__(self, options: ServeOptions):
        self.default_store = options.store
        self.jobs = StageJobs(self.engines_for, INFO.stages)
        self._providers: dict[tuple[str, str], SharedEngines] = {}
        self._lock = threading.Lock()

    def engines_for(self, store: Store, spec: RunSpec) -> EngineProvider:
        return self._provider(store, spec.engine)

    def _provider(self, store: Store, kind: str) -> SharedEngines:
        with self._lock:
            if (store.uri, kind) not in self._providers:
                self._providers[(store.uri, kind)] = SharedEngines(store, kind)
            return self._providers[(store.uri, kind)]

    def _resolve(self, request: Any) -> tuple[Engine, AdapterRef | None, list[Conversation]]:
        """The engine, adapter and conversations a Generate or Score request names; unknown
        models and adapters are the caller's mistake (INVALID_ARGUMENT)."""
        if not request.HasField("model") or not request.model.name:
            raise InvalidInput("name the model (a bundled name, folder, s3:// URI or artifact://model/<key>)",
                               where="model.name")
        if len(request.conversations) > MAX_CONVERSATIONS:
            raise InvalidInput(f"{len(request.conversations)} conversations in one call; the limit is "
                               f"{MAX_CONVERSATIONS}: split the batch", where="conversations")
        conversations = convert.from_conversations(request.conversations)
        store = self.jobs.store(request.store_uri or self.default_store)
        provider = self._provider(store, request.model.engine or "transformers")
        try:
            engine = provider.engine(request.model.name)
        except NotFound as err:
            raise InvalidInput(str(err), where="model.name") from None
        adapter = None
        if request.HasField("adapter") and request.adapter.key:
            try:
                adapter = provider.adapter(request.adapter.key)
            except NotFound as err:
                raise InvalidInput(str(err), where="adapter.key") from None
        return engine, adapter, conversations

    def Generate(self, request: generation_pb2.GenerateRequest,  # gRPC's names
                 context: grpc.ServicerContext) -> generation_pb2.GenerateResponse:
        engine, adapter, conversations = self._resolve(request)
        sampling = convert.from_sampling(request.sampling)
        steering = convert.from_steering(request.steering) if request.HasField("steering") else None
        generations = engine.generate(conversations, sampling, adapter=adapter, steering=steering)
        return generation_pb2.GenerateResponse(generations=[convert.generation(g) for g in generations])

    def Score(self, request: generation_pb2.ScoreRequest,
              context: grpc.ServicerContext) -> generation_pb2.ScoreResponse:
        if len(request.continuations) != len(request.conversations):
            raise InvalidInput(f"{len(request.continuations)} continuations for {len(request.conversations)} "
                               "conversations: send one per conversation", where="continuations")
        engine, adapter, conversations = self._resolve(request)
        scores = engine.score(conversations, list(request.continuations), adapter=adapter)
        return generation_pb2.ScoreResponse(logprobs=scores)


def build(options: ServeOptions) -> Server:
    servicer = GenerationServicer(options)
    return worker_server(INFO, options, servicer, servicer.jobs)
