"""The generation service: hosts the models. `Generate` and `Score` serve the other
services' model calls; the prompts and distill stages run here as tasks, on the same
loaded models.

Models are loaded once per (engine kind, model) from the service's own store (a caller's
`store_uri` is ignored) and shared by tasks and RPCs, in the library's `EnginePool` (locked:
calls on one model are serialized, since an engine switches adapters and steering hooks on a
single set of weights); at most `limits.max_models_loaded` stay loaded. A task's teacher or
judge served over HTTP (the spec's endpoints) is called from here directly. A Generate stops
between batches once its caller has gone (cancelled, or past its deadline), and its size is
capped by the platform's limits.
"""

from __future__ import annotations

import math
from typing import Any

import grpc
from character.controller.stage_tasks import StageJobs
from character.errors import CharacterError, InvalidInput, NotFound
from character.models.engine import AdapterRef, Conversation, Engine, Steering
from character.pipeline.engines import EnginePool
from character.pipeline.spec import RunSpec
from character.pipeline.stage import EngineProvider
from character.platform import Limits
from character.progress import Progress, ProgressEvent
from character.store.base import Store

from character_services.api.character.v1 import generation_pb2, generation_pb2_grpc
from character_services.common import convert
from character_services.common.catalog import SERVICES
from character_services.common.server import ServeOptions, Server, worker_server
from character_services.common.task_rpc import TaskServicer

INFO = SERVICES["generation"]


class CallerGone(CharacterError):
    """The caller of a Generate or Score cancelled or passed its deadline: the work stops."""


class GenerationServicer(TaskServicer, generation_pb2_grpc.GenerationServiceServicer):
    def __init__(self, options: ServeOptions):
        self.default_store = options.store
        self.limits: Limits = options.platform_config().limits
        self.engines = EnginePool(locked=True, max_loaded=self.limits.max_models_loaded)
        self.jobs = StageJobs(self.engines_for, INFO.stages)

    def engines_for(self, store: Store, spec: RunSpec) -> EngineProvider:
        return self.engines.for_spec(store, spec)

    def _resolve(self, request: Any) -> tuple[Engine, AdapterRef | None, list[Conversation]]:
        """The engine, adapter and conversations a Generate or Score request names; unknown
        models and adapters are the caller's mistake (INVALID_ARGUMENT)."""
        if not request.HasField("model") or not request.model.name:
            raise InvalidInput("name the model (a bundled name, folder, s3:// URI or artifact://model/<key>)",
                               where="model.name")
        if len(request.conversations) > self.limits.max_conversations:
            raise InvalidInput(f"{len(request.conversations)} conversations in one call; the limit is "
                               f"{self.limits.max_conversations}: split the batch", where="conversations")
        conversations = convert.from_conversations(request.conversations)
        store = self.jobs.store(self.default_store)  # never the caller's: no reaching into other buckets
        provider = self.engines.engines(store, request.model.engine or "transformers")
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
        if sampling.max_new_tokens > self.limits.max_new_tokens:
            raise InvalidInput(f"max_new_tokens {sampling.max_new_tokens} is over this service's limit of "
                               f"{self.limits.max_new_tokens}", where="sampling.max_new_tokens")
        steering = self._steering(request) if request.HasField("steering") else None
        generations = engine.generate(conversations, sampling, adapter=adapter, steering=steering,
                                      progress=_until_gone(context))
        return generation_pb2.GenerateResponse(generations=[convert.generation(g) for g in generations])

    def Score(self, request: generation_pb2.ScoreRequest,
              context: grpc.ServicerContext) -> generation_pb2.ScoreResponse:
        if len(request.continuations) != len(request.conversations):
            raise InvalidInput(f"{len(request.continuations)} continuations for {len(request.conversations)} "
                               "conversations: send one per conversation", where="continuations")
        engine, adapter, conversations = self._resolve(request)
        scores = engine.score(conversations, list(request.continuations), adapter=adapter)
        return generation_pb2.ScoreResponse(logprobs=scores)


    def _steering(self, request: generation_pb2.GenerateRequest) -> Steering:
        msg = request.steering
        if not math.isfinite(msg.coefficient):
            raise InvalidInput(f"{msg.coefficient} is not a finite number", where="steering.coefficient")
        if len(msg.vectors) > self.limits.max_steering_layers:
            raise InvalidInput(f"{len(msg.vectors)} layers; the limit is {self.limits.max_steering_layers}",
                               where="steering.vectors")
        for layer, vector in msg.vectors.items():
            where = f"steering.vectors[{layer}]"
            if len(vector.values) > self.limits.max_steering_values:
                raise InvalidInput(f"{len(vector.values)} values; the limit is {self.limits.max_steering_values}",
                                   where=where)
            if not all(math.isfinite(v) for v in vector.values):
                raise InvalidInput("the vector holds NaN or infinite values", where=where)
        return convert.from_steering(msg)


def _until_gone(context: grpc.ServicerContext) -> Progress:
    """A progress callback that stops the work (between batches) once the caller has gone."""

    def check(event: ProgressEvent) -> None:
        if not context.is_active():
            raise CallerGone("the caller cancelled or its deadline passed")

    return check


def build(options: ServeOptions) -> Server:
    servicer = GenerationServicer(options)
    return worker_server(INFO, options, servicer, servicer.jobs)
