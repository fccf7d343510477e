"""`make mutation`: mutation testing (mutmut) of the modules where a silent bug corrupts results.

Each target maps its library modules to the test files that state their properties, and runs in
its own mutmut work folder, out/mutation/<target>/ (a `src` link to libs/ and a `tests` link, so
mutmut imports its mutated copy as `character.*`). The folder is mutmut's incremental cache: a
re-run tests only new mutants, those of functions whose code changed, and earlier survivors
(the tests may have improved); killed ones keep their result. Changing a target's test files
or this script's mutmut settings makes mutmut drop the target's results (they no longer hold).
Each mutant runs only the tests that reached its function. Prints the score per module and
every surviving mutant's diff; mutants a target's file lists as equivalent (a mutation that
cannot change behaviour, with the reason) are left out of the score. Mutation jobs run
niced (`make mutation` uses nice -n 10): on a busy shared machine they take many times longer.

Targets: one YAML file each in scripts/mutation-targets/ (modules, tests, equivalent mutants).

The bar: every module must score at least its target's `min_score` (default 90%; the targets
that decide verdicts and gates set 95%), or the run fails, naming each module below its bar.

Usage: python scripts/mutation.py [TARGET ...] [--fresh] [--report] [--jobs N] [--min-score 90]
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "out" / "mutation"
TARGETS_DIR = ROOT / "scripts" / "mutation-targets"


@dataclass(frozen=True)
class Target:
    """One target, read from scripts/mutation-targets/<name>.yaml (one file per target, so that
    its modules, tests and equivalent mutants are edited together)."""

    modules: tuple[str, ...]
    """Library modules to mutate, relative to libs/character."""
    tests: tuple[str, ...]
    """Test files whose tests may kill them (mutmut runs, per mutant, those that reach it)."""
    s3: bool = False
    """The tests need the S3 server: one is started for the whole target."""
    functions: tuple[str, ...] = ()
    """Only these functions' mutants (mutmut name globs, e.g. "character.stages.distill.x_split*");
    empty: every function of the modules. For stage bodies whose every test runs a model."""
    equivalent: tuple[dict[str, Any], ...] = ()
    """Mutants that cannot change behaviour, left out of the score: each matches a mutant by
    module, function, a line it removes (`from`) and the line it adds (`to`, or a list of
    alternatives), with the `reason` no test can tell it from the original."""
    min_score: float | None = None
    """Each module's bar in percent (None: the default bar, `--min-score`)."""


def load_targets(folder: Path = TARGETS_DIR) -> dict[str, Target]:
    targets = {}
    for path in sorted(folder.glob("*.yaml")):
        data = yaml.safe_load(path.read_text()) or {}
        unknown = set(data) - {"modules", "tests", "s3", "functions", "equivalent", "min_score"}
        if unknown or "modules" not in data or "tests" not in data:
            raise SystemExit(f"{path}: needs modules and tests; unknown keys {sorted(unknown)}")
        targets[path.stem] = Target(tuple(data["modules"]), tuple(data["tests"]), bool(data.get("s3", False)),
                                    tuple(data.get("functions", ())), tuple(data.get("equivalent", ())),
                                    data.get("min_score"))
    return targets


TARGETS = load_targets()


def _toml_value(value: object) -> str:
    # Strings, numbers and lists of them: their JSON form is valid TOML.
    return json.dumps(value)


