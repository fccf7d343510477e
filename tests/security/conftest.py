"""The attack table: every test marked `@pytest.mark.attack("what was tried")` is an attack
on the platform; its test passes when the attack was refused. At the end of the session a
table lists each attack as refused or got through (`make security` prints it)."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

_results: dict[str, tuple[str, str]] = {}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "attack(description): a security test; passing means the attack was refused")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    marker = item.get_closest_marker("attack")
    if marker is None or (report.when != "call" and not report.failed and not report.skipped):
        return
    label = str(marker.args[0]) if marker.args else item.name
    callspec = getattr(item, "callspec", None)
    if callspec is not None:
        label += f" [{callspec.id}]"
    if report.skipped:
        verdict = "not tried (skipped)"
    elif report.failed:
        verdict = "GOT THROUGH" if report.when == "call" else "not tried (setup failed)"
    else:
        verdict = "refused"
    if item.nodeid not in _results or verdict != "refused":
        _results[item.nodeid] = (label, verdict)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from tests.security.fuzzing import TALLY

    if TALLY.tried:
        terminalreporter.section("parser fuzzer (inputs per parser)")
        for line in TALLY.lines():
            terminalreporter.write_line(line)
    if not _results:
        return
    write = terminalreporter.write_line
    width = max(len(label) for label, _ in _results.values())
    terminalreporter.section("attack table")
    write(f"{'attack'.ljust(width)}  result")
    for label, verdict in sorted(_results.values()):
        write(f"{label.ljust(width)}  {verdict}")
    verdicts = [v for _, v in _results.values()]
    write(f"tried {len(verdicts)}, refused {verdicts.count('refused')}, got through {verdicts.count('GOT THROUGH')}, "
          f"not tried {sum(v.startswith('not tried') for v in verdicts)}")
