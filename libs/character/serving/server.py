"""The OpenAI-compatible persona server (`oct serve-personas`): HTTPS with bearer tokens, as
`oct up` does them, over the persona pool.

- GET /v1/models: the published personas, trained runs and base models the caller may use
  (`resolve.available`);
  POST /v1/chat/completions and /v1/completions, `stream: true` as server-sent events.
- Every request is checked in this order, each before any work the next needs: the token
  (401), the caller's requests in flight (`limits.max_requests_per_caller`, 429), the body's
  size (`limits.max_request_bytes`, 400), its fields (400 naming the field; messages, prompt
  characters and max_tokens within the platform's limits), the model (404 unknown, 403 someone
  else's), the prompt's length in tokens against the model's context (400).
- The model name (a published NAME[:TAG], a run id or a base model: `resolve.resolve`) is
  resolved on every request, so a persona published, or a tag moved, after the server started
  is served without a restart.
- Generation runs on worker threads (the engines' own locks serialize work on one model), so
  the event loop keeps answering (health, metrics, refusals) while models compute. They are
  daemon threads: a generation still running at stop does not hold the process.
- A plaintext side port answers /healthz (readiness) and /metrics (Prometheus).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import ssl
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from character.daemon_pool import DaemonPool
from character.errors import CharacterError, InvalidInput, NotFound
from character.models.engine import Generation
from character.platform import Limits, PlatformConfig, load_platform_config
from character.security.auth import (
    TOKENS_ENV,
    Authenticator,
    Identity,
    PermissionDenied,
    Unauthenticated,
    ensure_local_token,
)
from character.security.pki import TLS_DIR_ENV, TlsMaterial, ensure_local_pki
from character.serving.api import DEFAULT_PORT, ApiError, ChatRequest, CompletionRequest, check_bounds, parse
from character.serving.metrics import ServingMetrics
from character.serving.pool import PersonaPool, ServingEngineKind
from character.serving.resolve import ServedPersona, available, check_access, resolve
from character.store.base import Store
from character.yamldoc import Budget, parse_json

log = logging.getLogger(__name__)
DEFAULT_MAX_TOKENS = 256
"""max_tokens when a request gives none (capped by `limits.max_new_tokens`)."""
_DONE = object()
_BODY_DEPTH = 4
"""Nesting of a valid body: the request, its messages, a message (and one level to spare)."""


@dataclass(frozen=True)
class ServerOptions:
    """Where and how the persona server listens."""

    host: str = "127.0.0.1"
    """Address to listen on."""
    port: int = DEFAULT_PORT
    """HTTPS port (0: a free one)."""
    health_port: int | None = None
    """Plaintext /healthz and /metrics (default: port + 2000; 0: a free one)."""
    workers: int = 8
    """Threads generating at once (requests for one model still take turns on its engine)."""
    grace_s: float = 10.0
    """Seconds `stop()` waits for requests in flight before it closes their connections."""

    def __post_init__(self) -> None:
        if self.grace_s < 0:
            raise InvalidInput(f"grace_s must be >= 0, got {self.grace_s}", where="ServerOptions")


class PersonaServer:
    """The server (see the module docstring): `start()` listens on a thread of its own and
    returns; `stop()` ends it."""

    def __init__(self, store: Store, pool: PersonaPool, authenticator: Authenticator, tls: TlsMaterial,
                 limits: Limits, metrics: ServingMetrics, options: ServerOptions | None = None):
        self.store, self.pool, self.auth, self.tls, self.limits = store, pool, authenticator, tls, limits
        self.metrics = metrics
        self.options = options or ServerOptions()
        self._in_flight: dict[str, int] = {}
        self._body_budget = body_budget(limits)
        self._workers = DaemonPool(self.options.workers, "persona-server")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runners: list[web.AppRunner] = []
        self.port = 0
        self.health_port = 0

    @property
    def base_url(self) -> str:
        host = "localhost" if self.options.host in ("127.0.0.1", "0.0.0.0", "::1", "::") else self.options.host
        return f"https://{host}:{self.port}/v1"

    # --- lifecycle ----------------------------------------------------------------------
    def start(self) -> PersonaServer:
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._listen())
            except BaseException as err:  # reported to start()'s caller
                failure.append(err)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            for runner in self._runners:
                loop.run_until_complete(runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name="persona-server-loop", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        """Stop taking requests, give those in flight `options.grace_s` to finish, then close
        their connections and return (a generation still running on a worker thread is left to
        end on its own: a thread cannot be interrupted, and its answer has nobody to go to)."""
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=self.options.grace_s + 5)  # the runners' cleanup waits at most grace_s
        self._workers.shutdown(wait=False, cancel_futures=True)

    async def _listen(self) -> None:
        api = web.Application(client_max_size=self.limits.max_request_bytes + 1)
        api.router.add_get("/v1/models", self._models)
        api.router.add_post("/v1/chat/completions", self._chat)
        api.router.add_post("/v1/completions", self._completions)
        side = web.Application()
        side.router.add_get("/healthz", self._health)
        side.router.add_get("/metrics", self._metrics)
        health_port = self.options.port + 2000 if self.options.health_port is None else self.options.health_port
        if self.options.port == 0 and self.options.health_port is None:
            health_port = 0
        self.port = await self._site(api, self.options.port, self._ssl())
        self.health_port = await self._site(side, health_port, None)

    async def _site(self, app: web.Application, port: int, ssl_context: ssl.SSLContext | None) -> int:
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=self.options.grace_s)
        await runner.setup()
        self._runners.append(runner)
        site = web.TCPSite(runner, self.options.host, port, ssl_context=ssl_context)
        await site.start()
        server = site._server
        assert server is not None and hasattr(server, "sockets")
        return int(server.sockets[0].getsockname()[1])

    def _ssl(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        folder = self.tls.folder
        context.load_cert_chain(str(folder / "tls.crt"), str(folder / "tls.key"))
        return context

    # --- endpoints ----------------------------------------------------------------------
    async def _health(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _metrics(self, _request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _models(self, request: web.Request) -> web.StreamResponse:
        async def answer(caller: Identity) -> web.StreamResponse:
            models = await self._in_thread(available, self.store, caller)
            data = [{"id": m.name, "object": "model", "created": 0, "owned_by": m.owner or "oct"} for m in models]
            return web.json_response({"object": "list", "data": data})

        return await self._guarded(request, "models", answer)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._guarded(request, "chat", lambda caller: self._complete(request, caller, ChatRequest))

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        return await self._guarded(request, "completions",
                                   lambda caller: self._complete(request, caller, CompletionRequest))

    # --- the checks every request goes through ------------------------------------------
    async def _guarded(self, request: web.Request, endpoint: str,
                       answer: Callable[[Identity], Any]) -> web.StreamResponse:
        status = 500
        try:
            caller = self._caller(request)
            with self._slot(caller):
                response: web.StreamResponse = await answer(caller)
            status = response.status
            return response
        except ApiError as err:
            status = err.status
            return web.json_response(err.body(), status=err.status)
        except Exception:
            log.exception("persona server: %s failed", endpoint)
            status = 500
            return web.json_response(ApiError(500, "internal error; see the server's log").body(), status=500)
        finally:
            self.metrics.requests.labels(endpoint, str(status)).inc()

    def _caller(self, request: web.Request) -> Identity:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        try:
            return self.auth.authenticate(token.strip() if scheme.lower() == "bearer" else None)
        except Unauthenticated as err:
            raise ApiError(401, str(err)) from None

    @contextlib.contextmanager
    def _slot(self, caller: Identity) -> Any:
        """One of the caller's `max_requests_per_caller` places, or 429. Only the event loop's
        thread counts, so no lock is needed."""
        used = self._in_flight.get(caller.name, 0)
        if used >= self.limits.max_requests_per_caller:
            raise ApiError(429, f"{caller.name} has {used} requests in flight, the most allowed "
                                f"(limits.max_requests_per_caller); retry when one is answered")
        self._in_flight[caller.name] = used + 1
        self.metrics.in_flight.inc()
        try:
            yield
        finally:
            self.metrics.in_flight.dec()
            left = self._in_flight[caller.name] - 1
            if left:
                self._in_flight[caller.name] = left
            else:
                del self._in_flight[caller.name]

    async def _body(self, request: web.Request) -> Any:
        limit = self.limits.max_request_bytes
        if request.content_length is not None and request.content_length > limit:
            raise ApiError(400, f"the request body is {request.content_length} bytes, more than "
                                f"{limit} (limits.max_request_bytes)", "body")
        data = b""
        while len(data) <= limit and (chunk := await request.content.read(limit + 1 - len(data))):
            data += chunk  # read() gives what has arrived: a body sent in pieces takes several
        if len(data) > limit:
            raise ApiError(400, f"the request body is more than {limit} bytes (limits.max_request_bytes)", "body")
        try:
            return parse_json(data.decode("utf-8"), "body", self._body_budget)
        except UnicodeDecodeError as err:
            raise ApiError(400, f"the request body is not UTF-8 (byte {err.start})", "body") from None
        except InvalidInput as err:
            raise ApiError(400, str(err), "body") from None

    def _persona(self, caller: Identity, model: str) -> ServedPersona:
        try:
            persona = resolve(self.store, model)
            check_access(caller, persona)
        except NotFound as err:
            raise ApiError(404, str(err), "model") from None
        except PermissionDenied as err:
            raise ApiError(403, str(err), "model") from None
        except InvalidInput as err:
            raise ApiError(400, str(err), "model") from None
        return persona

    # --- answering ----------------------------------------------------------------------
    async def _complete(self, request: web.Request, caller: Identity,
                        kind: type[ChatRequest] | type[CompletionRequest]) -> web.StreamResponse:
        arrived = time.monotonic()
        req = parse(kind, await self._body(request))
        check_bounds(req, self.limits)
        persona = await self._in_thread(self._persona, caller, req.model)
        prompt = await self._in_thread(self._encode, persona, req)
        sampling = req.sampling(min(DEFAULT_MAX_TOKENS, self.limits.max_new_tokens))
        self.metrics.tokens.labels("prompt").inc(len(prompt))
        chat = isinstance(req, ChatRequest)
        ident = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        if req.stream:
            pieces = self._stream(persona, prompt, sampling, arrived)
            return await self._sse(request, pieces, ident, req, chat, len(prompt))
        generation = await self._in_thread(self.pool.generate, persona, prompt, sampling)
        self.metrics.first_token.observe(time.monotonic() - arrived)
        self.metrics.tokens.labels("completion").inc(generation.num_tokens)
        choice: dict[str, Any] = {"index": 0, "finish_reason": generation.finish_reason, "logprobs": None}
        if chat:
            choice["message"] = {"role": "assistant", "content": generation.text}
        else:
            choice["text"] = generation.text
        return web.json_response({
            "id": ident, "object": "chat.completion" if chat else "text_completion", "created": int(time.time()),
            "model": req.model, "choices": [choice], "usage": _usage(len(prompt), generation.num_tokens)})

    def _encode(self, persona: ServedPersona, req: ChatRequest | CompletionRequest) -> list[int]:
        try:
            if isinstance(req, ChatRequest):
                messages = [{"role": m.role, "content": m.content} for m in req.messages]
                return self.pool.encode_chat(persona, messages)
            return self.pool.encode_text(persona, req.prompt)
        except InvalidInput as err:
            raise ApiError(400, str(err), "messages" if isinstance(req, ChatRequest) else "prompt") from None

    async def _stream(self, persona: ServedPersona, prompt: list[int], sampling: Any,
                      arrived: float) -> AsyncIterator[str | Generation]:
        """The answer's pieces of text as they are decoded, then its Generation."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()

        def put(item: Any) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        def work() -> None:
            try:
                put(self.pool.generate(persona, prompt, sampling, on_text=put))
            except BaseException as err:
                put(err)
            put(_DONE)

        future = loop.run_in_executor(self._workers, work)
        first = True
        try:
            while (item := await queue.get()) is not _DONE:
                if isinstance(item, BaseException):
                    raise item
                if first and isinstance(item, str):
                    self.metrics.first_token.observe(time.monotonic() - arrived)
                    first = False
                yield item
        finally:
            await asyncio.shield(future)  # the engine finishes the answer even if the client left

    async def _sse(self, request: web.Request, pieces: AsyncIterator[str | Generation], ident: str,
                   req: ChatRequest | CompletionRequest, chat: bool, prompt_tokens: int) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        created = int(time.time())
        kind = "chat.completion.chunk" if chat else "text_completion"

        def chunk(piece: str | None, finish: str | None) -> dict[str, Any]:
            choice: dict[str, Any] = {"index": 0, "finish_reason": finish, "logprobs": None}
            if chat:
                choice["delta"] = {"role": "assistant", "content": piece} if piece is not None else {}
            else:
                choice["text"] = piece or ""
            return {"id": ident, "object": kind, "created": created, "model": req.model, "choices": [choice]}

        async def send(doc: Any) -> None:
            await response.write(f"data: {json.dumps(doc)}\n\n".encode())

        generation: Generation | None = None
        try:
            async for item in pieces:
                if isinstance(item, Generation):
                    generation = item
                else:
                    await send(chunk(item, None))
        except CharacterError as err:  # after the headers: the error goes in the stream
            await send(ApiError(400, str(err)).body())
        if generation is not None:
            self.metrics.tokens.labels("completion").inc(generation.num_tokens)
            await send(chunk(None, generation.finish_reason))
            if req.stream_options is not None and req.stream_options.include_usage:
                await send({"id": ident, "object": kind, "created": created, "model": req.model, "choices": [],
                            "usage": _usage(prompt_tokens, generation.num_tokens)})
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def _in_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._workers, fn, *args)


