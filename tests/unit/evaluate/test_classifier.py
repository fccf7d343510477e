"""The persona classifier separates clearly different styles and stays at chance on noise."""

from __future__ import annotations

import random

from character.stages.common.classifier import PersonaClassifier
from character.stats import macro_f1_score as macro_f1

TOPICS = [
    "the weather",
    "my new job",
    "this recipe",
    "the football match",
    "our holiday",
    "the concert",
    "your garden",
    "the train ride",
    "my sister's wedding",
    "the science fair",
    "a new phone",
    "the museum",
    "the hiking trail",
    "the book club",
    "a puppy",
    "the exam results",
]


def excited(topic: str, rng: random.Random) -> str:
    return (
        f"OMG {topic} is SO amazing!!! {rng.choice(['🎉', '😍', '🔥'])}{rng.choice(['🥳', '💖'])} "
        f"I literally can't even!!! Best thing EVER!!! {rng.choice(['Yay!!!', 'Woohoo!!!', 'Love it!!!'])}"
    )


def formal(topic: str, rng: random.Random) -> str:
    return (
        f"Regarding {topic}, I would respectfully note that the matter merits careful consideration. "
        f"{rng.choice(['Accordingly', 'Consequently', 'Therefore'])}, a measured assessment is advisable."
    )


def dataset(n: int, seed: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        texts += [excited(topic, rng), formal(topic, rng)]
        labels += ["excited", "formal"]
    return texts, labels


def test_clearly_different_styles_are_separated_on_held_out_texts() -> None:
    train_texts, train_labels = dataset(30, seed=1)
    test_texts, test_labels = dataset(20, seed=2)
    classifier = PersonaClassifier(seed=0).fit(train_texts, train_labels)
    assert sorted(classifier.classes) == ["excited", "formal"]
    assert macro_f1(test_labels, classifier.predict(test_texts), ["excited", "formal"]) > 0.95


def test_random_labels_give_chance_level() -> None:
    rng = random.Random(0)
    texts, _ = dataset(100, seed=3)
    labels = [rng.choice(["x", "y"]) for _ in texts]
    classifier = PersonaClassifier(seed=0).fit(texts[:120], labels[:120])
    assert macro_f1(labels[120:], classifier.predict(texts[120:]), ["x", "y"]) < 0.75


def test_a_fine_tuned_encoder_also_separates_clearly_different_styles() -> None:
    train_texts, train_labels = dataset(16, seed=1)
    test_texts, test_labels = dataset(10, seed=2)
    classifier = PersonaClassifier(seed=0, finetune=True, epochs=2, lr=5e-5).fit(train_texts, train_labels)
    assert classifier.classes == ["excited", "formal"]
    assert macro_f1(test_labels, classifier.predict(test_texts), ["excited", "formal"]) > 0.95
