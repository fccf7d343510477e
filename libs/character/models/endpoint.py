"""Models served over an OpenAI-compatible HTTP API (a hosted teacher or judge), as a run spec
names them: `endpoints: {NAME: {base_url: ..., ...}}`, then `teacher: NAME` or `judge: NAME`.

The API key is never part of a spec (specs are stored in run records and sent over gRPC):
the spec names the environment variable that holds it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from character.models.engine import Engine


class Endpoint(BaseModel):
    """One model behind an OpenAI-compatible server (vLLM's `vllm serve`, llama.cpp, a hosted API)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str
    """The API root, e.g. http://vllm-judge:8000/v1."""
    served_model: str | None = Field(None, min_length=1)
    """The model's name at the server (GET <base_url>/models); default: the endpoint's name."""
    tokenizer: str | None = Field(None, min_length=1)
    """A model reference for the served model's tokenizer: conversations are then rendered
    here, as for every other engine, which prefills and scoring (the forced-choice judge,
    preference accuracy) need. Without it the server renders them (chat completions)."""
    api_key_env: str = Field("OPENAI_API_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    """The environment variable holding the API key, where the worker runs (a Kubernetes
    Secret mounted as an env var); unset means no key (local servers)."""
    concurrency: int = Field(8, ge=1, le=256)
    """Requests in flight at once."""
    timeout_s: float = Field(600.0, gt=0)
    """Per request, before the client's retries."""
    extra_body: dict[str, Any] = {}
    """Server-specific request fields, e.g. llama.cpp's {"repeat_penalty": 1.0, "top_k": 0,
    "min_p": 0.0} to sample like the other engines."""

    @field_validator("base_url")
    @classmethod
    def _http(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"{url!r} is not an http(s) URL; give the server's API root, e.g. http://host:8000/v1")
        return url

    def identity(self, name: str) -> dict[str, Any]:
        """What decides this endpoint's outputs (part of the content address of the stages
        that use it); not the key, the timeout or the concurrency."""
        return {"name": name, "base_url": self.base_url, "served_model": self.served_model or name,
                "tokenizer": self.tokenizer, "extra_body": self.extra_body}

    def open(self, name: str) -> Engine:
        from character.models import get_engine

        return get_engine(
            "openai",
            self.served_model or name,
            base_url=self.base_url,
            api_key_env=self.api_key_env,
            timeout_s=self.timeout_s,
            concurrency=self.concurrency,
            tokenizer=self.tokenizer,
            extra_body=self.extra_body,
        )
