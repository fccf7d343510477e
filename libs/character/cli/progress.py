"""Progress for people, on stderr (results go to stdout): rich bars on a terminal; on a pipe or
a log (CI, `kubectl logs`), one plain line per task when it starts, at every tenth of the way,
and when it ends."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from character.progress import Progress as ProgressFn
from character.progress import ProgressEvent


@contextmanager
def bars() -> Iterator[ProgressFn]:
    """A `Progress` callback drawing one bar per task name while the block runs (or logging
    lines, when stderr is not a terminal)."""
    console = Console(stderr=True)
    if not console.is_terminal:
        yield LineProgress()
        return
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[message]}"),
        console=console,
        transient=False,
    ) as view:
        tasks: dict[str, TaskID] = {}

        def update(event: ProgressEvent) -> None:
            if event.task not in tasks:
                tasks[event.task] = view.add_task(event.task, total=event.total, message="")
            view.update(tasks[event.task], completed=event.done, total=event.total, message=event.message)

        yield update


class LineProgress:
    """Prints `task done/total (elapsed)` lines to stderr, at most eleven per task run."""

    def __init__(self) -> None:
        self._started: dict[str, float] = {}
        self._tenth: dict[str, int] = {}

    def __call__(self, event: ProgressEvent) -> None:
        now = time.monotonic()
        if event.done == 0 or event.task not in self._started:
            self._started[event.task], self._tenth[event.task] = now, -1
        tenth = 10 * event.done // event.total if event.total else 10
        if tenth == self._tenth[event.task]:
            return
        self._tenth[event.task] = tenth
        total = f"/{event.total}" if event.total else ""
        message = f"  {event.message}" if event.message else ""
        elapsed = now - self._started[event.task]
        print(f"{event.task}: {event.done}{total} ({elapsed:.0f} s){message}", file=sys.stderr, flush=True)
