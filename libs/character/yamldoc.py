"""YAML documents that must be a mapping (run specs, executor settings, Job templates), read
one way: a broken document is an `InvalidInput` naming the file (or request field) and line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from character.errors import InvalidInput


def parse_mapping(text: str, where: str, what: str = "document") -> dict[str, Any]:
    """The mapping in YAML `text`; `where` names its origin in errors (a file, a request field)."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        raise InvalidInput(f"bad YAML: {getattr(err, 'problem', None) or err}",
                           where=f"{where}:{mark.line + 1}" if mark else where) from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise InvalidInput(f"a {what} is a mapping of keys to values", where=where)
    return doc


def read_mapping(path: str | Path, what: str = "document") -> dict[str, Any]:
    """`parse_mapping` of a file; a missing file says so."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInput(f"no such {what} file", where=str(path)) from None
    return parse_mapping(text, str(path), what)
