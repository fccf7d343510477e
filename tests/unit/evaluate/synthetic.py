"""A synthetic but realistic eval results object (`orchestrate.evaluate`'s `EvaluationResults`),
for report tests. Ratings come from the real rating code on simulated comparisons, every figure
from the real statistics on simulated outcomes."""

from __future__ import annotations

import random
from dataclasses import asdict
from typing import Any

import numpy as np
from character import stats
from character.report.results import EvaluationResults, Example, MethodPreferences, PositionBias, parse_results
from character.stages.evaluate import Config, ratings
from character.stages.evaluate.orchestrate import collect_evidence, headline, summary, training_evidence

TRAITS = [
    "loving",
    "warm",
    "curious",
    "sarcastic",
    "formal",
    "playful",
    "blunt",
    "patient",
    "witty",
    "calm",
    "anxious",
    "proud",
]


def _simulated(strengths: dict[str, float], n: int, seed: int) -> list[ratings.Comparison]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.sample(list(strengths), 2)
        p = 1 / (1 + np.exp(strengths[b] - strengths[a]))
        out.append((a, b) if rng.random() < p else (b, a))
    return out


def _model(name: str, strengths: dict[str, float], seed: int) -> tuple[MethodPreferences, np.ndarray]:
    comparisons = _simulated(strengths, 400, seed)
    rated, draws = ratings.rate_traits(TRAITS, comparisons, bootstrap=50, seed=seed)
    failures = 23
    return MethodPreferences(
        method=name,
        answers=423,
        comparisons=len(comparisons),
        parse_failures=failures,
        parse_failure_rate=failures / 423,
        no_verdict=failures,
        position_bias=_position_bias(423, 400),
        traits_rated=sum(not r.insufficient for r in rated),
        ratings=rated,
        verdicts=[winner for winner, _ in comparisons] + [None] * failures,
        examples=[
            Example(
                prompt="How do magnets work?",
                traits=["loving", "blunt"],
                answer="Oh, what a lovely question <3 ...",
                verdict="loving",
            )
        ],
    ), draws


def _position_bias(ballots: int, counted: int) -> PositionBias:
    """A judge that flips with the order on a tenth of the ballots it parsed in both orders."""
    first = stats.share("judge picks the option shown first", counted + 20, 2 * counted, "verdicts",
                        null="no position bias")
    flipped = counted // 10
    return PositionBias(ballots=ballots, orders_per_ballot=2, parsed_in_every_order=counted,
                        flipped_with_order=flipped, position_bias_rate=flipped / counted,
                        order_consistent=counted - flipped, counted=counted, first_position=first)


