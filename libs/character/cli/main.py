"""`oct`: the command line of the character-training platform.

Each command group lives in its own module and registers itself here; commands are thin
wrappers over the library. Command groups from outside the library (the gRPC services'
`oct up`, `serve`, `submit`, ...) come in through the `oct.commands` entry-point group, so
the library never imports them. Errors the user can fix (`CharacterError`) are printed as one
clear message with exit status 2, never as a traceback.
"""

from __future__ import annotations

import sys
from importlib.metadata import entry_points

import typer

from character.cli import chat, evaluate, judge, models, personas, run, serve_personas
from character.errors import CharacterError

app = typer.Typer(
    name="oct",
    help="Open character training: give an LLM assistant a persona, and prove it took.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
COMMAND_PLUGINS = "oct.commands"
"""Entry-point group: each entry is a `register(app: typer.Typer)` adding commands."""

for module in (personas, models, run, evaluate, judge, chat, serve_personas):
    module.register(app)
for plugin in entry_points(group=COMMAND_PLUGINS):
    plugin.load()(app)


def main() -> None:
    """Entry point: run the app, turning user-fixable errors into one-line messages."""
    try:
        code = app(standalone_mode=False)
    except CharacterError as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except typer.Abort:
        typer.secho("aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        typer.secho("interrupted; finished stages are kept, run again to resume", err=True)
        sys.exit(130)
    except Exception as err:
        # Usage errors (typer's vendored click) arrive here in non-standalone mode.
        if hasattr(err, "show") and hasattr(err, "exit_code"):
            err.show()
            sys.exit(err.exit_code)
        raise
    sys.exit(code if isinstance(code, int) else 0)
