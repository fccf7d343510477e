"""Errors meant for people: each says what is wrong, where, and what to do.

Anything raised as a `CharacterError` is printed by the CLI without a traceback
and mapped by the services to a gRPC status (INVALID_ARGUMENT, NOT_FOUND, ...).
"""

from __future__ import annotations


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
