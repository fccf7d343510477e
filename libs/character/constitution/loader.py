"""Load constitutions from files, with errors that name the file, line and field.

Accepted formats:
- ours, YAML (`.yaml`/`.yml`) or JSON object (`.json`): `{name, description, traits: [...]}`;
- the reference JSON array (`.json`, or `.txt` as the reference repository stores its
  hand-written constitutions): `[{"trait": ..., "questions": [...], "clarification": ...}, ...]`
  (`questions` and `clarification` optional);
- the reference augmented JSONL (`.jsonl`): one `{"trait", "questions", "additional_questions"}`
  object a line.
Reference formats carry no name; the file's stem is used.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from character.constitution.model import Constitution
from character.errors import InvalidInput, NotFound
from character.yamldoc import line_index, load, parse_json, read_text

_PERSONAS = "character.constitution.personas"


# ----------------------------------------------------------------------------- locating
def _json_lines(text: str, path: Path) -> dict[tuple[Any, ...], int]:
    """Each path in a JSON document -> its line (JSON is YAML, as far as locating goes)."""
    try:
        return line_index(load(text, str(path))[1])
    except InvalidInput:
        return {}


def _field(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for p in loc:
        parts.append(f"[{p}]" if isinstance(p, int) else (f".{p}" if parts else str(p)))
    return "".join(parts) or "(top level)"


def _describe(err: ValidationError, path: str, lines: dict[tuple[Any, ...], int], base_line: int = 0,
              loc_prefix: tuple[Any, ...] = ()) -> InvalidInput:
    problems = []
    first_where = None
    for e in err.errors():
        loc = (*loc_prefix, *e["loc"])
        line = None
        for cut in range(len(e["loc"]), -1, -1):
            line = lines.get(tuple(e["loc"][:cut]))
            if line is not None:
                break
        where = f"{path}:{(line or 1) + base_line}" if line or base_line else path
        first_where = first_where or where
        msg = e["msg"].removeprefix("Value error, ")
        problems.append(f"{where}: field {_field(loc)}: {msg}")
    return InvalidInput(
        "invalid constitution:\n  " + "\n  ".join(problems), where=None
    ) if len(problems) > 1 else InvalidInput(problems[0].split(": ", 1)[1], where=first_where)


# ----------------------------------------------------------------------------- formats
def _from_document(doc: Any, path: Path, lines_of: Callable[[], dict[tuple[Any, ...], int]]) -> Constitution:
    """`lines_of()` locates the document's fields (called only to report a problem)."""
    listed = isinstance(doc, list)
    if listed:
        doc = {"name": _stem_name(path), "traits": doc}
    elif not isinstance(doc, dict):
        raise InvalidInput(
            f"expected a mapping with name and traits, or a list of traits; got {type(doc).__name__}",
            where=f"{path}:1",
        )
    try:
        return Constitution.model_validate(doc)
    except ValidationError as err:
        lines = lines_of()
        if listed:
            lines = {("traits", *k): v for k, v in lines.items()}
        raise _describe(err, str(path), lines) from None


def _from_jsonl(text: str, path: Path) -> Constitution:
    traits = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        traits.append((lineno, parse_json(line, str(path), first_line=lineno)))
    doc = {"name": _stem_name(path), "traits": [t for _, t in traits]}
    try:
        return Constitution.model_validate(doc)
    except ValidationError as err:
        # Each trait sits on its own line: locate errors by the trait's line.
        lines = {("traits", i): lineno for i, (lineno, _) in enumerate(traits)}
        raise _describe(err, str(path), lines) from None


def _stem_name(path: Path) -> str:
    stem = re.sub(r"[^a-z0-9_-]+", "-", path.stem.lower()).strip("-_")
    return stem or "persona"


def load_constitution(path: str | Path) -> Constitution:
    """Read and validate a constitution file in any accepted format."""
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"{path}: no such constitution file")
    text = read_text(path, "constitution")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _from_jsonl(text, path)
    if suffix in (".json", ".txt"):
        layout = " (a .txt constitution is the reference layout: a JSON array of traits)" if suffix == ".txt" else ""
        try:
            doc = parse_json(text, str(path))
        except InvalidInput as err:
            raise InvalidInput(f"{err}{layout}") from None
        if suffix == ".txt" and not isinstance(doc, list):
            raise InvalidInput(f"expected a JSON array of traits{layout}", where=f"{path}:1")
        return _from_document(doc, path, lambda: _json_lines(text, path))
    if suffix in (".yaml", ".yml"):
        doc, node = load(text, str(path))
        return _from_document(doc, path, lambda: line_index(node))
    raise InvalidInput(f"unknown constitution format {suffix!r}: use .yaml, .yml, .json, .jsonl or .txt",
                       where=str(path))


# ----------------------------------------------------------------------------- bundled personas
def persona_names() -> list[str]:
    """Names of the personas shipped with the library."""
    folder = resources.files(_PERSONAS)
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def persona_path(name: str) -> Path:
    """The file of a bundled persona; NotFound lists the known names."""
    names = persona_names()
    if name not in names:
        raise NotFound(f"unknown persona {name!r}; known personas: {', '.join(names)}")
    return Path(str(resources.files(_PERSONAS) / f"{name}.yaml"))


def load_persona(name: str) -> Constitution:
    """A bundled persona by name."""
    return load_constitution(persona_path(name))


def resolve_constitution(name_or_path: str | Path) -> Constitution:
    """A bundled persona name, or a path to a constitution file."""
    candidate = Path(name_or_path)
    if candidate.suffix.lower() in (".yaml", ".yml", ".json", ".jsonl", ".txt") or candidate.exists():
        return load_constitution(candidate)
    return load_persona(str(name_or_path))
