"""Progress events: one shape for terminal bars, gRPC streams and logs.

Long work takes a `Progress` callback and calls it as it goes. The CLI renders
events as rich progress bars; the services forward them on `WatchTask` streams.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class ProgressEvent:
    """One step of a long task."""

    task: str
    """What is running, e.g. "distill: teacher answers"."""
    done: int
    """Units finished so far."""
    total: int | None
    """Units in all, when known."""
    message: str = ""
    """A short free-text status (loss, counts, ...)."""


Progress = Callable[[ProgressEvent], None]


def silent(_event: ProgressEvent) -> None:
    """A `Progress` that ignores every event."""
