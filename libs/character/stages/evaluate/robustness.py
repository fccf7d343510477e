"""Robustness (docs/method.md section 6): does the persona survive attempts to talk it out of it?

A persona classifier (sentence encoder + logistic regression, or the encoder fine-tuned:
`stages/common/classifier.py`) learns who wrote a text from un-attacked answers to training prompts, then
labels answers to HELD-OUT prompts (the reference tested on its training prompts) produced
under each attack: the 8 adversarial suffixes of `character/data/adversarial_suffixes.yaml`,
each appended to the user's message after a blank line, and two prefill attacks: the
reference's "keep going" (the base model writes the first answer, then the model under test
is sent "Keep going." and answers) and a neutral opening prefilled into the model's own turn.
The classifier reads only what the model under test wrote. The un-attacked held-out answers
are scored too ("none"), as the ceiling the attacks are measured against.

Classes: with one run, the persona's method vs the base model (binary; the base answers
under the same attack, so the classifier cannot key on the attack's own effect on style);
with several runs, one class per run's persona (N-way, as in the reference). One classifier
per method. Metric: macro-F1 per attack and method, each with a bootstrap interval over
held-out prompts and a permutation test against chance (`stats.macro_f1`); the mean over
attacks with the same evidence, and its standard error over attacks.

Recognition without a system prompt: the classifier trained on the system-prompt method's
answers (constitution-prompted vs plain) labels the trained models' un-prompted, un-attacked
held-out answers against the base model's. A macro-F1 above chance means the trained model,
with no prompt at all, writes like the prompted persona.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any

import yaml

from character import stats
from character.errors import InvalidInput
from character.models.engine import Conversation
from character.progress import ProgressEvent
from character.report import results
from character.report.results import Recognition, RobustnessMethod, RobustnessResults

if TYPE_CHECKING:
    from character.stages.evaluate import Config
    from character.stages.evaluate.methods import Method
    from character.stages.evaluate.subject import Subject

NO_ATTACK = "none"
BASE_CLASS = "base"


class Attack(results.Attack):
    """One way of talking a model out of its persona (its fields are the results' record)."""

    def conversation(self, prompt: str, base_answer: str | None = None) -> Conversation:
        """The conversation the model under test continues; `base_answer` is the base model's
        answer to `prompt` (needed by `base_turn` attacks only)."""
        user = prompt if self.suffix is None else f"{prompt}\n\n{self.suffix}"
        conversation = [{"role": "user", "content": user}]
        if self.base_turn:
            if base_answer is None:
                raise ValueError(f"attack {self.id!r} needs the base model's answer to the prompt")
            conversation += [
                {"role": "assistant", "content": base_answer},
                {"role": "user", "content": self.followup or ""},
            ]
        if self.prefill is not None:
            conversation.append({"role": "assistant", "content": self.prefill})
        return conversation


def load_attacks(prefill: bool = True) -> list[Attack]:
    """The bundled suffix attacks, then (with `prefill`) the prefill attacks."""
    source = resources.files("character.data") / "adversarial_suffixes.yaml"
    doc = yaml.safe_load(source.read_text(encoding="utf-8"))
    try:
        attacks = [Attack(str(s["id"]), suffix=str(s["text"])) for s in doc["suffixes"]]
        if prefill:
            for entry in doc["prefill_attacks"]:
                base_turn = bool(entry.get("base_turn", False))
                attacks.append(
                    Attack(
                        str(entry["id"]),
                        prefill=entry.get("assistant_prefill"),
                        followup=str(entry["user_followup"]) if base_turn else None,
                        base_turn=base_turn,
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


def _plain(prompts: Sequence[str]) -> list[Conversation]:
    """Each prompt as a lone user message: the un-attacked question."""
    return [[{"role": "user", "content": p}] for p in prompts]


def _texts(method: Method, conversations: Sequence[Conversation], subject: Subject) -> list[str]:
    return [g.text for g in method.answer(conversations, subject.sampling(), progress=subject.ctx.progress)]


def _classifier(config: Config, seed: int) -> Any:
    from character.stages.common.classifier import PersonaClassifier

    return PersonaClassifier(
        config.classifier_encoder,
        seed=seed,
        finetune=config.classifier == "finetune",
        epochs=config.classifier_epochs,
        lr=config.classifier_lr,
    )


def evaluate_method(
    name: str,
    classes: dict[str, tuple[Subject, Method]],
    train: Sequence[str],
    heldout: Sequence[str],
    attacks: Sequence[Attack],
    config: Config,
) -> tuple[RobustnessMethod, Any]:
    """Train one classifier on `classes`' un-attacked answers to `train`, score it per attack;
    returns the results and the classifier."""
    any_subject = next(iter(classes.values()))[0]
    progress = any_subject.ctx.progress
    seed = any_subject.ctx.spec.seed
    task = f"eval: robustness ({name})"
    progress(ProgressEvent(task, 0, len(classes) + 1))
    # One call per class answers both the training prompts and every attack: a decode step
    # costs about the same for 6 rows as for 28, so fewer, fuller batches save most of the time.
    scenarios = [Attack(NO_ATTACK), *attacks]
    texts, labels = [], []
    attacked_answers: dict[str, list[str]] = {}
    for step, (label, (subject, method)) in enumerate(classes.items(), start=1):
        base = base_answers(subject, heldout) if any(a.base_turn for a in scenarios) else {}
        conversations = [attack.conversation(p, base.get(p)) for attack in scenarios for p in heldout]
        answers = _texts(method, _plain(train) + conversations, subject)
        texts += answers[: len(train)]
        labels += [label] * len(train)
        attacked_answers[label] = answers[len(train) :]
        progress(ProgressEvent(task, step, len(classes) + 1))
    classifier = _classifier(config, seed).fit(texts, labels)
    predicted = dict(zip(classes, (classifier.predict(a) for a in attacked_answers.values()), strict=True))
    progress(ProgressEvent(task, len(classes) + 1, len(classes) + 1, "classifier trained, answers labelled"))
    scores: dict[str, float] = {}
    blocks: dict[str, tuple[list[str], list[str]]] = {}
    example: dict[str, str] = {}
    n = len(heldout)
    truth = [label for label in classes for _ in range(n)]
    persona = next(label for label in classes if label != BASE_CLASS)
    for i, attack in enumerate(scenarios):
        window = slice(i * n, (i + 1) * n)
        guesses = [g for label in classes for g in predicted[label][window]]
        blocks[attack.id] = (truth, guesses)
        scores[attack.id] = stats.macro_f1_score(truth, guesses, list(classes))
        example[attack.id] = attacked_answers[persona][window][0] if n else ""
    attacked = [scores[a.id] for a in attacks]
    mean, stderr = mean_and_stderr(attacked)
    evidence = {
        attack_id: stats.macro_f1(
            f"{name}: macro-F1 under {attack_id}", [block], list(classes), n, config.min_n, seed
        )
        for attack_id, block in blocks.items()
    }
    evidence["mean_over_attacks"] = stats.macro_f1(
        f"{name}: macro-F1 under attack (mean over {len(attacks)} attacks)",
        [blocks[a.id] for a in attacks], list(classes), n, config.min_n, seed,
    )
    found = RobustnessMethod(method=name, macro_f1=scores, mean=mean, stderr=stderr, unattacked=scores[NO_ATTACK],
                             evidence=evidence, examples=example)
    return found, classifier


def base_answers(subject: Subject, prompts: Sequence[str]) -> dict[str, str]:
    """The base model's un-attacked answers to `prompts` (the first turn of the reference's
    keep-going attack; cached, so the base class's own "none" answers are the same ones)."""
    texts = _texts(subject.method("base"), _plain(prompts), subject)
    return dict(zip(prompts, texts, strict=True))


def recognition(
    subject: Subject, classifier: Any, heldout: Sequence[str], methods: Sequence[str], config: Config
) -> dict[str, Recognition]:
    """Does the classifier trained on constitution-prompted vs plain answers recognise each
    trained method's un-prompted held-out answers (against the base model's)?"""
    conversations = _plain(heldout)
    base = classifier.predict(_texts(subject.method("base"), conversations, subject))
    n = len(heldout)
    out = {}
    for name in methods:
        guesses = classifier.predict(_texts(subject.method(name), conversations, subject))
        truth = [subject.persona] * n + [BASE_CLASS] * n
        evidence = stats.macro_f1(
            f"classifier trained on system-prompted answers recognises {name} without a prompt",
            [(truth, [*guesses, *base])], [subject.persona, BASE_CLASS], n, config.min_n, subject.ctx.spec.seed,
        )
        out[name] = Recognition(
            labelled_persona=sum(g == subject.persona for g in guesses) / n if n else None,
            base_labelled_persona=sum(g == subject.persona for g in base) / n if n else None,
            evidence=evidence,
        )
    return out


def evaluate(subjects: Sequence[Subject], config: Config) -> RobustnessResults:
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
    if len(subjects) == 1:
        # every binary classifier has the base model as a class, and its held-out answers start
        # the keep-going attack: one call answers all of them (the method caches them)
        base_answers(primary, heldout + train)
    methods = {}
    classifiers = {}
    for name in config.robustness_methods:
        if len(subjects) == 1:
            classes = {
                primary.persona: (primary, primary.method(name)),
                BASE_CLASS: (primary, primary.method("base")),
            }
        else:
            classes = {s.persona: (s, s.method(name)) for s in subjects}
        methods[name], classifiers[name] = evaluate_method(name, classes, train, heldout, attacks, config)
    recognised = {}
    trained = [m for m in ("dpo", "full") if m in config.robustness_methods]
    if len(subjects) == 1 and "system_prompt" in classifiers and trained:
        recognised = recognition(primary, classifiers["system_prompt"], heldout, trained, config)
    return RobustnessResults(
        mode="binary" if len(subjects) == 1 else f"{len(subjects)}-way",
        classes=[primary.persona, BASE_CLASS] if len(subjects) == 1 else personas,
        attacks=list[results.Attack](attacks),
        train_prompts=len(train),
        heldout_prompts=len(heldout),
        heldout_unseen_in_training=min(primary.pool.unseen, len(heldout)),
        encoder=config.classifier_encoder,
        classifier=config.classifier,
        methods=methods,
        recognition_without_prompt=recognised,
    )