def _write_config(folder: Path, target: Target) -> None:
    """The target's pyproject.toml: mutmut's settings plus the project's pytest settings."""
    pytest_ini = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    pytest_ini = {k: v for k, v in pytest_ini.items() if k != "testpaths"}
    tests = [t for t in target.tests if (ROOT / t).is_file()]
    mutmut = {
        "source_paths": ["src/character"],
        "only_mutate": [f"src/character/{m}" for m in target.modules],
        "pytest_add_cli_args_test_selection": tests,
        # The SmolLM2 and slow tests take minutes each: mutants are judged on the fast ones.
        # pytest's unraisableexception plugin runs gc.collect() at every teardown, over the whole
        # torch heap the forked mutant inherits: 75% of a fast test's time (0.67 -> 0.11 CPU-s).
        "pytest_add_cli_args": ["-p", "no:cacheprovider", "-p", "no:unraisableexception",
                                "-m", "not smollm2 and not slow"],
        # torch and gRPC are not fork-safe once used: fork mutants from a clean server process.
        "process_isolation": "forkserver",
        "use_git_change_detection": False,
        # A mutant that makes the tests 5x slower (a fit that no longer converges) is caught.
        "timeout_multiplier": 5.0,
        "timeout_constant": 5.0,
        # Log lines decide nothing a test could see; mutating them only adds equivalent mutants.
        "do_not_mutate_patterns": [r"^\s*(log|logger)\.(debug|info|warning)\("],
    }
    lines = ["[tool.mutmut]"] + [f"{k} = {_toml_value(v)}" for k, v in mutmut.items()]
    lines += ["", "[tool.pytest.ini_options]"] + [f"{k} = {_toml_value(v)}" for k, v in pytest_ini.items()]
    text = "\n".join(lines) + "\n"
    config = folder / "pyproject.toml"
    if not config.exists() or config.read_text() != text:
        config.write_text(text)


def _prepare(name: str, target: Target, fresh: bool) -> Path:
    folder = WORK / name
    if fresh and folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for link, dest in (("src", ROOT / "libs"), ("tests", ROOT / "tests")):
        path = folder / link
        if not path.is_symlink():
            path.symlink_to(os.path.relpath(dest, folder))
    _write_config(folder, target)
    return folder


@contextlib.contextmanager
def _s3_server() -> Iterator[dict[str, str]]:
    """One SeaweedFS for a whole target (the tests' own fixture starts one per session, and
    every mutant is a session), handed to the tests through OCT_TEST_S3_*."""
    sys.path.insert(0, str(ROOT))
    from tests.fixtures.s3 import seaweedfs

    with tempfile.TemporaryDirectory(prefix="oct-mutation-s3-") as base, seaweedfs(Path(base)) as server:
        yield {"OCT_TEST_S3_ENDPOINT": server.endpoint, "OCT_TEST_S3_ACCESS_KEY": server.access_key,
               "OCT_TEST_S3_SECRET_KEY": server.secret_key}


def _mutmut(folder: Path, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mutmut", *args], cwd=folder, env=env, text=True,
                          capture_output=True, check=False)


def _changed_lines(diff: str) -> tuple[list[str], list[str]]:
    body = [line for line in diff.splitlines()[2:] if line[:1] in "+-"]
    return [line[1:].strip() for line in body if line[0] == "-"], [line[1:].strip() for line in body if line[0] == "+"]


def _is_equivalent(module: str, function: str, diff: str, equivalents: tuple[dict[str, Any], ...]) -> str | None:
    removed, added = _changed_lines(diff)
    for entry in equivalents:
        alternatives = entry["to"] if isinstance(entry["to"], list) else [entry["to"]]
        if (entry["module"] == module and entry["function"] == function and entry["from"].strip() in removed
                and any(to.strip() in added for to in alternatives)):
            return entry["reason"]
    return None


KILLED = ("killed", "timeout", "caught by type check")


@contextlib.contextmanager
def _inside(folder: Path) -> Iterator[None]:
    """mutmut's functions read their config and files from the working directory."""
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        from mutmut.configuration import reset_config

        reset_config()
        yield
    finally:
        os.chdir(cwd)


def _selected(key: str, target: Target) -> bool:
    return not target.functions or any(fnmatch.fnmatchcase(key, f) for f in target.functions)


