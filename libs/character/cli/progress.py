"""Rich progress bars fed by `ProgressEvent`s."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from character.progress import Progress as ProgressFn
from character.progress import ProgressEvent


@contextmanager
def bars() -> Iterator[ProgressFn]:
    """A `Progress` callback drawing one bar per task name while the block runs."""
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[message]}"),
        transient=False,
    ) as view:
        tasks: dict[str, TaskID] = {}

        def update(event: ProgressEvent) -> None:
            if event.task not in tasks:
                tasks[event.task] = view.add_task(event.task, total=event.total, message="")
            view.update(tasks[event.task], completed=event.done, total=event.total, message=event.message)

        yield update
