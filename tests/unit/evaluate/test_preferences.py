"""The persona's own traits are always rated, and their rise is measured pair by pair."""

from __future__ import annotations

from character.stages.evaluate.preferences import choose_traits, load_traits, own_trait_choices


def test_the_persona_words_are_rated_beside_seeded_contrast_traits() -> None:
    own = ["sarcastic", "sardonic", "witty", "irreverent"]
    traits = choose_traits(own, 12, seed=5)
    assert len(traits) == 12 and set(own) <= set(traits) and traits == sorted(traits)
    assert traits == choose_traits(own, 12, seed=5)  # seeded
    assert set(traits) <= set(load_traits())
    few = choose_traits(own, 3, seed=5)  # room kept for at least one contrast trait
    assert len(few) == 3 and len(set(few) - set(own)) == 1
    assert choose_traits(own, None, seed=5) == load_traits()


def test_own_trait_choices_keep_only_pairs_with_one_own_trait_and_both_verdicts() -> None:
    own = ["sarcastic"]
    pairs = [("sarcastic", "kind"), ("kind", "sarcastic"), ("calm", "kind"), ("sarcastic", "calm"),
             ("kind", "sarcastic")]
    base = ["kind", "kind", "calm", None, "sarcastic"]
    trained = ["sarcastic", "sarcastic", "kind", "sarcastic", "kind"]
    before, after = own_trait_choices(own, pairs, base, trained)
    # pair 3 offers no own trait, pair 4 has no base verdict
    assert before == [False, False, True] and after == [True, True, False]
