"""What the parser fuzzer measures per input: its outcome (accepted, refused with InvalidInput, or
anything else: a bug) and its cost (CPU seconds, peak traced memory) against the budget every
external input must keep to. The tally is printed at the end of the session (tests/security/conftest.py).

CPU is measured in a run without tracemalloc (it slows allocation-heavy code several fold),
memory in a second run with it. hypothesis generates the inputs (atheris, a coverage-guided
fuzzer, does not install offline here). FUZZ_EXAMPLES sets how many each test tries: a few
dozen in the normal suite, thousands in `make fuzz`.
"""

from __future__ import annotations

import os
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from character.errors import CharacterError

CPU_BUDGET_S = 1.0
MEMORY_BUDGET_BYTES = 100 * 1024 * 1024
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "10"))
"""Examples per fuzz test (hypothesis `max_examples`)."""


@dataclass
class Tally:
    """Counts over the session, by parser."""

    tried: dict[str, int] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)
    over_budget: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"{'parser'.ljust(22)} tried  refused  accepted"]
        for name in sorted(self.tried):
            tried, refused = self.tried[name], self.refused.get(name, 0)
            out.append(f"{name.ljust(22)} {tried:5d}  {refused:7d}  {tried - refused:8d}")
        out.append(f"budget violations: {len(self.over_budget)}; unexpected exceptions: {len(self.unexpected)}")
        out += [f"  over budget: {v}" for v in self.over_budget[:10]]
        out += [f"  unexpected: {v}" for v in self.unexpected[:10]]
        return out


TALLY = Tally()


@dataclass(frozen=True)
class Outcome:
    refused: CharacterError | None
    cpu_s: float
    peak_bytes: int


def _run(parse: Callable[[], Any]) -> CharacterError | None:
    try:
        parse()
    except CharacterError as err:  # InvalidInput, or NotFound for a file that names a missing one
        return err
    return None


def _timed(parse: Callable[[], Any]) -> tuple[CharacterError | None, float]:
    """What `parse` refused with, and the CPU time this thread spent on it (other threads of
    the test process, such as servers of other tests, are not the input's work)."""
    started = time.thread_time()
    refused = _run(parse)
    return refused, time.thread_time() - started


def measure(parser: str, parse: Callable[[], Any], sample: str) -> Outcome:
    """Run `parse` (for CPU, again if it looked over budget, then for memory), count it under
    `parser`, and return what happened.
    Any exception but a CharacterError propagates (after being counted as unexpected)."""
    TALLY.tried[parser] = TALLY.tried.get(parser, 0) + 1
    try:
        refused, cpu = _timed(parse)
        if cpu > CPU_BUDGET_S:  # a pause of the machine's (GC, another process) is not the input's work
            cpu = min(cpu, _timed(parse)[1])
        tracemalloc.start()
        try:
            _run(parse)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    except Exception as err:
        TALLY.unexpected.append(f"{parser}: {type(err).__name__}: {err!s:.100} on {sample[:60]!r}")
        raise
    if refused is not None:
        TALLY.refused[parser] = TALLY.refused.get(parser, 0) + 1
    if cpu > CPU_BUDGET_S or peak > MEMORY_BUDGET_BYTES:
        TALLY.over_budget.append(f"{parser}: {cpu:.2f} s, {peak / 2**20:.0f} MB on {sample[:60]!r}")
    return Outcome(refused, cpu, peak)


def within_budget(outcome: Outcome) -> bool:
    return outcome.cpu_s <= CPU_BUDGET_S and outcome.peak_bytes <= MEMORY_BUDGET_BYTES
