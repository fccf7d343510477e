"""One run under evaluation: its persona, its evaluation prompts and its methods, built on
demand so a part only loads what it uses."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from character.errors import NotFound
from character.models.engine import SamplingParams
from character.pipeline.engines import ARTIFACT_MODEL_PREFIX
from character.pipeline.stage import StageContext
from character.stages.evaluate import judge
from character.stages.evaluate.methods import METHOD_NAMES, Method

if TYPE_CHECKING:
    from character.stages.evaluate import Config
    from character.stages.evaluate.trait_judges import ModelJudge, TraitJudge

PRODUCED_BY = {
    "distill": "the distilled pairs (to keep training prompts out of evaluation)",
    "dpo": "the DPO adapter (method 'dpo')",
    "merge": "the merged model (method 'full')",
}


@dataclass(frozen=True)
class PromptPool:
    """General chat prompts for evaluation, in a seeded random order."""

    prompts: list[str]
    unseen: int
    """How many (taken first) were not among the training prompts; the rest were."""

    def take(self, n: int) -> list[str]:
        """`n` prompts, cycling through the pool when it is shorter (callers record it)."""
        if not self.prompts:
            return []
        return [self.prompts[i % len(self.prompts)] for i in range(n)]

    def split(self, train: int, heldout: int) -> tuple[list[str], list[str]]:
        """Disjoint (train, held-out) prompts; held-out ones come first, so they are the
        unseen-in-training ones whenever there are enough. A short pool shrinks both, keeping
        at least a fifth of it held out."""
        total = len(self.prompts)
        if train + heldout > total:
            heldout = min(heldout, max(1, total // 5))
            train = max(0, total - heldout)
        return self.prompts[heldout : heldout + train], self.prompts[:heldout]


class Subject:
    """A run as evaluation sees it."""

    def __init__(self, ctx: StageContext, config: Config):
        self.ctx = ctx
        self.config = config
        self.persona = ctx.constitution.name
        self._methods: dict[str, Method] = {}
        self._pool: PromptPool | None = None
        self._trait_judge: TraitJudge | None = None
        self.steering_info: dict[str, Any] = {}

    # ------------------------------------------------------------------ requirements
    def require(self, stage: str, why: str) -> Any:
        """The upstream stage's result, or NotFound saying how to produce it."""
        if stage not in self.ctx.inputs:
            raise NotFound(
                f"run {self.ctx.run_id}: {why} needs {PRODUCED_BY.get(stage, stage)} from stage {stage!r}, "
                f"which is not in the store {self.ctx.store.uri}; produce it with "
                f"`oct stage {stage} --run {self.ctx.run_id} --store {self.ctx.store.uri}` "
                "(after its own upstream stages) or with `oct run`"
            )
        return self.ctx.inputs[stage]

    # ------------------------------------------------------------------ prompts
    @property
    def pool(self) -> PromptPool:
        """The run's chat prompts, those it never trained on first (seeded order)."""
        if self._pool is None:
            from character.data import load_chat_prompts
            from character.store.datasets import read_dataset

            texts = list(
                dict.fromkeys(
                    p.prompt for p in load_chat_prompts(self.ctx.spec.chat_prompts, store=self.ctx.store)
                )
            )
            trained: set[str] = set()
            if "distill" in self.ctx.inputs:
                ref = self.ctx.inputs["distill"].artifacts["train"]
                trained = {str(r["prompt"]) for r in read_dataset(self.ctx.store, ref.kind, ref.key)}
            rng = random.Random(self.ctx.spec.seed)
            unseen = [t for t in texts if t not in trained]
            seen = [t for t in texts if t in trained]
            rng.shuffle(unseen)
            rng.shuffle(seen)
            self._pool = PromptPool(unseen + seen, len(unseen))
        return self._pool

    def sampling(self, seed_offset: int = 0) -> SamplingParams:
        return SamplingParams(
            max_new_tokens=self.config.answer_max_new_tokens,
            temperature=self.config.answer_temperature,
            top_p=0.95,
            repetition_penalty=1.0,
            seed=self.ctx.spec.seed + seed_offset,
        )

    # ------------------------------------------------------------------ judge
    @property
    def trait_judge(self) -> TraitJudge:
        """The run's judge of trait choices: the one calibration chose among the candidates
        (`use_trait_judge`), else the spec's `judge` (the embedding judge or a model)."""
        if self._trait_judge is None:
            self._trait_judge = self._spec_judge()
        return self._trait_judge

    @property
    def trait_judge_candidates(self) -> list[TraitJudge]:
        """The judges of trait choices calibration chooses between: with `choose_judge` on and no
        `judge` in the spec, the channel judge (the default model judge scoring), the embedding
        judge and the default model judge (in that order, their accuracy on the whole bundled set
        with SmolLM2: ties go to the first); otherwise the spec's judge alone."""
        from character.stages.evaluate.trait_judges import EmbeddingJudge, channel_judge_for

        if self.ctx.spec.judge is not None or not self.config.choose_judge:
            return [self._spec_judge()]
        spec = self.ctx.spec
        channel = channel_judge_for(spec.model_judge, self.ctx.engines, spec.endpoints, self.ctx.progress)
        return [channel, EmbeddingJudge(), self._spec_judge()]

    def use_trait_judge(self, trait_judge: TraitJudge) -> None:
        """Judge trait choices with `trait_judge` from now on (the calibration's choice)."""
        self._trait_judge = trait_judge

    def _spec_judge(self) -> TraitJudge:
        """The judge of trait choices the spec names (`RunSpec.judge_model`)."""
        from character.stages.evaluate.trait_judges import trait_judge_for

        spec = self.ctx.spec
        return trait_judge_for(spec.judge_model, self.ctx.engines, self.config, spec.seed, spec.endpoints,
                               self.ctx.progress, scorer=spec.model_judge)

    @property
    def model_judge(self) -> ModelJudge:
        """The run's model judge (`RunSpec.model_judge`), the option order taken out unless
        `judge_debias` is off (see judge.py)."""
        from character.stages.evaluate.trait_judges import model_judge_for

        spec = self.ctx.spec
        return model_judge_for(spec.model_judge, self.ctx.engines, self.config, spec.seed, spec.endpoints,
                               self.ctx.progress)

    def decide(self, ballots: Sequence[judge.Ballot]) -> list[judge.Decision]:
        """The run's model judge decides each ballot (pairwise coherence)."""
        return self.model_judge.decide(ballots)

    def decide_traits(self, ballots: Sequence[judge.Ballot]) -> list[judge.Decision]:
        """The run's judge of trait choices decides each ballot (revealed preferences)."""
        return self.trait_judge.decide(ballots)

    # ------------------------------------------------------------------ methods
    @property
    def assistant_name(self) -> str:
        return str(self.ctx.spec.stage_config("distill").name_for(self.ctx.spec.model))

    def method(self, name: str) -> Method:
        if name not in self._methods:
            self._methods[name] = self._build(name)
        return self._methods[name]

    def _build(self, name: str) -> Method:
        from character.stages.evaluate import baselines

        engines, spec = self.ctx.engines, self.ctx.spec
        if name == "base":
            return Method(name, engines.engine(spec.model))
        if name == "system_prompt":
            return Method(
                name,
                engines.engine(spec.model),
                system=baselines.system_prompt_for(self.ctx.constitution, self.assistant_name),
            )
        if name == "steering":
            return Method(name, engines.engine(spec.model), steering=self._steering())
        if name == "dpo":
            adapter = self.require("dpo", "method 'dpo'").artifacts["adapter"]
            return Method(name, engines.engine(spec.model), adapter=engines.adapter(adapter.key))
        if name == "full":
            model = self.require("merge", "method 'full'").artifacts["model"]
            return Method(name, engines.engine(f"{ARTIFACT_MODEL_PREFIX}{model.key}"))
        raise ValueError(f"unknown method {name!r}; methods are {', '.join(METHOD_NAMES)}")

    def _steering(self) -> Any:
        """The persona's steering vectors from the constitution's own questions (never the
        evaluation prompts), with the configured coefficient."""
        from character.models.engine import Steering
        from character.stages.evaluate import baselines

        questions = self.ctx.constitution.seed_questions()
        prompts = random.Random(self.ctx.spec.seed).sample(
            questions, min(len(questions), self.config.steering_prompts)
        )
        system = baselines.system_prompt_for(self.ctx.constitution, self.assistant_name)
        vectors = baselines.steering_vectors(
            self.ctx.spec.model, system, prompts, self.config.steering_layer_share, progress=self.ctx.progress
        )
        norms = baselines.vector_norms(vectors)
        self.steering_info = {
            "layers": sorted(vectors),
            "prompts": len(prompts),
            "coefficient": self.config.steering_coefficient,
            "mean_vector_norm": sum(norms.values()) / len(norms),
        }
        return Steering(vectors=vectors, coefficient=self.config.steering_coefficient)
