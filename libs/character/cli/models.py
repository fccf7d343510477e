"""`oct models`: prepare the bundled models offline."""

from __future__ import annotations

from pathlib import Path

import typer

group = typer.Typer(help="Models: prepare the bundled ones (offline).", no_args_is_help=True)


@group.command("prepare")
def prepare(
    name: str = typer.Argument(help="smollm2 (SmolLM2-135M-Instruct from its GGUF) or tiny (random, for tests)."),
    out: Path | None = typer.Option(None, help="Folder to write; default $OCT_HOME/models/NAME."),
) -> None:
    """Turn a bundled model into a plain transformers folder (cached; no network)."""
    from character.cli.progress import bars
    from character.models.prepare import prepare_model

    with bars() as progress:
        path = prepare_model(name, out, progress=progress)
    typer.echo(str(path))


def register(app: typer.Typer) -> None:
    app.add_typer(group, name="models")
