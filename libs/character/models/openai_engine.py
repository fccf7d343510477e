"""The OpenAI-compatible engine: generation and scoring through an HTTP server (vLLM's
`vllm serve`, llama.cpp's server, a hosted API), with the official `openai` client.

- One request per conversation, at most `concurrency` in flight; results in input order.
- Without `tokenizer`: chat completions (`/v1/chat/completions`); the server renders the
  conversation with its own chat template. A prefill cannot be continued that way (chat APIs
  open a new turn), so it is refused; an empty prefill is a fresh turn and is dropped.
- With `tokenizer` (a model reference for the served model's tokenizer, see
  `refs.resolve_model`): conversations are rendered here by `chat.render`, exactly as the
  other engines render them (prefills included), and the text goes to `/v1/completions`;
  the server tokenizes it.
- Sampling: max_new_tokens, temperature (0 is greedy) and top_p map to the request's fields;
  with a seed, request i gets `request_seed(seed, i)`, so the same seed and inputs give the
  same outputs however the server batches them. repetition_penalty other than 1 is sent as
  vLLM's `repetition_penalty` field; `extra_body` adds server-specific fields to every request
  (e.g. llama.cpp's `{"repeat_penalty": 1.0, "top_k": 0, "min_p": 0.0}`, whose defaults
  otherwise differ from the other engines').
- finish_reason "length" stays "length", "stop" is "stop"; num_tokens is the server's
  `usage.completion_tokens` (vLLM counts the end-of-turn token, llama.cpp does not).
- adapter: the name of an adapter the server already serves (vLLM: `--enable-lora
  --lora-modules NAME=PATH`), sent as the request's model. A local folder cannot be sent.
- Steering is not supported: an HTTP server has no hooks into the residual stream.
- Scoring needs `tokenizer` and a server whose `/v1/completions` returns the prompt's
  log-probabilities with `echo=True` and `logprobs` (vLLM and llama.cpp do, hosted chat APIs
  do not). The text sent is the rendered prompt + the continuation + the end-of-turn token;
  the continuation's tokens are the ones after the prompt's when this tokenizer tokenizes
  that text (so they are the other engines' tokens, unless the continuation's first token
  merges with the prompt's last, e.g. a prefill ending mid-word), and their log-probabilities
  are summed. The server must tokenize like `tokenizer`; a different token count is an error.
- Errors of the HTTP layer become CharacterErrors that name the server and the model:
  connection refused and timeouts `ServerUnavailable`, 401/403 and 400 `InvalidInput`, 404
  `NotFound`. Transient ones (connection errors, timeouts, 408/409/429/5xx) are first retried
  `max_retries` times by the client, with backoff.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import openai

from character.errors import CharacterError, InvalidInput, NotFound
from character.models.chat_template import (
    encode_for_scoring,
    end_of_turn_token,
    render,
    shared_prefix_length,
    validate_conversation,
)
from character.models.engine import (
    AdapterRef,
    Conversation,
    Engine,
    Generation,
    SamplingParams,
    Steering,
    refuse_steering,
    request_seed,
)
from character.progress import Progress, ProgressEvent, silent

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
"""vLLM's `vllm serve` default address; OPENAI_BASE_URL overrides it."""

T = TypeVar("T")
R = TypeVar("R")


class ServerUnavailable(CharacterError):
    """The server cannot be reached, timed out, or failed (5xx, rate limits) after the retries."""


