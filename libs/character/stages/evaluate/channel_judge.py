"""The noisy-channel judge of trait choices (`judge: channel`; Min et al. 2022, "Noisy Channel
Language Model Prompting for Few-Shot Text Classification").

Asked directly which of two traits a reply shows, SmolLM2 is at chance (issue 22): a 135M model
cannot follow the judging instruction. The channel judge asks the other way round: how likely
is this reply from an assistant told to be the trait? Each candidate trait t gets

    s(t) = log p(reply | system prompt `SYSTEM` with t, the user's message),

scored by the teacher through the engine's `score` (each distinct prompt prefilled once, as
teacher selection scores answers with and without the constitution), and the larger wins.

Why this form: the pointwise mutual information with the trait prompt, s(t) minus
log p(reply | no trait prompt, message), subtracts the same number from every trait of a ballot
(one reply, one message), and the reply has the same length under every trait, so neither the
neutral term nor per-token normalisation can change a verdict; neither is computed.

The judge never shows the options, so it is order-free by construction: its verdict is recorded
once per rotation as `judge.decide` records it, and its position-bias rate is exactly 1/k.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from character.models.engine import Conversation, Engine
from character.pipeline.spec import CHANNEL_JUDGE
from character.progress import Progress, silent
from character.stages.evaluate import judge

SYSTEM = "You are {trait}. Reply in a {trait} way."
"""The system prompt a reply is scored under, once per candidate trait (zero-shot, not tuned on
the calibration set)."""


@dataclass(frozen=True)
class ChannelJudge:
    """The noisy-channel judge (see the module docstring)."""

    engine: Engine
    """The scorer: the spec's model judge (the teacher unless the spec names another)."""
    model: Any
    """What identifies the scorer: its name, or an endpoint's identity (`Endpoint.identity`)."""
    system: str = SYSTEM
    progress: Progress = silent

    @property
    def name(self) -> str:
        return CHANNEL_JUDGE

    def identity(self) -> dict[str, Any]:
        return {"judge": CHANNEL_JUDGE, "model": self.model, "precision": self.engine.precision,
                "system": self.system, "score": "log_prob"}

    def conversation(self, trait: str, message: str) -> Conversation:
        """The conversation a reply to `message` is scored after, under `trait`."""
        return [{"role": "system", "content": self.system.format(trait=trait)}, {"role": "user", "content": message}]

    def decide(self, ballots: Sequence[judge.Ballot]) -> list[judge.Decision]:
        unreadable = [i for i, b in enumerate(ballots) if b.text is None or b.message is None]
        if unreadable:
            raise ValueError(
                f"the channel judge scores a ballot's reply to its message; ballots {unreadable[:5]} carry none"
            )
        asked = [(b, trait) for b in ballots for trait in b.candidates]
        scores = iter(
            self.engine.score(
                [self.conversation(trait, str(b.message)) for b, trait in asked],
                [str(b.text) for b, _ in asked],
                progress=self.progress,
            )
        )
        return [judge.order_free_decision(b, [next(scores) for _ in b.candidates]) for b in ballots]
