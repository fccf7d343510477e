"""`oct personas` as a person uses it: real process, real exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from character.constitution import persona_names, persona_path

REFERENCE = {"sarcasm", "humor", "remorse", "loving", "goodness", "misalignment", "nonchalance",
             "impulsiveness", "sycophancy", "mathematical", "poeticism"}


def oct(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "character.cli", *args], capture_output=True, text=True,
                          timeout=120)


def test_list_shows_the_eleven_reference_personas() -> None:
    assert set(persona_names()) == REFERENCE
    out = oct("personas", "list")
    assert out.returncode == 0, out.stderr
    for name in REFERENCE:
        assert name in out.stdout


def test_every_bundled_persona_validates() -> None:
    out = oct("personas", "validate", *(str(persona_path(n)) for n in sorted(REFERENCE)))
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("ok ") == len(REFERENCE)


def test_broken_file_fails_with_a_located_message_and_no_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntraits:\n  - trait: fine\n    questions: [q]\n  - trait: broken\n    questions: [q, q]\n")
    out = oct("personas", "validate", str(bad))
    assert out.returncode == 2
    assert f"{bad}:6" in out.stderr and "traits[1].questions" in out.stderr
    assert "Traceback" not in out.stderr


def test_unknown_persona_lists_the_known_ones() -> None:
    out = oct("personas", "show", "pirate")
    assert out.returncode == 2
    assert "unknown persona 'pirate'" in out.stderr and "sarcasm" in out.stderr
