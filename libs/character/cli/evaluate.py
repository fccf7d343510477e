"""`oct eval` and `oct report`."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Evaluation commands are added by the evaluation work (issue 4)."""
