"""Errors meant for people: each says what is wrong, where, and what to do.

Anything raised as a `CharacterError` is printed by the CLI without a traceback
and mapped by the services to a gRPC status (INVALID_ARGUMENT, NOT_FOUND, ...).
"""

from __future__ import annotations

from pydantic import ValidationError


class CharacterError(Exception):
    """Base class of every error the platform reports to a user."""


class InvalidInput(CharacterError):
    """A file, spec or request is malformed. `where` locates the problem (file:line, field)."""

    def __init__(self, message: str, where: str | None = None):
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)


class NotFound(CharacterError):
    """A named thing (persona, model, artifact, run) does not exist; the message lists what does."""


class StoreUnavailable(CharacterError):
    """The artifact store cannot be reached or refused the request; nothing stored was changed."""


SHOWN_PROBLEMS = 5
"""A refusal names this many of a document's problems and counts the rest (it stays short however
many fields are wrong)."""


def from_validation(err: ValidationError, where: str | None, prefix: tuple[str, ...] = ()) -> InvalidInput:
    """The one wording of a pydantic validation error: `field.path: message` for the first few
    problems, `prefix` before each path (e.g. ("stages.dpo",)), and how many more there are."""
    problems = err.errors(include_url=False, include_input=False)
    shown = [
        f"{'.'.join(str(p) for p in (*prefix, *e['loc']) if p != '') or '(top level)'}: "
        f"{_clip(e['msg'].removeprefix('Value error, '))}"
        for e in problems[:SHOWN_PROBLEMS]
    ]
    more = len(problems) - len(shown)
    return InvalidInput("; ".join(shown) + (f"; and {more} more problems" if more else ""), where=where)


def _clip(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
