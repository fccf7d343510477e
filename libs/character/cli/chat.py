"""`oct chat MODEL`: talk to a published persona (NAME[:TAG]), a trained run (its id) or a base
model in the terminal, on this machine (the embedded default: no servers). Answers stream
token by token.

Commands inside the chat: `/system TEXT` sets the system prompt (`/system` alone clears it),
`/reset` forgets the conversation, `/compare base` puts every following message to the base
model too and shows both answers side by side (`/compare off` stops), `/quit` (or end of
input) leaves. The history lives in memory only."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import typer

HELP = "commands: /system [TEXT], /reset, /compare base, /compare off, /quit"


def chat(
    model: str = typer.Argument(help="A published persona (NAME, NAME:TAG; `oct personas trained`), a run id "
                               "(its trained persona) or a base model (smollm2, tiny)."),
    store: str | None = typer.Option(None, help="Local folder or s3://bucket/prefix (default $OCT_HOME/store)."),
    temperature: float = typer.Option(0.7, min=0.0, help="0: greedy (the same answer every time)."),
    max_tokens: int = typer.Option(256, min=1, help="Longest answer, in tokens."),
    seed: int | None = typer.Option(None, help="Sampling seed (the same seed, the same answers)."),
) -> None:
    """Chat with a persona in the terminal (history in memory only; type /help for commands)."""
    from rich.console import Console
    from rich.table import Table

    from character.models.engine import SamplingParams
    from character.pipeline.spec import default_store_uri
    from character.platform import load_platform_config
    from character.serving.chat import ChatSession
    from character.serving.pool import PersonaPool
    from character.serving.resolve import base_model, resolve
    from character.store import open_store

    the_store = open_store(store or default_store_uri())
    persona = resolve(the_store, model)
    pool = PersonaPool(the_store, load_platform_config().limits.max_personas_loaded)
    sampling = SamplingParams(max_new_tokens=max_tokens, temperature=temperature, top_p=1.0,
                              repetition_penalty=1.0, seed=seed)
    session = ChatSession(pool, persona, base_model(persona.base), sampling)
    console = Console()
    compare = False
    typer.echo(f"chatting with {persona.name} (base {persona.base}); {HELP}")
    for raw in _lines():
        line = raw.strip()
        if not line:
            continue
        command, _, rest = line.partition(" ")
        if command == "/quit":
            break
        if command == "/reset":
            session.reset()
            typer.echo("(conversation forgotten)")
        elif command == "/system":
            session.system = rest.strip() or None
            typer.echo(f"(system prompt: {session.system or 'none'})")
        elif command == "/compare" and rest.strip() in ("base", "off"):
            compare = rest.strip() == "base" and not persona.is_base
            typer.echo("(comparing with the base model)" if compare else "(not comparing)")
        elif command.startswith("/"):
            typer.echo(f"(unknown command {command}; {HELP})")
        elif compare:
            base_answer = session.ask_base(line)
            table = Table(persona.name, f"base: {persona.base}", expand=True)
            table.add_row(session.ask(line), base_answer)
            console.print(table)
        else:
            session.ask(line, on_text=_show)
            typer.echo("")


def _show(piece: str) -> None:
    sys.stdout.write(piece)
    sys.stdout.flush()


def _lines() -> Iterator[str]:
    """The user's lines, with a prompt when a person types them."""
    while True:
        if sys.stdin.isatty():
            sys.stdout.write("> ")
            sys.stdout.flush()
        line = sys.stdin.readline()
        if not line:
            return
        yield line


def register(app: typer.Typer) -> None:
    app.command("chat")(chat)
