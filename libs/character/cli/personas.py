"""`oct personas`: list, show and validate constitutions; publish trained runs as named
personas, list them and export them (the registry: `character.serving.registry`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from character.constitution import load_constitution, load_persona, persona_names
from character.serving.api import DEFAULT_PORT

if TYPE_CHECKING:
    from character.serving.registry import TrainedPersona
    from character.store.base import Store

console = Console()
group = typer.Typer(help="Personas: the constitutions (list, show, validate) and the trained ones (publish, trained, "
                    "export).", no_args_is_help=True)
STORE_HELP = "Local folder or s3://bucket/prefix holding the runs (default $OCT_HOME/store)."


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


@group.command("publish")
def publish(
    run_id: str = typer.Argument(help="A finished run (its merge stage succeeded), e.g. from `oct run`."),
    name: str = typer.Option(..., help="The persona's name: lower-case letters, digits, '.', '_', '-'."),
    tag: str = typer.Option("latest", help="The tag to move to this run; the record it named stays readable."),
    shared: bool = typer.Option(False, help="Visible to every caller of a server over this store."),
    store: str | None = typer.Option(None, help=STORE_HELP),
) -> None:
    """Publish a finished run as NAME:TAG."""
    from character.serving.registry import publish as publish_run

    print_published(publish_run(_store(store), run_id, name, tag, shared=shared), console)


@group.command("trained")
def trained(store: str | None = typer.Option(None, help=STORE_HELP)) -> None:
    """The published personas: each tag with the run it names and its evaluation's verdicts
    (a table on a terminal, one line per persona elsewhere)."""
    from character.serving.registry import trained_personas

    columns = ("persona", "record", "run", "base model", "shared", "published", "figures")
    rows = []
    for persona in trained_personas(_store(store)):
        found = persona.figures.values()
        shown = sum(f.distinguishable for f in found)
        rows.append((persona.ref, persona.record_id, persona.run_id, persona.base_model,
                     "yes" if persona.shared else "no", f"{persona.published_at:%Y-%m-%d %H:%M}",
                     f"{shown} of {len(found)} distinguishable from no effect" if found else "no evaluation"))
    if console.is_terminal:
        table = Table(*columns)
        for row in rows:
            table.add_row(*row)
        console.print(table)
        return
    for row in rows:
        console.print(" ".join([row[0], *(f"{c.replace(' ', '_')}={v!r}" for c, v in zip(columns[1:], row[1:],
                                                                                       strict=True))]),
                      soft_wrap=True, markup=False, highlight=False)


@group.command("export")
def export(
    ref: str = typer.Argument(help="NAME, NAME:TAG or NAME@RECORD (see `oct personas trained`)."),
    folder: Path = typer.Argument(help="A new (or empty) folder to write."),
    form: str = typer.Option("hf", "--format", help="hf: a Hugging Face model folder (merged weights); peft: "
                             "the LoRA adapter alone. GGUF: no maintained converter is installed."),
    store: str | None = typer.Option(None, help=STORE_HELP),
) -> None:
    """Write a published persona as a standard Hugging Face or PEFT folder with a model card."""
    from character.serving.export import export_persona

    written = export_persona(_store(store), ref, form, folder)
    console.print(f"wrote {ref} as {form} to {written} (model card: {written / 'README.md'})", soft_wrap=True)


def print_published(persona: TrainedPersona, out: Console) -> None:
    """The persona's name and the two ways to talk to it: `oct chat`, and curl against `oct
    serve-personas` with the CA and token `oct up` keeps under $OCT_HOME."""
    from character.home import oct_home
    from character.pipeline.publish import DEFAULT_TAG
    from character.serving.resolve import base_names

    home = oct_home()
    # the bare name means tag "latest", unless it is a base model's (see serving/resolve.py)
    name = persona.name if persona.tag == DEFAULT_TAG and persona.name not in base_names() else persona.ref
    body = json.dumps({"model": name, "messages": [{"role": "user", "content": "How was your day?"}]})
    out.print(f"published persona [bold]{persona.ref}[/bold] (record {persona.name}@{persona.record_id}, run "
              f"{persona.run_id}). Talk to it:", soft_wrap=True)
    out.print(f"  oct chat {name}", soft_wrap=True, markup=False, highlight=False)
    out.print(f"  curl --cacert {home}/tls/ca.crt -H \"Authorization: Bearer $(cat {home}/auth/token)\" "
              f"https://127.0.0.1:{DEFAULT_PORT}/v1/chat/completions -H 'Content-Type: application/json' "
              f"-d '{body}'   # with `oct serve-personas` running", soft_wrap=True, markup=False, highlight=False)


def _store(uri: str | None) -> Store:
    from character.pipeline.spec import default_store_uri
    from character.store import open_store

    return open_store(uri or default_store_uri())


def register(app: typer.Typer) -> None:
    app.add_typer(group, name="personas")
