"""docs/architecture.md lists every module of the library and the services, so a newcomer
finds each file's room there (a new module without its line fails here)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
PACKAGES = {"character": ROOT / "libs" / "character", "character_services": ROOT / "services" / "character_services"}
GENERATED = "character_services/api/"


def modules() -> list[str]:
    """Every module as `package/path.py`; a package's `__init__.py` as its folder
    (`package/folder/`), the generated gRPC code as one folder."""
    found = set()
    for name, root in PACKAGES.items():
        for path in root.rglob("*.py"):
            rel = f"{name}/{path.relative_to(root).as_posix()}"
            if rel.startswith(GENERATED):
                found.add(GENERATED)
            else:
                found.add(rel.removesuffix("__init__.py"))
    return sorted(found)


def listed(module: str) -> bool:
    """Named in full, or on a line that names its folder (`character/stages/prompts.py`,
    `distill.py`); a folder also through a path in it."""
    folder = module.endswith("/")
    end = "" if folder else "`"  # a folder's path may go on: `personas/` or `training/server.py`
    parts = module.rstrip("/").split("/")
    heads = ["/".join(parts[:i]) for i in range(1, len(parts))]
    return f"`{module}{end}" in DOC or any(
        f"`{head}/" in line and f"`{module.removeprefix(head + '/')}{end}" in line
        for line in DOC.splitlines()
        for head in heads
    )


@pytest.mark.parametrize("module", modules())
def test_every_module_is_listed_in_the_architecture_doc(module: str) -> None:
    assert listed(module), f"docs/architecture.md does not list {module}"


def test_a_module_missing_from_the_doc_is_caught() -> None:
    assert not listed("character/stages/no_such_stage.py")
    assert not listed("character/no_such_room/")
