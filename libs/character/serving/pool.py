"""The persona server's engines: one base model in memory per base, personas loaded on use.

- A base model is loaded once (a `TransformersEngine`, the project's own engine) and kept.
- A persona's adapters are fetched from the store on first use (`Store.materialize`, which
  checks every file against the artifact's manifest), checked against the content digest the
  run recorded, stacked into one adapter (`models.adapters.stack_adapters`, cached under
  $OCT_HOME/cache/personas by the persona's digest) and served per request on its base
  engine. A persona with only merged weights is loaded as an engine of its own.
- At most `max_loaded` personas stay loaded (least recently used first out): an evicted
  adapter's weights are dropped from its engine, an evicted merged model is released; either
  loads again on its next request.
- Two engines (`engine=`): "transformers" (CPU or CUDA), whose calls on one model run one at a
  time (its lock), so requests for personas on one base take turns and the same request gives
  the same greedy text whatever else is being served (a padded batch would fork greedy
  near-ties); and "vllm" (GPU), where concurrent requests for any personas on one base share
  batches (vLLM's multi-LoRA, `VLLMEngine.generate_ids`), at most `max_loaded` adapters per
  batch. Merged-only personas are served on transformers only: a second vLLM model would claim
  the GPU memory the base's engine holds.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from character.errors import CharacterError
from character.home import oct_home
from character.models.adapters import stack_adapters
from character.models.engine import AdapterRef, Conversation, Generation, SamplingParams
from character.models.transformers_engine import TransformersEngine
from character.serving.resolve import ServedPersona
from character.store.base import ArtifactRef, Store

OnLoad = Callable[[str], None]
"""Called with a persona's name when it is loaded or evicted (metrics)."""


ServingEngineKind = Literal["transformers", "vllm"]


class ServingEngine(Protocol):
    """What the pool needs of an engine (TransformersEngine and VLLMEngine have it)."""

    tokenizer: Any

    def generate_ids(self, prompt: list[int], sampling: SamplingParams, adapter: AdapterRef | None = None,
                     on_step: Callable[[list[int]], None] | None = None) -> Generation: ...

    def encode_chat(self, conversation: Conversation) -> list[int]: ...

    def answer_text(self, tokens: list[int]) -> str: ...

    def unload_adapter(self, adapter: AdapterRef) -> bool: ...


@dataclass(frozen=True)
class Loaded:
    """A persona ready to answer: the engine and the adapter folder to apply (None: as is)."""

    engine: ServingEngine
    adapter: Path | None


class PersonaPool:
    """Engines for served personas (see the module docstring)."""

    def __init__(self, store: Store, max_loaded: int, device: Any = None, *,
                 on_load: OnLoad | None = None, on_evict: OnLoad | None = None,
                 cache_dir: Path | None = None, engine: ServingEngineKind = "transformers", dtype: str = "auto"):
        if max_loaded < 1:
            raise CharacterError(f"max_loaded must be at least 1, got {max_loaded}")
        if engine not in ("transformers", "vllm"):
            raise CharacterError(f"unknown serving engine {engine!r}; choose transformers or vllm")
        self.store = store
        self.max_loaded = max_loaded
        self.device = device
        self.engine_kind = engine
        self.dtype = dtype  # the engines' precision: "auto" is `loading.resolve_dtype`'s choice
        self.cache_dir = cache_dir or oct_home() / "cache" / "personas"
        self._on_load = on_load or (lambda _name: None)
        self._on_evict = on_evict or (lambda _name: None)
        self._bases: dict[str, ServingEngine] = {}
        self._loaded: OrderedDict[str, tuple[ServedPersona, Loaded]] = OrderedDict()
        self._lock = threading.Lock()

    def loaded(self) -> list[str]:
        """Names of the personas loaded now, least recently used first."""
        with self._lock:
            return [persona.name for persona, _ in self._loaded.values()]

    def engine(self, persona: ServedPersona) -> Loaded:
        """The persona, loaded if it is not (see the module docstring)."""
        with self._lock:  # two first requests for one persona must not load it twice
            if persona.is_base:
                return Loaded(self._base(persona.base), None)
            if persona.digest in self._loaded:
                self._loaded.move_to_end(persona.digest)
                return self._loaded[persona.digest][1]
            loaded = self._load(persona)
            self._loaded[persona.digest] = (persona, loaded)
            self._on_load(persona.name)
            while len(self._loaded) > self.max_loaded:
                _, (old, dropped) = self._loaded.popitem(last=False)
                if dropped.adapter is not None:
                    dropped.engine.unload_adapter(dropped.adapter)
                self._on_evict(old.name)
            return loaded

    def encode_chat(self, persona: ServedPersona, messages: Conversation) -> list[int]:
        """The chat's token ids as the persona's engine renders it for generation."""
        return self.engine(persona).engine.encode_chat(messages)

    def encode_text(self, persona: ServedPersona, text: str) -> list[int]:
        """A raw completion prompt's token ids (no special tokens added)."""
        tokenizer = self.engine(persona).engine.tokenizer
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    def generate(self, persona: ServedPersona, prompt: list[int], sampling: SamplingParams,
                 on_text: Callable[[str], None] | None = None) -> Generation:
        """The persona's answer to `prompt` (token ids); `on_text` gets each new piece of text as
        it is decoded (streaming), never half a character."""
        loaded = self.engine(persona)
        engine = loaded.engine
        if on_text is None:
            return engine.generate_ids(prompt, sampling, adapter=loaded.adapter)
        sent = [""]

        def step(tokens: list[int]) -> None:
            text = engine.answer_text(tokens)
            if text.endswith("\ufffd") or len(text) <= len(sent[0]) or not text.startswith(sent[0]):
                return  # an unfinished character, or nothing new
            on_text(text[len(sent[0]):])
            sent[0] = text

        generation = engine.generate_ids(prompt, sampling, adapter=loaded.adapter, on_step=step)
        if generation.text.startswith(sent[0]) and len(generation.text) > len(sent[0]):
            on_text(generation.text[len(sent[0]):])
        return generation

    def _base(self, base: str) -> ServingEngine:
        if base not in self._bases:
            self._bases[base] = self._new_engine(base)
        return self._bases[base]

    def _new_engine(self, model: str | Path) -> ServingEngine:
        if self.engine_kind == "vllm":
            from character.models.vllm_engine import VLLMEngine

            return VLLMEngine(model, max_loras=self.max_loaded, dtype=self.dtype)
        return TransformersEngine(model, device=self.device, dtype=self.dtype)

    def _load(self, persona: ServedPersona) -> Loaded:
        if persona.merged is not None:
            if self.engine_kind == "vllm":
                raise CharacterError(f"{persona.name} has merged weights only, which the vllm engine does not serve "
                                     "beside a base model; publish a run with adapters, or serve with the "
                                     "transformers engine")
            return Loaded(self._new_engine(self._fetch(persona.merged)), None)
        engine = self._base(persona.base)
        folders = [self._fetch(ref) for ref in persona.adapters]
        adapter = folders[0] if len(folders) == 1 else stack_adapters(folders, self.cache_dir / persona.digest)
        return Loaded(engine, adapter)

    def _fetch(self, ref: ArtifactRef) -> Path:
        """The artifact's verified local folder; refused when its content is not what the run
        recorded."""
        stored = self.store.manifest(ref.kind, ref.key).content_digest
        if stored != ref.content_digest:
            raise CharacterError(f"{ref.kind} {ref.key} in {self.store.uri} has content {stored[:12]}, but the run "
                                 f"recorded {ref.content_digest[:12]}; refusing to serve it")
        return self.store.materialize(ref.kind, ref.key)

