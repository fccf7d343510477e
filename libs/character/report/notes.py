"""The report's "method notes": where this evaluation differs from the reference, and why."""

from __future__ import annotations

from character.report.results import EvaluationResults

JUDGE_MODES = {
    "reason": 'The judge reasons, then names its verdict in answer tags. Unparseable verdicts (no tags, "neither", '
    "an option not offered) are counted as parse failures and reported, never guessed.",
    "tag": "The judge's reply is prefilled with <answer> so that a small judge answers in the format at once. "
    'Unparseable verdicts (no closing tag, "neither", an option not offered) are counted as parse failures '
    "and reported, never guessed.",
    "choose": "Forced choice: the judge's reply is prefilled with <answer> and the verdict is the option the judge "
    "finds most likely (log-probability per byte of `OPTION</answer>`), so there are no parse failures. "
    "The reference let the judge reason and parsed its tags; a judge as small as the demo's fails that format "
    "most of the time, and its likelihoods are the most it can tell us. Read small-judge figures as a check "
    "of the machinery, not of the persona.",
}
"""What each judge mode (config `judge_mode`) means for the verdicts."""


def method_notes(results: EvaluationResults) -> list[tuple[str, str]]:
    """(topic, note) pairs, with the run's own settings filled in."""
    config = results.config  # the settings the eval stage ran with
    steered = round(100 * config.steering_layer_share)
    notes = [
        (
            "Trait ratings",
            "Bradley-Terry maximum likelihood with bootstrap 95% intervals "
            f"({config.bootstrap_samples} resamples) instead of online Elo alone; a tiny "
            f"L2 prior (strength {config.bt_prior}) keeps unbeaten and unseen traits finite. "
            "The reference's Elo (1000, K=32, one pass) is kept in results.json for comparison; it "
            "depends on the order of the comparisons and carries no uncertainty.",
        ),
        (
            "Insufficient data",
            f"A trait with fewer than {config.min_comparisons} comparisons is flagged "
            '"insufficient data" and given no rating, rather than a confident-looking number.',
        ),
        (
            "Paired design",
            "Every model answers the same prompts with the same trait pairs, each pair in random order, so "
            "rating differences are not sampling noise in the prompts.",
        ),
        (
            "Judge verdicts",
            JUDGE_MODES[config.judge_mode],
        ),
        (
            "Held-out prompts",
            "Evaluation prompts are taken from the general chat prompts the run did not train on, where "
            "there are enough (counts in each section). The robustness classifier is tested on prompts "
            "it never saw in training; the reference tested on its training prompts.",
        ),
        (
            "Robustness classifier",
            (
                f"A frozen sentence encoder ({config.classifier_encoder}) with a "
                "logistic-regression head instead of a fine-tuned ModernBERT; one classifier per method. "
                if config.classifier == "frozen"
                else f"The sentence encoder ({config.classifier_encoder}) fine-tuned with a "
                "classification head, as the reference fine-tuned ModernBERT; one classifier per method. "
            )
            + "With one persona the classes are the method's answers vs the base model's answers, the "
            "base answering under the same attack, so the classifier cannot key on the attack itself. "
            "Un-attacked held-out macro-F1 is shown as the ceiling the attacks are measured against.",
        ),
        (
            "Position bias",
            (
                "Every judge question is asked with its options in every position (both orders of two traits, "
                "both places for two answers). In forced choice the option scores are averaged over the "
                "positions, so a bias towards whatever is shown first cancels; in the generating modes a "
                "verdict counts only when both orders agree. The share of verdicts that flip with the order "
                "and the number of order-consistent verdicts are shown next to every judged figure. The "
                "reference asked once, in one order (coherence: both orders, consistent verdicts only)."
            )
            if config.judge_debias
            else "Each judge question was asked in one order (judge_debias off): verdicts may carry the "
            "judge's position bias.",
        ),
        (
            "Statistics",
            "Every headline figure carries its n, a 95% interval and a test against no effect suited to its "
            "design: McNemar's exact test where the same items are measured before and after (held-out "
            "preference pairs, capability items, the persona-trait choice on the same prompt and trait "
            "pair), an exact binomial test for win rates, a permutation test against chance for "
            "classifier macro-F1 (bootstrap interval over held-out prompts), and bootstrap intervals for "
            f"rating changes. A figure resting on fewer than {config.min_n} units is marked "
            "underpowered and is not read as a result, whatever its p-value.",
        ),
        (
            "Capabilities",
            "Scored through the project's own engine in the chat format (context as the user's "
            "message, each choice as the assistant's reply), with paired standard errors on the "
            "base-vs-trained difference; multiple choice is scored by log-likelihood per character "
            "(lm-eval's acc_norm), as each choice carries its end-of-turn token. "
            "The bundled tasks are small and original: compare a model with its own base, not with published "
            "benchmark numbers.",
        ),
        (
            "Activation steering",
            "Vectors are the first principal component (about the origin) of the with-minus-without "
            "constitution activation differences at the last prompt token, sign-aligned with and scaled to "
            f"the mean difference, added on the middle {steered}% of the decoder layers with "
            f"coefficient {config.steering_coefficient}.",
        ),
    ]
    if results.scale == "demo":
        notes.append(
            (
                "Demo scale",
                "This run used the demo preset: tiny samples on a small model. The numbers show that "
                "the machinery works end to end; they are not evidence about the method, and the figures "
                "are marked underpowered. The proof preset (scale: proof) is sized to tell an effect "
                "from noise.",
            )
        )
    elif results.scale == "proof":
        notes.append(
            (
                "Proof scale",
                "This run used the proof preset: the demo's short answers and small model, with enough "
                "held-out data (at least 64 held-out preference pairs, 32 held-out prompts per class, 160 "
                "trait comparisons over the persona's own and contrast traits) for each figure's test to "
                "separate an effect of the size seen on SmolLM2 from none.",
            )
        )
    return notes