def _pending(folder: Path, target: Target, jobs: int) -> list[str]:
    """The mutants to run now: new ones, ones whose function changed, and earlier survivors
    (the tests may have changed since); killed and equivalent ones keep their result."""
    with _inside(folder):
        from mutmut.__main__ import create_mutants
        from mutmut.mutation.data import SourceFileMutationData
        from mutmut.mutation.diff_apply import get_diff_for_mutant
        from mutmut.stats import status_by_exit_code
        from mutmut.utils.file_utils import copy_also_copy_files, copy_src_dir

        Path("mutants").mkdir(exist_ok=True)
        copy_src_dir()
        copy_also_copy_files()
        with contextlib.redirect_stdout(io.StringIO()):  # it prints every file it copies
            create_mutants(jobs)
        names = []
        for module in target.modules:
            path = Path("src/character") / module
            data = SourceFileMutationData(path=path)
            data.load()
            for key, code in data.exit_code_by_key.items():
                if not _selected(key, target) or (code is not None and status_by_exit_code[code] in KILLED):
                    continue
                if code is not None and _is_equivalent(module, _function(key), get_diff_for_mutant(key, path=path),
                                                       target.equivalent):
                    continue
                names.append(key)
        return names


def _function(key: str) -> str:
    """The function (or Class.method) a mutant name belongs to."""
    return key.rsplit("__mutmut_", 1)[0].rpartition(".")[2].removeprefix("x_").removeprefix("xǁ").replace("ǁ", ".")


@dataclass
class Score:
    module: str
    killed: int = 0
    survived: int = 0
    equivalent: int = 0
    other: int = 0  # no tests, suspicious, segfault: counted as not killed
    unchecked: int = 0  # not run yet (an interrupted run): left out of the score, reported

    @property
    def counted(self) -> int:
        return self.killed + self.survived + self.other

    @property
    def percent(self) -> float:
        return 100.0 * self.killed / self.counted if self.counted else 100.0


def _collect(folder: Path, target: Target) -> tuple[list[Score], list[str]]:
    """Scores per module and the survivors' diffs, read from mutmut's own records."""
    with _inside(folder):
        from mutmut.mutation.data import SourceFileMutationData
        from mutmut.mutation.diff_apply import get_diff_for_mutant
        from mutmut.stats import status_by_exit_code

        scores, survivors = [], []
        for module in target.modules:
            path = Path("src/character") / module
            data = SourceFileMutationData(path=path)
            data.load()
            score = Score(module)
            for key, code in sorted(data.exit_code_by_key.items()):
                if not _selected(key, target):
                    continue
                status = status_by_exit_code[code]
                if status in KILLED:
                    score.killed += 1
                    continue
                if status == "not checked":
                    score.unchecked += 1
                    continue
                diff = get_diff_for_mutant(key, path=path)
                if _is_equivalent(module, _function(key), diff, target.equivalent):
                    score.equivalent += 1
                    continue
                if status == "survived":
                    score.survived += 1
                else:
                    score.other += 1
                survivors.append(f"--- {key}: {status}\n" + "\n".join(diff.splitlines()[2:]))
            scores.append(score)
        return scores, survivors


def _print_target(name: str, scores: list[Score], survivors: list[str], seconds: float | None) -> None:
    print(f"\n== {name}" + (f": {seconds:.0f} s" if seconds is not None else " (from the cache)"))
    for survivor in survivors:
        print(survivor)
    for s in scores:
        print(f"  {s.module:32} {s.percent:5.1f}%  killed {s.killed}/{s.counted}"
              f"  (survived {s.survived}, no tests/other {s.other}, equivalent {s.equivalent}"
              + (f", NOT RUN YET {s.unchecked}" if s.unchecked else "") + ")")


def below_bar(scored: list[tuple[Target, Score]], default: float) -> list[str]:
    """Each module scoring under its target's bar (the target's `min_score`, else `default`),
    as "module: score < bar"; a module whose mutants have not all run is below any bar."""
    below = []
    for target, score in scored:
        bar = default if target.min_score is None else target.min_score
        if score.unchecked:
            below.append(f"{score.module}: {score.unchecked} mutants not run yet")
        elif score.percent < bar:
            below.append(f"{score.module}: {score.percent:.1f}% < {bar:g}%")
    return below


