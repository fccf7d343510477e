"""Preference accuracy: does the model prefer the chosen answer of a held-out pair?

The signal DPO optimises, measured on pairs it never trained on: the share of pairs where the
model gives the chosen answer a higher log-probability than the rejected one, and the mean
margin. Two variants:
- `sum`: total log-probability of the answer (what DPO compares; favours short answers);
- `per_byte`: log-probability per UTF-8 byte of the answer (lm-eval's `acc_norm` convention),
  which removes the length bias and needs nothing from the backend but `Engine.score`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from character.models.engine import AdapterRef, Engine, per_byte


def preference_accuracy(
    engine: Engine, pairs: Sequence[Mapping[str, Any]], adapter: AdapterRef | None = None
) -> dict[str, Any]:
    """Score rows {prompt, chosen, rejected} (the prompt as the user's message, no system
    prompt, as in DPO training) with `engine` (plus `adapter`). Returns {pairs, accuracy,
    mean_margin, accuracy_per_byte, mean_margin_per_byte, correct, correct_per_byte};
    accuracies and margins are None when there are no pairs. A tie counts as a miss.
    `correct` and `correct_per_byte` hold each pair's outcome, in order, so that before and
    after can be compared pair by pair (McNemar's test in the evaluation report)."""
    if not pairs:
        return {"pairs": 0, "accuracy": None, "mean_margin": None,
                "accuracy_per_byte": None, "mean_margin_per_byte": None,
                "correct": [], "correct_per_byte": []}
    conversations = [[{"role": "user", "content": str(p["prompt"])}] for p in pairs]
    chosen = [str(p["chosen"]) for p in pairs]
    rejected = [str(p["rejected"]) for p in pairs]
    scores = engine.score(conversations + conversations, chosen + rejected, adapter=adapter)
    chosen_scores, rejected_scores = scores[: len(pairs)], scores[len(pairs):]
    margins = [c - r for c, r in zip(chosen_scores, rejected_scores, strict=True)]
    margins_per_byte = [
        per_byte(c, ct) - per_byte(r, rt)
        for c, r, ct, rt in zip(chosen_scores, rejected_scores, chosen, rejected, strict=True)
    ]
    return {
        "pairs": len(pairs),
        "accuracy": _share_positive(margins),
        "mean_margin": sum(margins) / len(margins),
        "accuracy_per_byte": _share_positive(margins_per_byte),
        "mean_margin_per_byte": sum(margins_per_byte) / len(margins_per_byte),
        "correct": [m > 0 for m in margins],
        "correct_per_byte": [m > 0 for m in margins_per_byte],
    }


def _share_positive(values: Sequence[float]) -> float:
    return sum(v > 0 for v in values) / len(values)
