"""The OpenAI-compatible API's requests and errors, as the persona server takes and gives them.

Requests are validated whole before any work: unknown fields, wrong types and values out of
range are a 400 naming the field (`param`), in OpenAI's error shape; then the platform's
limits (`check_bounds`), before the model is looked up."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from character.models.engine import SamplingParams
from character.platform import Limits

DEFAULT_PORT = 8443
"""The HTTPS port `oct serve-personas` listens on unless told otherwise (the curl line `oct`
prints after a publish names it too)."""

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 405: "invalid_request_error", 429: "rate_limit_error",
               500: "server_error"}


class ApiError(Exception):
    """An answer other than 200, in OpenAI's shape: {"error": {message, type, param, code}}."""

    def __init__(self, status: int, message: str, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param = status, message, param

    def body(self) -> dict[str, Any]:
        kind = ERROR_TYPES.get(self.status, "invalid_request_error")
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.status}}


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: bool = False
    """Send a last chunk with the request's token counts."""


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    """A base model, a run id (its trained persona) or a published NAME[:TAG]."""
    max_tokens: int | None = Field(None, ge=1)
    """Longest answer in tokens (default 256; at most the platform's `limits.max_new_tokens`)."""
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    """0: greedy."""
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = Field(None, ge=0)
    """The same seed and request give the same answer."""
    stream: bool = False
    """Answer as server-sent events, a chunk per piece of text."""
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, le=1)
    """Answers per request: only 1."""
    user: str | None = Field(None, max_length=256)
    """The end user, for the client's own bookkeeping (not used)."""

    def sampling(self, default_tokens: int) -> SamplingParams:
        return SamplingParams(max_new_tokens=self.max_tokens or default_tokens, temperature=self.temperature,
                              top_p=self.top_p, repetition_penalty=1.0, seed=self.seed)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str
    """Text only."""
    name: str | None = Field(None, max_length=64)
    """A participant's name (accepted, not shown to the model)."""


class ChatRequest(_Request):
    """POST /v1/chat/completions."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    """The newer name of max_tokens (give one of them)."""

    def prompt_chars(self) -> int:
        return sum(len(m.content) for m in self.messages)


class CompletionRequest(_Request):
    """POST /v1/completions."""

    prompt: str = Field(min_length=1)
    """One text prompt, continued as is (no chat template)."""

    def prompt_chars(self) -> int:
        return len(self.prompt)


def parse(kind: type[ChatRequest] | type[CompletionRequest], body: Any) -> ChatRequest | CompletionRequest:
    """The request, or ApiError 400 naming the first field that is wrong."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    try:
        request = kind.model_validate(body)
    except ValidationError as err:
        first = err.errors()[0]  # always located: the body is an object, and no validator spans fields
        param = ".".join(str(p) for p in first["loc"])
        raise ApiError(400, f"{param}: {first['msg']}", param) from None
    if isinstance(request, ChatRequest) and request.max_completion_tokens is not None:
        if request.max_tokens is not None and request.max_tokens != request.max_completion_tokens:
            raise ApiError(400, "max_tokens and max_completion_tokens disagree; give one", "max_completion_tokens")
        request.max_tokens = request.max_completion_tokens
    return request


def check_bounds(req: ChatRequest | CompletionRequest, limits: Limits) -> None:
    """ApiError 400 naming the field and the limit when the request asks for more than the
    platform allows: messages, prompt characters, max_tokens, seed."""
    if isinstance(req, ChatRequest) and len(req.messages) > limits.max_messages:
        raise ApiError(400, f"{len(req.messages)} messages, more than {limits.max_messages} "
                            "(limits.max_messages)", "messages")
    if req.prompt_chars() > limits.max_prompt_chars:
        field = "messages" if isinstance(req, ChatRequest) else "prompt"
        raise ApiError(400, f"the prompt is {req.prompt_chars()} characters, more than {limits.max_prompt_chars} "
                            "(limits.max_prompt_chars)", field)
    if req.max_tokens is not None and req.max_tokens > limits.max_new_tokens:
        raise ApiError(400, f"max_tokens {req.max_tokens} is more than {limits.max_new_tokens} "
                            "(limits.max_new_tokens)", "max_tokens")
    if req.seed is not None and req.seed > limits.max_seed:
        raise ApiError(400, f"seed {req.seed} is more than {limits.max_seed} (limits.max_seed)", "seed")
