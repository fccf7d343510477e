"""Engines whose model calls go to the generation service (`Generate`, `Score`).

The introspection and evaluation services run their stages with `RemoteEngines`: a stage
asks for `engines.engine(model)` and `engines.adapter(key)` as anywhere else; the adapter
comes back as the token `artifact://adapter/<key>`, which the generation service resolves
through its store. Each call carries the whole batch the stage asked for, so batching (and
with it sampling under a seed) is the same as when the stage runs in-process.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import grpc
from character.errors import InvalidInput
from character.models.endpoint import Endpoint
from character.models.engine import AdapterRef, Conversation, Engine, Generation, SamplingParams, Steering
from character.pipeline.engines import EnginePool
from character.pipeline.spec import RunSpec
from character.pipeline.stage import EngineProvider
from character.progress import Progress, ProgressEvent, silent
from character.store.base import Store

from character_services.api.character.v1 import common_pb2, generation_pb2, generation_pb2_grpc
from character_services.common import convert
from character_services.common.errors import from_rpc_error
from character_services.common.security import Transport

ADAPTER_PREFIX = "artifact://adapter/"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
"""What the client accepts in answers (the generation service's transport limit)."""
CALL_TIMEOUT_S = 6 * 3600.0
"""A deadline on model calls, so a hung generation service fails the stage instead of
blocking it forever; a full-scale batch on a GPU takes far less."""


def adapter_key(adapter: AdapterRef | None) -> str:
    """The stored adapter's key from an `artifact://adapter/<key>` token."""
    if adapter is None:
        return ""
    text = str(adapter)
    if not text.startswith(ADAPTER_PREFIX):
        raise InvalidInput(f"remote engines take stored adapters ({ADAPTER_PREFIX}<key>, from "
                           f"engines.adapter(key)), not {text!r}", where="adapter")
    return text.removeprefix(ADAPTER_PREFIX)


def open_channel(address: str, transport: Transport | None = None) -> grpc.Channel:
    """A channel to the generation service: TLS with this service's certificate by default."""
    return (transport or Transport.resolve()).channel(address, options=[
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ])


class GrpcEngine(Engine):
    """An `Engine` served by the generation service at the other end of `channel`."""

    def __init__(self, channel: grpc.Channel, model: str, kind: str, store_uri: str, address: str = ""):
        self.name = model
        self._stub = generation_pb2_grpc.GenerationServiceStub(channel)
        self._model = common_pb2.ModelRef(name=model, engine=kind)
        self._store_uri = store_uri
        self._what = f"generation service{' at ' + address if address else ''}"

    def generate(
        self,
        conversations: Sequence[Conversation],
        sampling: SamplingParams,
        adapter: AdapterRef | None = None,
        steering: Steering | None = None,
        progress: Progress = silent,
    ) -> list[Generation]:
        if not conversations:
            return []
        request = generation_pb2.GenerateRequest(
            model=self._model,
            conversations=convert.conversations(conversations),
            sampling=convert.sampling(sampling),
            adapter=common_pb2.AdapterRef(key=adapter_key(adapter)) if adapter is not None else None,
            steering=convert.steering(steering) if steering is not None else None,
            store_uri=self._store_uri,
        )
        try:
            response = self._stub.Generate(request, timeout=CALL_TIMEOUT_S)
        except grpc.RpcError as err:
            raise from_rpc_error(err, self._what) from None
        n = len(conversations)
        progress(ProgressEvent(task=f"generate ({self.name})", done=n, total=n))
        return [convert.from_generation(g) for g in response.generations]

    def score(
        self,
        conversations: Sequence[Conversation],
        continuations: Sequence[str],
        adapter: AdapterRef | None = None,
        progress: Progress = silent,
    ) -> list[float]:
        if not conversations:
            return []
        request = generation_pb2.ScoreRequest(
            model=self._model,
            conversations=convert.conversations(conversations),
            continuations=list(continuations),
            adapter=common_pb2.AdapterRef(key=adapter_key(adapter)) if adapter is not None else None,
            store_uri=self._store_uri,
        )
        try:
            response = self._stub.Score(request, timeout=CALL_TIMEOUT_S)
        except grpc.RpcError as err:
            raise from_rpc_error(err, self._what) from None
        n = len(conversations)
        progress(ProgressEvent(task=f"score ({self.name})", done=n, total=n))
        return list(response.logprobs)


class RemoteEngines:
    """An `EngineProvider` whose engines live in the generation service; models named in
    `endpoints` (HTTP servers) are called directly, not through it, with their clients kept in
    `pool` (one client, and one tokenizer load, per endpoint for the process)."""

    def __init__(
        self,
        channel: grpc.Channel,
        store: Store,
        kind: str,
        address: str = "",
        endpoints: Mapping[str, Endpoint] | None = None,
        pool: EnginePool | None = None,
    ):
        self._channel, self._store, self._kind, self._address = channel, store, kind, address
        self._endpoints = dict(endpoints or {})
        self._pool = pool or EnginePool()

    def engine(self, model: str) -> Engine:
        if model in self._endpoints:
            return self._pool.engine(self._store, self._kind, model, self._endpoints[model])
        return GrpcEngine(self._channel, model, self._kind, self._store.uri, self._address)

    def adapter(self, key: str) -> AdapterRef:
        return ADAPTER_PREFIX + key


def remote_engines_for(address: str, transport: Transport | None = None) -> Callable[[Store, RunSpec], EngineProvider]:
    """An `EnginesFor` (see character.controller.stage_tasks) sending model calls to the generation
    service at `address`, over one channel shared by every task."""
    channel = open_channel(address, transport)
    endpoint_clients = EnginePool(locked=False)  # HTTP clients take concurrent calls

    def engines_for(store: Store, spec: RunSpec) -> EngineProvider:
        return RemoteEngines(channel, store, spec.engine, address, spec.endpoints, endpoint_clients)

    return engines_for
