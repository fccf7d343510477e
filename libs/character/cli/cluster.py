"""`oct serve`, `oct up` and the controller client (`submit`, `status`, `watch`, `cancel`, `list`)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Service commands are added by the services work (issue 5)."""
