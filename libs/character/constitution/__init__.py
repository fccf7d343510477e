"""Personas as constitutions: the model, file formats, and the bundled reference personas."""

from character.constitution.loader import (
    load_constitution,
    load_persona,
    persona_names,
    persona_path,
    resolve_constitution,
)
from character.constitution.model import Constitution, Trait

__all__ = [
    "Constitution",
    "Trait",
    "load_constitution",
    "load_persona",
    "persona_names",
    "persona_path",
    "resolve_constitution",
]
