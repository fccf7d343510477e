"""`make mutation`'s bar (scripts/mutation.py): every module at or above its target's
`min_score`, else the default bar; a module not fully run is below any bar."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "mutation.py"


@pytest.fixture(scope="module")
def mutation() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mutation_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def _score(mutation: ModuleType, killed: int, survived: int, unchecked: int = 0) -> object:
    return mutation.Score("m.py", killed=killed, survived=survived, unchecked=unchecked)


def test_a_module_exactly_at_its_bar_passes_and_one_mutant_less_fails(mutation: ModuleType) -> None:
    strict = mutation.Target(("m.py",), (), min_score=95.0)
    assert mutation.below_bar([(strict, _score(mutation, 95, 5))], default=90.0) == []
    assert mutation.below_bar([(strict, _score(mutation, 94, 6))], default=90.0) == ["m.py: 94.0% < 95%"]


def test_a_target_without_its_own_bar_takes_the_default(mutation: ModuleType) -> None:
    plain = mutation.Target(("m.py",), ())
    assert mutation.below_bar([(plain, _score(mutation, 92, 8))], default=90.0) == []
    assert mutation.below_bar([(plain, _score(mutation, 92, 8))], default=93.0) == ["m.py: 92.0% < 93%"]


def test_a_module_with_mutants_not_run_yet_is_below_any_bar(mutation: ModuleType) -> None:
    plain = mutation.Target(("m.py",), ())
    assert mutation.below_bar([(plain, _score(mutation, 10, 0, unchecked=3))], default=0.0) == [
        "m.py: 3 mutants not run yet"]


def test_every_target_file_loads_and_an_unknown_key_is_refused(mutation: ModuleType, tmp_path: Path) -> None:
    targets = mutation.load_targets()
    assert targets and all(t.min_score is None or 0 < t.min_score <= 100 for t in targets.values())
    (tmp_path / "bad.yaml").write_text("modules: [a.py]\ntests: [t.py]\nmin_scor: 95\n")
    with pytest.raises(SystemExit, match="min_scor"):
        mutation.load_targets(tmp_path)
