"""The operator's platform config: what remote submitters may name and how much work they may ask for.

Specs submitted over gRPC name models, endpoints and data sets by name only; this file maps
the names to what the platform really uses (the operator's model folders or buckets, the HTTP
endpoints with the Secret-backed variable holding their key) and bounds every numeric knob.
It is a YAML file read from $OCT_PLATFORM_CONFIG (in the Helm chart a ConfigMap mounted at
/etc/oct/platform/platform.yaml); without one the defaults below apply: bundled models and
prompts only, no endpoints. Model names are resolved wherever models load (the workers, `oct
run` too); the rest applies to what arrives over the network.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from character.errors import InvalidInput, from_validation
from character.models.endpoint import Endpoint
from character.models.registry import PLATFORM_CONFIG_ENV, check_names
from character.yamldoc import read_mapping


class Limits(BaseModel):
    """Maxima for everything a remote caller can make the platform do (each operator-configurable)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_seed: int = Field(default=2**32 - 1, ge=0)
    """Largest `seed` a spec may set (the samplers and trainers take 32-bit seeds)."""
    knob_factor: float = Field(default=4.0, ge=1.0)
    """A per-stage override (`stages.<stage>.<field>`) may be at most this many times the
    largest of the field's default and its demo and full presets (absolute values)."""
    knob_default_max: float = Field(default=10_000.0, gt=0)
    """The maximum of a numeric override whose default and presets are all zero or unset."""
    knob_max: dict[str, dict[str, float]] = {}
    """Explicit maxima per stage and field, e.g. {"dpo": {"epochs": 3}}; they win over the factor."""
    max_spec_bytes: int = Field(default=1024 * 1024, ge=1024)
    """Largest spec (YAML text) SubmitRun takes."""
    max_spec_depth: int = Field(default=16, ge=4, le=128)
    """Deepest nesting of mappings and lists in a spec (bounded: the parser recurses per level)."""
    max_spec_nodes: int = Field(default=20_000, ge=1000, le=1_000_000)
    """Values (scalars, lists, mappings) in a spec, counted while it is parsed: the work a spec
    can cause is bounded by this, not only by its size in bytes."""
    max_traits: int = Field(default=200, ge=1)
    """Traits in an inline constitution."""
    max_questions: int = Field(default=5_000, ge=1)
    """Seed questions in an inline constitution, all traits together."""
    max_conversations: int = Field(default=4096, ge=1)
    """Conversations per Generate or Score call (a full-scale stage sends a few hundred at once)."""
    max_new_tokens: int = Field(default=4096, ge=1)
    """`max_new_tokens` per Generate call."""
    max_steering_layers: int = Field(default=256, ge=1)
    """Layers a steering request may name."""
    max_steering_values: int = Field(default=65_536, ge=1)
    """Length of one steering vector (a model's hidden size)."""
    max_models_loaded: int = Field(default=2, ge=1)
    """Models the generation service keeps loaded; the least recently used one is dropped first."""
    max_concurrent_rpcs: int = Field(default=256, ge=8)
    """RPCs a service handles at once; more get RESOURCE_EXHAUSTED (health has its own port)."""
    max_streams_per_caller: int = Field(default=16, ge=1)
    """Open WatchRun streams per caller at the controller; more get RESOURCE_EXHAUSTED. (Workers,
    reached only by platform components, bound streams by max_concurrent_rpcs alone.)"""
    max_active_runs_per_owner: int = Field(default=4, ge=1)
    """Unfinished runs one owner may have; SubmitRun beyond it gets RESOURCE_EXHAUSTED."""
    rpc_timeout_s: float = Field(default=60.0, gt=0, le=3600)
    """Longest a controller RPC handler (SubmitRun, GetRun, ...; not WatchRun's stream) runs, or
    the caller's deadline when sooner; past it the caller gets DEADLINE_EXCEEDED."""
    stage_timeout_s: float = Field(default=48 * 3600.0, gt=0)
    """A stage attempt running longer is cancelled and counted as failed (the default deadline)."""
    max_personas_loaded: int = Field(default=8, ge=1)
    """Personas (adapters, or merged models) the persona server keeps loaded; the least recently
    used one is dropped first and loaded again from the store when asked for."""
    max_request_bytes: int = Field(default=1024 * 1024, ge=1024)
    """Largest request body the persona server reads (JSON bytes)."""
    max_messages: int = Field(default=256, ge=1)
    """Messages in one chat completion request."""
    max_prompt_chars: int = Field(default=200_000, ge=1)
    """Characters of one request's prompt (a completion's prompt, or a chat's messages together)."""
    max_requests_per_caller: int = Field(default=8, ge=1)
    """Requests one caller may have in flight at the persona server; more get 429. The
    completion length is bounded by `max_new_tokens`."""


class PlatformConfig(BaseModel):
    """What the operator offers to remote submitters (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    models: dict[str, str] = {}
    """Model names a spec may use for model, teacher or judge -> the reference the platform
    loads (a folder in the pods, s3://platform-bucket/prefix, a hub name), e.g.
    {"qwen-7b": "s3://character/models/qwen2.5-7b-instruct"}. Bundled names are always allowed."""
    endpoints: dict[str, Endpoint] = {}
    """OpenAI-compatible servers a spec may name as teacher or judge -> their declaration
    (base_url, served_model, tokenizer, api_key_env: the environment variable, filled from a
    Secret in the pods, that holds the key). Specs can set neither the URL nor the variable."""
    chat_prompts: dict[str, str] = {}
    """Data set names a spec may use for chat_prompts -> their source (a path in the pods or
    an s3:// URI). "bundled" is always allowed."""
    task_clients: list[str] = []
    """Certificate names (common name or DNS SAN) a worker accepts StartTask/CancelTask from;
    empty: any certificate the platform CA signed."""
    limits: Limits = Field(default_factory=Limits)
    """Maxima for specs and requests."""

    @field_validator("models", "chat_prompts", "endpoints")
    @classmethod
    def _names(cls, value: dict[str, object]) -> dict[str, object]:
        check_names(value)
        return value


def load_platform_config(path: str | Path | None = None) -> PlatformConfig:
    """The config at `path`, else at $OCT_PLATFORM_CONFIG, else the defaults."""
    path = path or os.environ.get(PLATFORM_CONFIG_ENV)
    if not path:
        return PlatformConfig()
    doc = read_mapping(path, "platform config")
    try:
        return PlatformConfig.model_validate(doc)
    except ValidationError as err:
        raise from_validation(err, str(path)) from None


def finite(value: float, where: str) -> float:
    """`value`, refused when NaN or infinite (a request's numbers must mean something)."""
    if not math.isfinite(value):
        raise InvalidInput(f"{value} is not a finite number", where=where)
    return value
