"""The committed stubs in services/character_services/api are what scripts/gen-proto.sh makes of proto/ now:
a proto edited without regenerating fails here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_generated_stubs_match_the_protos(tmp_path: Path) -> None:
    subprocess.run(["bash", str(ROOT / "scripts" / "gen-proto.sh"), str(tmp_path)], check=True,
                   env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"})
    committed = ROOT / "services" / "character_services" / "api"
    fresh = {p.relative_to(tmp_path).as_posix(): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    stored = {p.relative_to(committed).as_posix(): p.read_bytes() for p in committed.rglob("*")
              if p.is_file() and "__pycache__" not in p.parts}
    regenerate = "run `make proto` (scripts/gen-proto.sh) and commit services/character_services/api"
    assert sorted(fresh) == sorted(stored), regenerate
    stale = [name for name in fresh if fresh[name] != stored[name]]
    assert not stale, f"stale stubs {stale}: {regenerate}"

