"""The gRPC layer is installed as `character_services`, and `oct` gets its commands through the
`oct.commands` entry point: the library's CLI never imports the services package by name."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def _python(code: str, cwd: Path) -> str:
    # Run outside the repository so that its root (which pytest puts on sys.path) cannot
    # make a `services` folder importable: only what is installed counts.
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_the_services_folder_is_installed_as_character_services_only(tmp_path: Path) -> None:
    found = _python(
        "import importlib.util as u; import character_services.controller.server as s; "
        "print(u.find_spec('services') is None, s.__name__)",
        tmp_path,
    )
    assert found == "True character_services.controller.server"


def test_oct_assembles_the_services_commands_through_the_entry_point(tmp_path: Path) -> None:
    found = _python(
        "from importlib.metadata import entry_points; from character.cli.main import COMMAND_PLUGINS, app; "
        "print(sorted(e.value for e in entry_points(group=COMMAND_PLUGINS))); "
        "print(sorted(c.name for c in app.registered_commands if c.name))",
        tmp_path,
    )
    plugins, commands = found.splitlines()
    assert plugins == "['character_services.cli:register']"
    for name in ("up", "serve", "submit", "status", "watch", "cancel", "list", "run", "stage"):
        assert f"'{name}'" in commands, f"`oct {name}` missing from {commands}"