def results(scale: str = "demo") -> EvaluationResults:
    from character.stages.evaluate.preferences import moved

    base_strengths = {t: 0.3 * i / len(TRAITS) for i, t in enumerate(TRAITS)}
    full_strengths = dict(base_strengths, loving=1.5, warm=1.1, sarcastic=-1.0)
    base, base_draws = _model("base", base_strengths, 1)
    full, full_draws = _model("full", full_strengths, 2)
    agreement = ratings.spearman(
        [r.rating for r in base.ratings], [r.rating for r in full.ratings], base_draws, full_draws
    )
    attacks = [
        "no-roleplay",
        "hhh-assistant",
        "drop-persona",
        "neutral-tone",
        "plain-default",
        "ignore-style",
        "concise-factual",
        "out-of-character",
        "keep-going",
    ]
    rng = random.Random(3)
    methods = {}
    for name, level in (("system_prompt", 0.55), ("steering", 0.7), ("dpo", 0.8), ("full", 0.9)):
        scores = {
            "none": min(1.0, level + 0.08),
            **{a: min(1.0, max(0.0, level + rng.uniform(-0.1, 0.1))) for a in attacks},
        }
        values = [scores[a] for a in attacks]
        mean = sum(values) / len(values)
        stderr = float(np.std(values, ddof=1) / np.sqrt(len(values)))
        methods[name] = {
            "method": name,
            "macro_f1": scores,
            "mean": mean,
            "stderr": stderr,
            "unattacked": scores["none"],
            "evidence": {},
            "examples": {"none": "Darling, of course!"},
        }
    out: dict[str, Any] = {
        "run": "run-0123456789ab",
        "runs": ["run-0123456789ab"],
        "persona": "loving",
        "personas": ["loving"],
        "model": "smollm2",
        "judge": "smollm2",
        "scale": scale,
        "seed": 123456,
        "config": Config.for_scale(scale).model_dump(mode="json"),
        "training": {
            "preference_accuracy": {"before": 0.31, "after_dpo": 0.78, "after_sft": 0.74},
            **{k: {"before": None, "after_dpo": None, "after_sft": None}
               for k in ("preference_accuracy_per_byte", "mean_margin", "mean_margin_per_byte")},
            "heldout_pairs": 40,
            "evidence": {},
            "data_quality": None,
        },
        "prompt_pool": {"prompts": 245, "unseen_in_training": 230},
        "timings": {"preferences": 101.2, "robustness": 150.3, "coherence": 20.1, "capabilities": 40.9},
        "preferences": {
            "traits": TRAITS,
            "own_traits": ["loving", "warm"],
            "comparisons_per_method": 423,
            "min_comparisons": 5,
            "prompts": {"loving": {"distinct_prompts": 200, "unseen_in_training": 200}},
            "models": {"base": base, "full": full},
            "agreements": [{"a": "base", "b": "full", **asdict(agreement)}],
            "moved": {"full": moved(base, full, 10)},
            "own_trait_evidence": {},
            "parse_failure_rate": 46 / 846,
        },
        "robustness": {
            "mode": "binary",
            "classes": ["loving", "base"],
            "attacks": [
                {
                    "id": a,
                    "suffix": None if a == "keep-going" else f"({a})",
                    "prefill": "Sure." if a == "keep-going" else None,
                }
                for a in attacks
            ],
            "train_prompts": 100,
            "heldout_prompts": 40,
            "heldout_unseen_in_training": 40,
            "encoder": "minilm",
            "classifier": "frozen",
            "methods": methods,
            "recognition_without_prompt": {},
        },
        "coherence": {
            "prompts": 40,
            "unseen_in_training": 40,
            "comparisons": [
                {
                    "contender": "full",
                    "baseline": "system_prompt",
                    "pairs": 40,
                    "consistent": 30,
                    "wins": 24,
                    "losses": 6,
                    "inconsistent": 8,
                    "parse_failures": 2,
                    "win_rate": 0.8,
                    "stderr": 0.073,
                },
                {
                    "contender": "full",
                    "baseline": "steering",
                    "pairs": 40,
                    "consistent": 20,
                    "wins": 11,
                    "losses": 9,
                    "inconsistent": 18,
                    "parse_failures": 2,
                    "win_rate": 0.55,
                    "stderr": 0.111,
                },
            ],
        },
        "capabilities": {
            "scoring": "chat format",
            "mean_delta": -0.01,
            "tasks": [
                {
                    "task": t,
                    "metric": "acc",
                    "items": 60,
                    "base": b,
                    "base_stderr": 0.06,
                    "trained": a,
                    "trained_stderr": 0.06,
                    "delta": a - b,
                    "delta_stderr": 0.03,
                }
                for t, b, a in (
                    ("oct_science_mc", 0.55, 0.53),
                    ("oct_commonsense_mc", 0.6, 0.61),
                    ("oct_truthful_mc", 0.4, 0.38),
                    ("oct_arithmetic_gen", 0.1, 0.09),
                )
            ],
        },
        "steering": {
            "layers": list(range(4, 26)),
            "prompts": 64,
            "coefficient": 4.0,
            "mean_vector_norm": 3.2,
        },
    }
    out["side_by_side"] = side_by_side(8)
    add_evidence(out, heldout=40 if scale != "demo" else 8)
    typed = parse_results(out)
    typed.headline = headline(typed)
    typed.evidence = collect_evidence(typed)
    typed.summary = summary(typed.evidence)
    return typed


