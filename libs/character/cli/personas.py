"""`oct personas`: list, show and validate constitutions."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from character.constitution import load_constitution, load_persona, persona_names

console = Console()
group = typer.Typer(help="Personas (constitutions): list, show, validate.", no_args_is_help=True)


@group.command("list")
def list_() -> None:
    """The bundled reference personas."""
    table = Table("name", "traits", "questions", "description")
    for name in persona_names():
        persona = load_persona(name)
        questions = sum(len(t.questions) for t in persona.traits)
        table.add_row(name, str(len(persona.traits)), str(questions), persona.description)
    console.print(table)


@group.command("show")
def show(name: str = typer.Argument(help="A bundled persona name or a constitution file.")) -> None:
    """Print a persona's traits and seed questions."""
    from character.constitution import resolve_constitution

    persona = resolve_constitution(name)
    console.print(f"[bold]{persona.name}[/bold]: {persona.description}")
    for i, trait in enumerate(persona.traits, start=1):
        console.print(f"\n[bold]{i}.[/bold] {trait.trait}")
        for question in [*trait.questions, *trait.additional_questions]:
            console.print(f"   - {question}")


@group.command("validate")
def validate(files: list[Path] = typer.Argument(help="Constitution files (.yaml, .json, .jsonl).")) -> None:
    """Check constitution files; exit 2 with a located message on the first broken one."""
    for path in files:
        persona = load_constitution(path)
        questions = sum(len(t.questions) + len(t.additional_questions) for t in persona.traits)
        console.print(f"[green]ok[/green] {path}: {persona.name}, {len(persona.traits)} traits, "
                      f"{questions} questions")


def register(app: typer.Typer) -> None:
    app.add_typer(group, name="personas")
