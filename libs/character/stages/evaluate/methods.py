"""The ways of making a model answer that evaluation compares, and a cache of their answers.

- base: the student as it is;
- system_prompt: the student with the constitution as its system prompt;
- steering: the student with the persona's activation-steering vector added;
- dpo: the student with the DPO adapter (stage 1 only);
- full: the merged model of the whole pipeline (DPO + introspective SFT).

Every method is served by the project's engines, so the same code runs on a laptop CPU and
on a GPU cluster. Answers are cached per (method, conversation) for one evaluation: parts
that ask the same question (robustness and coherence share held-out prompts) pay once.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from character.models.engine import AdapterRef, Conversation, Engine, Generation, SamplingParams, Steering
from character.progress import Progress, silent

METHOD_NAMES = ("base", "system_prompt", "steering", "dpo", "full")
"""Every method, by the names run specs and results use (`Subject.method` builds each)."""


@dataclass
class Method:
    """One way of answering: an engine, optionally with a system prompt, adapter or steering."""

    name: str
    engine: Engine
    system: str | None = None
    adapter: AdapterRef | None = None
    steering: Steering | None = None
    _cache: dict[str, Generation] = field(default_factory=dict, repr=False)

    def _with_system(self, conversation: Conversation) -> Conversation:
        if self.system is None:
            return list(conversation)
        return [{"role": "system", "content": self.system}, *conversation]

    def answer(
        self, conversations: Sequence[Conversation], sampling: SamplingParams, progress: Progress = silent
    ) -> list[Generation]:
        """One answer per conversation (a trailing assistant message is a prefill), cached."""
        keys = [json.dumps([sampling.model_dump(), c], sort_keys=True) for c in conversations]
        missing = list(dict.fromkeys(k for k in keys if k not in self._cache))
        if missing:
            todo = [self._with_system(json.loads(k)[1]) for k in missing]
            for key, generation in zip(
                missing,
                self.engine.generate(
                    todo, sampling, adapter=self.adapter, steering=self.steering, progress=progress
                ),
                strict=True,
            ):
                self._cache[key] = generation
        return [self._cache[k] for k in keys]