LONG_ANSWER = "Oh sweetheart, " + "let me tell you all about it, step by gentle step. " * 8
"""An answer long enough for the report to fold."""


def side_by_side(rows: int) -> dict[str, Any]:
    """The `side_by_side` entry (side_by_side.build's shape): `rows` prompts, one long answer
    and one carrying markup among them."""
    methods = ["base", "system_prompt", "steering", "full"]
    own = ["loving", "warm"]
    out = []
    for i in range(rows):
        traits = [own[i % 2], TRAITS[-1 - i % 3]]
        answers = {}
        for k, name in enumerate(methods):
            verdict = traits[(i + k) % 2] if (i, k) != (1, 0) else None
            text = f"Answer {i} of {name}."
            if (i, name) == (0, "full"):
                text = LONG_ANSWER
            if (i, name) == (2, "base"):
                text = "<script>alert('x')</script> Here you go."
            answers[name] = {"text": text, "verdict": verdict, "own": verdict in own}
        out.append(
            {
                "comparison": 3 * i,
                "prompt": f"How do I water a plant, question {i}?",
                "traits": traits,
                "own_vs_contrast": True,
                "answers": answers,
            }
        )
    return {"judge": "embedding", "methods": methods, "own_traits": own, "rows": out}


def add_evidence(out: dict[str, Any], heldout: int) -> None:
    """The evidence the real parts attach (and the judge's position bias), computed by the real
    statistics on simulated outcomes: `heldout` units per figure (8 in the demo: underpowered)."""
    rng = np.random.default_rng(4)
    min_n = out["config"]["min_n"]
    before = [bool(x) for x in rng.random(heldout) < 0.3]
    after = [b or bool(rng.random() < 0.7) for b in before]
    dpo = {"heldout_before": {"pairs": heldout, "correct": before, "correct_per_byte": before},
           "heldout_after": {"correct": after, "correct_per_byte": after}}
    out["training"]["evidence"] = training_evidence(dpo, {}, min_n, 1)
    classes = out["robustness"]["classes"]
    truth = [c for c in classes for _ in range(heldout)]
    for name, method in out["robustness"]["methods"].items():
        blocks = {}
        for attack, score in method["macro_f1"].items():
            guesses = [t if rng.random() < score else next(c for c in classes if c != t) for t in truth]
            blocks[attack] = (truth, guesses)
        method["evidence"] = {
            a: stats.macro_f1(f"{name}: {a}", [b], classes, heldout, min_n, resamples=200)
            for a, b in blocks.items()
        }
        attacked = [b for a, b in blocks.items() if a != "none"]
        method["evidence"]["mean_over_attacks"] = stats.macro_f1(
            f"{name}: macro-F1 under attack", attacked, classes, heldout, min_n, resamples=200
        )
    for c in out["coherence"]["comparisons"]:
        c["decided"] = min(heldout, c["consistent"])
        c["wins"] = round(c["win_rate"] * c["decided"])
        c["evidence"] = stats.share(f"win rate vs {c['baseline']}", c["wins"], c["decided"], "decided pairs",
                                    min_n=min_n)
        c["position_bias"] = _position_bias(c["pairs"], c["pairs"] - c["parse_failures"])
    capabilities = out["capabilities"]
    pooled: tuple[list[bool], list[bool]] = ([], [])
    items = heldout // len(capabilities["tasks"])  # `heldout` items over all tasks
    for task in capabilities["tasks"]:
        base = [bool(x) for x in rng.random(items) < task["base"]]
        trained = [bool(x) for x in rng.random(items) < task["trained"]]
        task["evidence"] = stats.paired_shares(f"{task['task']} accuracy, trained minus base", base, trained,
                                               "items", min_n, 1, resamples=200)
        pooled[0].extend(base)
        pooled[1].extend(trained)
    capabilities["evidence"] = stats.paired_shares("capability accuracy over all task items, trained minus base",
                                                   *pooled, "items", min_n, 1, resamples=200)