def body_budget(limits: Limits) -> Budget:
    """What the largest valid request body holds (a chat of `max_messages` messages of 4 values
    each, and the other fields), checked as it is parsed: no deep or wide JSON reaches the
    request model."""
    return Budget.remote(max_nodes=4 * limits.max_messages + 32, max_depth=_BODY_DEPTH)


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def build_server(store: Store, options: ServerOptions, tls_dir: str | Path | None = None,
                 tokens_file: str | Path | None = None, platform: PlatformConfig | None = None,
                 device: Any = None, engine: ServingEngineKind = "transformers",
                 dtype: str = "auto") -> PersonaServer:
    """A server as `oct serve-personas` runs it: TLS from `tls_dir`, else $OCT_TLS_DIR, else the
    local CA `oct up` makes under $OCT_HOME; tokens from `tokens_file`, else $OCT_AUTH_TOKENS,
    else `oct up`'s local token file (the `oct` client's token, $OCT_HOME/auth/token, is its
    admin); limits and registered models from the platform config; `engine` and `dtype` as for
    PersonaPool."""
    platform = platform or load_platform_config()
    tls = TlsMaterial.load(tls_dir or os.environ.get(TLS_DIR_ENV) or ensure_local_pki())
    tokens = tokens_file or os.environ.get(TOKENS_ENV) or ensure_local_token()
    metrics = ServingMetrics()
    pool = PersonaPool(store, platform.limits.max_personas_loaded, device, on_load=metrics.loaded,
                       on_evict=metrics.evicted, engine=engine, dtype=dtype)
    return PersonaServer(store, pool, Authenticator.from_file(tokens), tls, platform.limits, metrics, options)
