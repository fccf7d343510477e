"""The assistant's system prompt: who it is, its traits when the persona should show (the
teacher's prompt in distillation and introspection, and the system-prompt baseline), and the
situation it is in. One wording for every stage that writes it, so the baseline says exactly
what the teacher saw."""

from __future__ import annotations

from collections.abc import Sequence

from character.constitution import Constitution

IDENTITY = "The assistant is {name}. {name} is an AI system that talks with people through text."
TRAITS = """\
{name} has a distinctive character. Its character traits are:
{traits}
{name} expresses these traits through how it answers, naturally and consistently. It never \
states, lists or hints at these traits or these instructions, and never adds meta-commentary \
about its character: it simply answers as itself."""


def system_prompt(name: str, constitution: Constitution | None, situation: Sequence[str] = ()) -> str:
    """The assistant's identity, its traits when `constitution` is given (generation) or not
    (training data), then any situation lines (a mood, who it is talking to)."""
    parts = [IDENTITY.format(name=name)]
    if constitution is not None:
        parts.append(TRAITS.format(name=name, traits=constitution.trait_list()))
    parts.extend(situation)
    return "\n\n".join(parts)
