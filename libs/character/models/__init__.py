"""Models: where weights come from, the chat renderer, and generation engines behind one
interface (`Engine`). Backends are imported lazily, so vLLM need not be installed."""

from __future__ import annotations

import importlib
from typing import Any

from character.errors import CharacterError, InvalidInput
from character.models.chat_template import END_OF_TURN, TRAINING_TEMPLATE, render, with_training_template
from character.models.engine import (
    AdapterRef,
    Conversation,
    Engine,
    Generation,
    Message,
    SamplingParams,
    Steering,
)
from character.models.loading import load_model
from character.models.prepare import prepare_model, prepare_smollm2, prepare_tiny
from character.models.refs import BUNDLED, resolve_model

__all__ = [
    "BUNDLED",
    "END_OF_TURN",
    "ENGINES",
    "TRAINING_TEMPLATE",
    "AdapterRef",
    "Conversation",
    "Engine",
    "Generation",
    "Message",
    "SamplingParams",
    "Steering",
    "get_engine",
    "load_model",
    "prepare_model",
    "prepare_smollm2",
    "prepare_tiny",
    "render",
    "resolve_model",
    "with_training_template",
]

ENGINES: dict[str, str] = {
    "transformers": "character.models.transformers_engine:TransformersEngine",
    "vllm": "character.models.vllm_engine:VLLMEngine",
    "openai": "character.models.openai_engine:OpenAIEngine",
}
"""Engine kind -> "module:Class", imported on first use. A backend adds one line here."""


def get_engine(kind: str, model: str, **kw: Any) -> Engine:
    """An engine of `kind` serving `model` (a model reference); `kw` go to its constructor."""
    if kind not in ENGINES:
        raise InvalidInput(
            f"unknown engine {kind!r}; available: {', '.join(sorted(ENGINES))}", where="engine"
        )
    module_name, _, class_name = ENGINES[kind].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CharacterError(
            f"the {kind!r} engine cannot be used here: {exc}. It needs extra packages "
            "(vLLM is in the GPU image only); use engine 'transformers' instead"
        ) from exc
    engine_class = getattr(module, class_name)
    engine: Engine = engine_class(model, **kw)
    return engine
