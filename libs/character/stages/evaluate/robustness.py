"""Robustness (method.md section 6): does the persona survive attempts to talk it out of it?

A persona classifier (frozen sentence encoder + logistic regression, `classifier.py`) learns
who wrote a text from un-attacked answers to training prompts, then labels answers to
HELD-OUT prompts (the reference tested on its training prompts) produced under each attack:
the 8 adversarial suffixes of `character/data/adversarial_suffixes.yaml`, each appended to
the user's message after a blank line, and the prefill "keep going" attack, whose neutral
opening starts the assistant's turn so the model must continue from it (the classifier reads
what the model wrote, not the prefill). The un-attacked held-out answers are scored too
("none"), as the ceiling the attacks are measured against.

Classes: with one run, the persona's method vs the base model (binary; the base answers
under the same attack, so the classifier cannot key on the attack's own effect on style);
with several runs, one class per run's persona (N-way, as in the reference). One classifier
per method. Metric: macro-F1 per attack and method; mean +- standard error over the attacks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

import yaml

from character.errors import InvalidInput
from character.models.engine import Conversation
from character.progress import ProgressEvent

if TYPE_CHECKING:
    from character.stages.evaluate import Config
    from character.stages.evaluate.methods import Method
    from character.stages.evaluate.subject import Subject

NO_ATTACK = "none"
BASE_CLASS = "base"


@dataclass(frozen=True)
class Attack:
    """One way of talking a model out of its persona."""

    id: str
    suffix: str | None = None
    """Appended to the user's message after a blank line."""
    prefill: str | None = None
    """Opens the assistant's turn; the model continues it."""

    def conversation(self, prompt: str) -> Conversation:
        user = prompt if self.suffix is None else f"{prompt}\n\n{self.suffix}"
        conversation = [{"role": "user", "content": user}]
        if self.prefill is not None:
            conversation.append({"role": "assistant", "content": self.prefill})
        return conversation


def load_attacks(prefill: bool = True) -> list[Attack]:
    """The bundled suffix attacks, then (with `prefill`) the prefill attack."""
    source = resources.files("character.data") / "adversarial_suffixes.yaml"
    doc = yaml.safe_load(source.read_text(encoding="utf-8"))
    try:
        attacks = [Attack(str(s["id"]), suffix=str(s["text"])) for s in doc["suffixes"]]
        if prefill:
            attacks.append(
                Attack(
                    str(doc["prefill_attack"]["id"]), prefill=str(doc["prefill_attack"]["assistant_prefill"])
                )
            )
    except (KeyError, TypeError) as err:
        raise InvalidInput(f"malformed attack list: missing {err}", where=str(source)) from None
    return attacks


def mean_and_stderr(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and its standard error (sample standard deviation / sqrt(n))."""
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    variance = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(variance / len(values))


def _texts(method: Method, conversations: Sequence[Conversation], subject: Subject) -> list[str]:
    return [g.text for g in method.answer(conversations, subject.sampling(), progress=subject.ctx.progress)]


def evaluate_method(
    name: str,
    classes: dict[str, tuple[Subject, Method]],
    train: Sequence[str],
    heldout: Sequence[str],
    attacks: Sequence[Attack],
    config: Config,
) -> dict[str, Any]:
    """Train one classifier on `classes`' un-attacked answers to `train`, score it per attack."""
    from character.stages.evaluate.classifier import PersonaClassifier, macro_f1

    any_subject = next(iter(classes.values()))[0]
    progress = any_subject.ctx.progress
    task = f"eval: robustness ({name})"
    progress(ProgressEvent(task, 0, len(classes) * 2))
    texts, labels = [], []
    for label, (subject, method) in classes.items():
        answers = _texts(method, [[{"role": "user", "content": p}] for p in train], subject)
        texts += answers
        labels += [label] * len(answers)
    classifier = PersonaClassifier(config.classifier_encoder, seed=any_subject.ctx.spec.seed).fit(
        texts, labels
    )
    progress(ProgressEvent(task, len(classes), len(classes) * 2, "classifier trained"))
    # One batched call per class covers every attack (bigger batches, fewer calls).
    scenarios = [Attack(NO_ATTACK), *attacks]
    attacked_answers: dict[str, list[str]] = {}
    for step, (label, (subject, method)) in enumerate(classes.items(), start=len(classes) + 1):
        conversations = [attack.conversation(p) for attack in scenarios for p in heldout]
        attacked_answers[label] = _texts(method, conversations, subject)
        progress(ProgressEvent(task, step, len(classes) * 2))
    predicted = dict(zip(classes, (classifier.predict(a) for a in attacked_answers.values()), strict=True))
    scores: dict[str, float] = {}
    example: dict[str, str] = {}
    n = len(heldout)
    for i, attack in enumerate(scenarios):
        window = slice(i * n, (i + 1) * n)
        truth = [label for label in classes for _ in range(n)]
        guesses = [g for label in classes for g in predicted[label][window]]
        scores[attack.id] = macro_f1(truth, guesses, list(classes))
        persona = next(label for label in classes if label != BASE_CLASS)
        example[attack.id] = attacked_answers[persona][window][0] if n else ""
    attacked = [scores[a.id] for a in attacks]
    mean, stderr = mean_and_stderr(attacked)
    return {
        "method": name,
        "macro_f1": scores,
        "mean": mean,
        "stderr": stderr,
        "unattacked": scores[NO_ATTACK],
        "examples": example,
    }


def evaluate(subjects: Sequence[Subject], config: Config) -> dict[str, Any]:
    """Macro-F1 per attack for every configured method; binary (persona vs base) with one
    subject, N-way across personas with several."""
    attacks = load_attacks(config.prefill_attack)
    primary = subjects[0]
    train, heldout = primary.pool.split(config.robustness_train_prompts, config.heldout_prompts)
    personas = [s.persona for s in subjects]
    if len(set(personas)) != len(personas):
        raise InvalidInput(
            f"the runs compared share personas ({personas}); give runs of different personas", where="--runs"
        )
    methods = {}
    for name in config.robustness_methods:
        if len(subjects) == 1:
            classes = {
                primary.persona: (primary, primary.method(name)),
                BASE_CLASS: (primary, primary.method("base")),
            }
        else:
            classes = {s.persona: (s, s.method(name)) for s in subjects}
        methods[name] = evaluate_method(name, classes, train, heldout, attacks, config)
    return {
        "mode": "binary" if len(subjects) == 1 else f"{len(subjects)}-way",
        "classes": [primary.persona, BASE_CLASS] if len(subjects) == 1 else personas,
        "attacks": [{"id": a.id, "suffix": a.suffix, "prefill": a.prefill} for a in attacks],
        "train_prompts": len(train),
        "heldout_prompts": len(heldout),
        "heldout_unseen_in_training": min(primary.pool.unseen, len(heldout)),
        "encoder": config.classifier_encoder,
        "methods": methods,
    }
