"""Judges of which of two traits a reply expresses, behind one interface (`TraitJudge.decide`,
ballots in, `judge.Decision`s out, as `judge.decide`), so the spec's `judge:` chooses one:

- a model (`ModelJudge`): a bundled name (smollm2, tiny), a local folder or an endpoint, asked
  exactly as the evaluation asks it (`judge.decide`: the configured mode, every order);
- the embedding judge (`EmbeddingJudge`, `judge: embedding`): the reply's sentence embedding
  (the bundled MiniLM, as the persona classifier embeds) is compared by cosine similarity with
  one description per trait, "a {trait} reply"; the larger similarity wins. It never sees the
  options' order, so it is order-free by construction (its position-bias rate is exactly 1/k);
- the noisy-channel judge (`channel_judge.ChannelJudge`, `judge: channel`): the model judge's
  likelihood of the reply under a system prompt naming each trait; order-free too.

The descriptions are the zero-shot template, not tuned: a template chosen for its accuracy on
the calibration set would make that set's figure an optimistic estimate of the judge. Tuning
them is allowed only on the calibration set (data/calibration/README.md), and would then
need a second, held-out set to calibrate on. Measured, it would not help: 8 descriptions (and
their average) score 0.60-0.66 on the 144 items, all below the validity floor even in-sample.

Pairwise coherence (two answers, which is more coherent) needs a model judge: the embedding
judge only reads one reply against trait descriptions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from character.models.endpoint import Endpoint
from character.models.engine import Engine
from character.pipeline.spec import CHANNEL_JUDGE, EMBEDDING_JUDGE
from character.progress import Progress, silent
from character.stages.evaluate import judge
from character.stages.evaluate.channel_judge import ChannelJudge

if TYPE_CHECKING:
    from character.pipeline.stage import EngineProvider
    from character.stages.evaluate import Config

DESCRIPTION = "a {trait} reply"
"""The embedding judge's description of a trait (zero-shot; see the module docstring)."""


class TraitJudge(Protocol):
    """Decides which candidate trait each ballot's reply expresses."""

    @property
    def name(self) -> str:
        """How the spec names this judge ("smollm2", "embedding", an endpoint's name)."""
        ...

    def identity(self) -> dict[str, Any]:
        """Everything that decides its verdicts (the calibration cache's key)."""
        ...

    def decide(self, ballots: Sequence[judge.Ballot]) -> list[judge.Decision]: ...


@dataclass(frozen=True)
class ModelJudge:
    """A language model as judge, asked as `judge.decide` asks it."""

    name: str
    engine: Engine
    model: Any
    """What identifies the model: its name, or an endpoint's identity (`Endpoint.identity`)."""
    mode: judge.JudgeMode
    temperature: float
    max_new_tokens: int
    seed: int
    debias: bool = True
    progress: Progress = silent

    def identity(self) -> dict[str, Any]:
        return {
            "judge": "model",
            "model": self.model,
            "precision": self.engine.precision,
            "mode": self.mode,
            "debias": self.debias,
            "temperature": self.temperature,
            "max_new_tokens": self.max_new_tokens,
            "seed": self.seed,
        }

    def decide(self, ballots: Sequence[judge.Ballot]) -> list[judge.Decision]:
        return judge.decide(
            self.engine,
            ballots,
            self.mode,
            temperature=self.temperature,
            max_new_tokens=self.max_new_tokens,
            seed=self.seed,
            debias=self.debias,
            progress=self.progress,
        )


@dataclass(frozen=True)
class EmbeddingJudge:
    """The sentence-embedding judge (see the module docstring)."""

    encoder: str = "minilm"
    """A sentence encoder as the persona classifier loads it (`classifier.encoder_path`)."""
    description: str = DESCRIPTION

    @property
    def name(self) -> str:
        return EMBEDDING_JUDGE

    def identity(self) -> dict[str, Any]:
        return {"judge": EMBEDDING_JUDGE, "encoder": self.encoder, "description": self.description}

    def decide(self, ballots: Sequence[judge.Ballot]) -> list[judge.Decision]:
        from character.stages.common.classifier import embed

        unreadable = [i for i, b in enumerate(ballots) if b.text is None]
        if unreadable:
            raise ValueError(f"the embedding judge reads a ballot's reply; ballots {unreadable[:5]} carry none")
        traits = sorted({c for b in ballots for c in b.candidates})
        column = {t: i for i, t in enumerate(traits)}
        replies = embed([str(b.text) for b in ballots], self.encoder)
        descriptions = embed([self.description.format(trait=t) for t in traits], self.encoder)
        similarity = replies @ descriptions.T  # both L2-normalised: cosine similarities
        return [
            judge.order_free_decision(b, [float(similarity[i, column[c]]) for c in b.candidates])
            for i, b in enumerate(ballots)
        ]


def model_identity(name: str, endpoints: Mapping[str, Endpoint]) -> Any:
    """What identifies model `name`: an endpoint's identity, else the name itself."""
    return endpoints[name].identity(name) if name in endpoints else name


def model_judge_for(
    name: str,
    engines: EngineProvider,
    config: Config,
    seed: int,
    endpoints: Mapping[str, Endpoint] | None = None,
    progress: Progress = silent,
) -> ModelJudge:
    """Model `name` as judge, asked as the eval `config` says."""
    return ModelJudge(
        name,
        engines.engine(name),
        model_identity(name, endpoints or {}),
        config.judge_mode,
        temperature=config.judge_temperature,
        max_new_tokens=config.judge_max_new_tokens,
        seed=seed,
        debias=config.judge_debias,
        progress=progress,
    )


def trait_judge_for(
    name: str,
    engines: EngineProvider,
    config: Config,
    seed: int,
    endpoints: Mapping[str, Endpoint] | None = None,
    progress: Progress = silent,
    *,
    scorer: str,
) -> TraitJudge:
    """The judge of trait choices a spec's `judge: NAME` names: the embedding judge, the channel
    judge (model `scorer` scoring: the spec's `model_judge`), or a model."""
    if name == EMBEDDING_JUDGE:
        return EmbeddingJudge()
    if name == CHANNEL_JUDGE:
        return channel_judge_for(scorer, engines, endpoints, progress)
    return model_judge_for(name, engines, config, seed, endpoints, progress)


def channel_judge_for(
    scorer: str, engines: EngineProvider, endpoints: Mapping[str, Endpoint] | None = None, progress: Progress = silent
) -> ChannelJudge:
    """The channel judge, model `scorer` scoring the replies."""
    return ChannelJudge(engines.engine(scorer), model_identity(scorer, endpoints or {}), progress=progress)