class OpenAIEngine(Engine):
    """Generates and scores through an OpenAI-compatible server (see the module docstring).

    model: the model name the server serves (GET {base_url}/models lists them).
    base_url: the API root, usually ending in /v1 (default: OPENAI_BASE_URL, else vLLM's
    http://127.0.0.1:8000/v1). api_key: default the variable api_key_env (OPENAI_API_KEY), else "EMPTY" (local servers
    need none). timeout_s: per request. concurrency: requests in flight at once. tokenizer:
    a model reference for the served model's tokenizer, needed for prefills and scoring.
    max_retries: the client's retries of transient errors. extra_body: server-specific
    request fields sent with every request."""

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout_s: float = 600.0,
        concurrency: int = 8,
        tokenizer: str | Path | None = None,
        max_retries: int = 2,
        extra_body: dict[str, Any] | None = None,
    ):
        if not isinstance(model, str) or not model.strip():
            raise InvalidInput("give the model name the server serves (GET <base_url>/models)", where="model")
        base_url = base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise InvalidInput(
                f"{base_url!r} is not an http(s) URL; give the server's API root, e.g. {DEFAULT_BASE_URL}",
                where="base_url",
            )
        if not timeout_s > 0:
            raise InvalidInput(f"timeout_s must be positive, got {timeout_s}", where="timeout_s")
        if concurrency < 1:
            raise InvalidInput(f"concurrency must be at least 1, got {concurrency}", where="concurrency")
        if max_retries < 0:
            raise InvalidInput(f"max_retries must be 0 or more, got {max_retries}", where="max_retries")
        self.name = model
        self.api_key_env = api_key_env
        self.base_url = base_url.rstrip("/")
        self.timeout_s = float(timeout_s)
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.extra_body = dict(extra_body or {})
        self.tokenizer: Any = None
        if tokenizer is not None:
            from character.models.loading import load_tokenizer
            from character.models.refs import resolve_model

            self.tokenizer = load_tokenizer(resolve_model(tokenizer))
        self._client = openai.OpenAI(
            api_key=api_key or os.environ.get(api_key_env) or "EMPTY",
            base_url=self.base_url,
            timeout=self.timeout_s,
            max_retries=max_retries,
        )

    def __repr__(self) -> str:
        return f"OpenAIEngine({self.name!r}, base_url={self.base_url!r})"

    def close(self) -> None:
        """Close the client's connections."""
        self._client.close()

    # --- generation ---------------------------------------------------------------------
    def generate(
        self,
        conversations: Sequence[Conversation],
        sampling: SamplingParams,
        adapter: AdapterRef | None = None,
        steering: Steering | None = None,
        progress: Progress = silent,
    ) -> list[Generation]:
        refuse_steering(steering, "openai", "an HTTP server has no residual-stream hooks")
        model = self._served_model(adapter)
        requests = [self._request(conversation, i) for i, conversation in enumerate(conversations)]

        def one(i: int, request: tuple[str, Any]) -> Generation:
            endpoint, payload = request
            kw = {"model": model, **self._sampling(sampling, i)}
            if endpoint == "chat":
                chat = self._call(self._client.chat.completions.create, messages=payload, **kw)
                answer = chat.choices[0]
                return self._generation(model, answer.message.content or "", answer.finish_reason, chat.usage)
            completion = self._call(self._client.completions.create, prompt=payload, **kw)
            choice = completion.choices[0]
            return self._generation(model, choice.text, choice.finish_reason, completion.usage)

        return self._map(one, requests, progress, "generate")

    def _request(self, conversation: Conversation, index: int) -> tuple[str, Any]:
        """("completion", rendered text) with a tokenizer, else ("chat", messages)."""
        where = f"conversations[{index}]"
        messages = validate_conversation(conversation, where=where)
        if self.tokenizer is not None:
            return "completion", render(self.tokenizer, messages, add_generation_prompt=True)
        if messages[-1]["role"] == "assistant":
            if messages[-1]["content"]:
                raise InvalidInput(
                    "the conversation ends with an assistant message (a prefill), which chat "
                    "completions cannot continue; create the engine with tokenizer=<the served "
                    "model's reference> to render it here and use the completions endpoint",
                    where=where,
                )
            messages = messages[:-1]  # an empty prefill is a fresh assistant turn
        return "chat", messages

    def _sampling(self, sampling: SamplingParams, index: int) -> dict[str, Any]:
        kw: dict[str, Any] = {"max_tokens": sampling.max_new_tokens, "temperature": sampling.temperature}
        if sampling.temperature > 0:
            kw["top_p"] = sampling.top_p
            if sampling.seed is not None:
                kw["seed"] = request_seed(sampling.seed, index)
        extra = dict(self.extra_body)
        if sampling.repetition_penalty != 1.0:
            extra["repetition_penalty"] = sampling.repetition_penalty
        if extra:
            kw["extra_body"] = extra
        return kw

    def _generation(self, model: str, text: str, finish_reason: Any, usage: Any) -> Generation:
        if finish_reason not in ("stop", "length"):
            raise CharacterError(
                f"{self._server()} ended a request for {model!r} with finish_reason {finish_reason!r} "
                "(expected 'stop' or 'length')"
            )
        if usage is None or usage.completion_tokens is None:
            raise CharacterError(f"{self._server()} reported no token usage for {model!r}; cannot count tokens")
        return Generation(text=text, finish_reason=finish_reason, num_tokens=int(usage.completion_tokens))

    # --- scoring ------------------------------------------------------------------------
    def score(
        self,
        conversations: Sequence[Conversation],
        continuations: Sequence[str],
        adapter: AdapterRef | None = None,
        progress: Progress = silent,
    ) -> list[float]:
        tokenizer = self.tokenizer
        if tokenizer is None:
            raise InvalidInput(
                "scoring renders and tokenizes conversations here; create the engine with "
                "tokenizer=<the served model's reference>",
                where="tokenizer",
            )
        prompts, _ = encode_for_scoring(tokenizer, conversations, continuations, 0)
        model = self._served_model(adapter)
        eot = end_of_turn_token(tokenizer)
        requests = []  # (text, its token count, the continuation's token count)
        for conversation, continuation, prompt in zip(conversations, continuations, prompts, strict=True):
            text = render(tokenizer, conversation, add_generation_prompt=True) + continuation + eot
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            shared = shared_prefix_length([ids, prompt], min(len(ids), len(prompt)))
            requests.append((text, len(ids), len(ids) - shared))

        def one(_i: int, request: tuple[str, int, int]) -> float:
            text, tokens, size = request
            completion = self._call(
                self._client.completions.create,
                model=model,
                prompt=text,
                echo=True,
                logprobs=1,
                max_tokens=1,
                temperature=0.0,
                **({"extra_body": self.extra_body} if self.extra_body else {}),
            )
            return self._continuation_logprob(model, completion, tokens, size)

        return self._map(one, requests, progress, "score")

    def _continuation_logprob(self, model: str, completion: Any, tokens: int, size: int) -> float:
        """The summed log-probabilities of the last `size` of the `tokens` prompt tokens, from a
        completion with echo=True (the prompt's log-probabilities, then the generated tokens')."""
        choice = completion.choices[0]
        logprobs = getattr(choice.logprobs, "token_logprobs", None)
        usage = completion.usage
        missing = (
            f"{self._server()} returned no log-probabilities of the prompt for {model!r} "
            "(/v1/completions with echo=True and logprobs=1); scoring needs a server that does, "
            "such as vLLM or llama.cpp's server"
        )
        if not logprobs or usage is None:
            raise CharacterError(missing)
        if usage.prompt_tokens is not None and usage.prompt_tokens not in (tokens, tokens + 1):
            raise CharacterError(
                f"{self._server()} counted {usage.prompt_tokens} prompt tokens where the engine's "
                f"tokenizer counts {tokens}; pass tokenizer=<the reference of the model {model!r} "
                "the server serves>"
            )
        echoed = logprobs[: len(logprobs) - int(usage.completion_tokens or 0)]
        values = echoed[-size:]
        if len(values) < size or any(v is None for v in values):
            raise CharacterError(missing)
        return float(sum(values))

    # --- requests -----------------------------------------------------------------------
    def _served_model(self, adapter: AdapterRef | None) -> str:
        """The model name to request: the base model's, or a served adapter's name."""
        if adapter is None:
            return self.name
        text = str(adapter)
        path = Path(text).expanduser()
        if isinstance(adapter, Path) or text.startswith((".", "/", "~")) or path.exists():
            raise InvalidInput(
                f"{text!r} is a local adapter folder, which an HTTP server cannot load from here; "
                "start the server with the adapter loaded (vLLM: --enable-lora --lora-modules "
                "NAME=PATH) and pass adapter=NAME, or use engine 'transformers'",
                where="adapter",
            )
        if not text.strip():
            raise InvalidInput("an adapter name cannot be empty", where="adapter")
        return text

    def _server(self) -> str:
        return f"the OpenAI-compatible server at {self.base_url}"

    def _call(self, create: Callable[..., R], **kw: Any) -> R:
        """create(**kw), with the client's errors turned into CharacterErrors naming the server,
        the model (kw["model"]) and what to do."""
        model = kw["model"]
        server = self._server()
        try:
            return create(**kw)
        except openai.APITimeoutError as exc:
            raise ServerUnavailable(
                f"{server} did not answer a request for {model!r} within {self.timeout_s:g} s "
                f"({self.max_retries} retries); check that it is up and not overloaded, or raise timeout_s"
            ) from exc
        except openai.APIConnectionError as exc:
            raise ServerUnavailable(
                f"cannot reach {server} (model {model!r}, {self.max_retries} retries): "
                f"{exc.__cause__ or exc}; start the server or fix base_url"
            ) from exc
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            raise InvalidInput(
                f"{server} refused the API key for {model!r} (HTTP {exc.status_code}: {_detail(exc)}); "
                f"set {self.api_key_env} or pass api_key",
                where="api_key",
            ) from exc
        except openai.NotFoundError as exc:
            raise NotFound(
                f"{server} has no model {model!r} or no such endpoint (HTTP 404: {_detail(exc)}); "
                f"GET {self.base_url}/models lists the served models, and base_url usually ends in /v1"
            ) from exc
        except (openai.BadRequestError, openai.UnprocessableEntityError) as exc:
            raise InvalidInput(
                f"{server} rejected a request for {model!r} (HTTP {exc.status_code}: {_detail(exc)})",
                where="request",
            ) from exc
        except openai.APIStatusError as exc:
            raise ServerUnavailable(
                f"{server} failed a request for {model!r} (HTTP {exc.status_code}: {_detail(exc)}, "
                f"after {self.max_retries} retries); try again later or check the server's log"
            ) from exc
        except openai.OpenAIError as exc:
            raise CharacterError(f"{server}, model {model!r}: {exc}") from exc

    def _map(self, fn: Callable[[int, T], R], items: Sequence[T], progress: Progress, task: str) -> list[R]:
        """[fn(i, item) ...] in order, `concurrency` at a time; the first error is raised and the
        requests not yet started are cancelled."""
        n = len(items)
        if n == 0:
            return []
        results: list[Any] = [None] * n
        progress(ProgressEvent(task, 0, n))
        pool = ThreadPoolExecutor(max_workers=min(self.concurrency, n), thread_name_prefix="openai-engine")
        try:
            futures = {pool.submit(fn, i, item): i for i, item in enumerate(items)}
            for done, future in enumerate(as_completed(futures), start=1):
                results[futures[future]] = future.result()
                progress(ProgressEvent(task, done, n))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return results


def _detail(exc: Any) -> str:
    """The server's error message from an APIStatusError's body (OpenAI, vLLM and llama.cpp
    shapes), else the client's message."""
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        message = inner.get("message") if isinstance(inner, dict) else inner
        if message:
            return str(message)
        if body.get("detail"):
            return str(body["detail"])
    return str(exc.message)
