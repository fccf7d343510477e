"""A chat with one served model, held in memory only: the system prompt, the turns so far,
and the same question put to the persona's base model for comparison (`oct chat`)."""

from __future__ import annotations

from collections.abc import Callable

from character.models.engine import Conversation, SamplingParams
from character.serving.pool import PersonaPool
from character.serving.resolve import ServedPersona


class ChatSession:
    """One conversation with `persona` through `pool`; nothing is written anywhere."""

    def __init__(self, pool: PersonaPool, persona: ServedPersona, base: ServedPersona, sampling: SamplingParams):
        self.pool, self.persona, self.base, self.sampling = pool, persona, base, sampling
        self.system: str | None = None
        self.turns: Conversation = []

    def conversation(self, message: str) -> Conversation:
        """What the model sees for `message`: the system prompt, the turns so far, the message."""
        system = [{"role": "system", "content": self.system}] if self.system else []
        return [*system, *self.turns, {"role": "user", "content": message}]

    def ask(self, message: str, on_text: Callable[[str], None] | None = None) -> str:
        """The persona's answer (streamed to `on_text`), kept in the history with the message."""
        answer = self._answer(self.persona, message, on_text)
        self.turns += [{"role": "user", "content": message}, {"role": "assistant", "content": answer}]
        return answer

    def ask_base(self, message: str) -> str:
        """The base model's answer to the same conversation (not kept in the history)."""
        return self._answer(self.base, message, None)

    def reset(self) -> None:
        """Forget the turns (the system prompt stays)."""
        self.turns = []

    def _answer(self, model: ServedPersona, message: str, on_text: Callable[[str], None] | None) -> str:
        prompt = self.pool.encode_chat(model, self.conversation(message))
        return self.pool.generate(model, prompt, self.sampling, on_text=on_text).text
