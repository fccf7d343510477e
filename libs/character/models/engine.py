"""The generation engine interface, shared by every backend.

A conversation is a list of `{"role", "content"}` messages. When the last
message has role "assistant" it is a *prefill*: the engine continues that turn
instead of opening a new one, and returns only the continuation.

Backends (one file each): `transformers_engine` (CPU/GPU), `vllm_engine` (GPU
images), `openai_engine` (an OpenAI-compatible HTTP server, e.g. a hosted judge).
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from character.errors import InvalidInput
from character.progress import Progress, silent

Message = dict[str, str]
Conversation = list[Message]


class SamplingParams(BaseModel):
    """How to sample one answer per conversation."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_new_tokens: int = Field(256, ge=1)
    """Upper bound on generated tokens; an answer that hits it ends with finish_reason "length"."""
    temperature: float = Field(0.7, ge=0.0)
    """0 means greedy decoding."""
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    """Nucleus sampling mass."""
    repetition_penalty: float = Field(1.0, gt=0.0)
    """>1 discourages repeating tokens (HF semantics)."""
    seed: int | None = None
    """Seed for sampling; the same seed, inputs and batch give the same outputs."""


_MAX_SEED = 2**63 - 1


def request_seed(seed: int, index: int) -> int:
    """The seed of request `index` of a call seeded with `seed` (stable across processes), for
    backends that sample each request on its own: the same seed and inputs give the same
    outputs whatever else the backend runs, and repeated conversations still differ."""
    digest = hashlib.sha256(f"{seed}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & _MAX_SEED


class Generation(BaseModel):
    """One generated answer."""

    text: str
    """The continuation only (never the prompt or prefill), without the end-of-turn token."""
    finish_reason: Literal["stop", "length"]
    """"stop": ended at end of turn; "length": cut at max_new_tokens."""
    num_tokens: int
    """Generated tokens, counting the end-of-turn token if any."""


@dataclass(frozen=True)
class Steering:
    """An activation-steering intervention: `coefficient * vectors[layer]` is added to the
    residual stream output of each listed decoder layer, at every position."""

    vectors: dict[int, list[float]]
    """Decoder-layer index -> direction (hidden-size floats)."""
    coefficient: float = 1.0


AdapterRef = str | Path
"""A local PEFT adapter folder (for the openai engine: the name of an adapter its server serves)."""


def refuse_steering(steering: Steering | None, engine: str, why: str) -> None:
    """InvalidInput when a backend that cannot steer (`why`) is asked to."""
    if steering is not None:
        raise InvalidInput(
            f"the {engine} engine cannot steer activations ({why}); use engine 'transformers' for steering",
            where="steering",
        )


class Engine(ABC):
    """Generates and scores chat conversations with one base model."""

    name: str
    """The model reference the engine serves (for logs and records)."""
    precision: str = ""
    """The weights' precision where the engine runs the model itself ("float32", "bfloat16"):
    part of what decides a judge's verdicts. Empty where the engine cannot know (an HTTP
    endpoint: its server decides)."""

    @abstractmethod
    def generate(
        self,
        conversations: Sequence[Conversation],
        sampling: SamplingParams,
        adapter: AdapterRef | None = None,
        steering: Steering | None = None,
        progress: Progress = silent,
    ) -> list[Generation]:
        """One answer per conversation, in order."""

    @abstractmethod
    def score(
        self,
        conversations: Sequence[Conversation],
        continuations: Sequence[str],
        adapter: AdapterRef | None = None,
        progress: Progress = silent,
    ) -> list[float]:
        """Sum of token log-probabilities of each continuation as the assistant's reply to the
        matching conversation (the reply's end-of-turn token included). `progress` gets
        ("score", done, total) events in continuations scored."""


def per_byte(log_prob: float, continuation: str) -> float:
    """A continuation's log-probability (`Engine.score`) per UTF-8 byte of its text: comparable
    across continuations of different lengths (lm-eval's `acc_norm`) and across tokenizers. The
    end-of-turn token is scored too, so even an empty continuation has something to share."""
    return log_prob / max(len(continuation.encode("utf-8")), 1)