def report_target(name: str) -> list[Score]:
    """The scores recorded in a target's cache, without running anything."""
    folder = WORK / name
    if not (folder / "mutants").is_dir():
        print(f"\n== {name}: never run")
        return []
    scores, survivors = _collect(folder, TARGETS[name])
    _print_target(name, scores, survivors, None)
    return scores


def run_target(name: str, fresh: bool, jobs: int) -> tuple[list[Score], float]:
    target = TARGETS[name]
    folder = _prepare(name, target, fresh)
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE", HF_HUB_OFFLINE="1",
               PYTHONUNBUFFERED="1")
    started = time.monotonic()
    tried: set[str] = set()
    result = subprocess.CompletedProcess([], 0, "", "")
    with contextlib.ExitStack() as stack:
        # A second pass: mutmut itself may reset cached results (after a change of this script's
        # settings) once the first has started; those are run then.
        for _ in range(2):
            pending = [n for n in _pending(folder, target, jobs) if n not in tried]
            print(f"[{name}] {len(pending)} mutants to run", flush=True)
            if not pending:
                break
            if target.s3 and "OCT_TEST_S3_ENDPOINT" not in env:
                env.update(stack.enter_context(_s3_server()))
            tried.update(pending)
            result = _mutmut(folder, ["run", "--max-children", str(jobs), *pending], env)
            if result.returncode != 0:
                break
    seconds = time.monotonic() - started
    (folder / "mutmut-run.log").write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        tail = (result.stdout + result.stderr)[-3000:]
        print(f"[{name}] mutmut failed (exit {result.returncode}); log: {folder / 'mutmut-run.log'}\n{tail}")
        return [], seconds
    scores, survivors = _collect(folder, target)
    _print_target(name, scores, survivors, seconds)
    return scores, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("targets", nargs="*", help=f"default: all of {', '.join(TARGETS)}")
    parser.add_argument("--fresh", action="store_true", help="drop the cache and test every mutant again")
    parser.add_argument("--min-score", type=float, default=90.0,
                        help="each module's bar in percent, where its target sets none")
    parser.add_argument("--report", action="store_true", help="print the cached scores, run nothing")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="mutants run at once (default: min(2, CPUs))")
    args = parser.parse_args()
    unknown = set(args.targets) - set(TARGETS)
    if unknown:
        parser.error(f"unknown targets {sorted(unknown)}; targets: {', '.join(TARGETS)}")
    scored: list[tuple[Target, Score]] = []
    total_seconds = 0.0
    failed = []
    for name in args.targets or list(TARGETS):
        if args.report:
            scored += [(TARGETS[name], s) for s in report_target(name)]
            continue
        scores, seconds = run_target(name, args.fresh, args.jobs)
        if not scores:
            failed.append(name)
        scored += [(TARGETS[name], s) for s in scores]
        total_seconds += seconds
    all_scores = [s for _, s in scored]
    killed = sum(s.killed for s in all_scores)
    counted = sum(s.counted for s in all_scores)
    overall = 100.0 * killed / counted if counted else 100.0
    print(f"\nmutation score: {overall:.1f}% ({killed}/{counted} non-equivalent mutants killed, "
          f"{sum(s.equivalent for s in all_scores)} equivalent excluded) in {total_seconds:.0f} s")
    for target, s in scored:
        bar = args.min_score if target.min_score is None else target.min_score
        print(f"  {s.module:32} {s.percent:5.1f}%  ({s.killed}/{s.counted}, bar {bar:g}%)"
              + (f"  {s.unchecked} not run yet" if s.unchecked else ""))
    below = below_bar(scored, args.min_score)
    if below:
        print("below the bar: " + "; ".join(below))
    if failed:
        print(f"not scored (mutmut failed, see their logs): {', '.join(failed)}")
    return 0 if not below and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
