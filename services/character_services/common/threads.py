"""Handler deadlines: a handler stuck in a loop cannot be killed (a Python thread cannot be), so
its caller is answered at the deadline (`within`), and the handler threads are daemons
(`character.daemon_pool.DaemonPool`) so that the process exits when its servers stopped.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent import futures
from typing import Any

from character_services.common.errors import HandlerTimeout

NO_DEADLINE_S = 7 * 24 * 3600.0
"""gRPC reports a call without a deadline as billions of seconds remaining: more than this is none."""


def handler_deadline(caller_remaining: float | None, cap: float | None) -> float | None:
    """Seconds a handler may run: the caller's remaining deadline, capped by the service's
    (None: neither has one)."""
    limits = [s for s in (caller_remaining, cap) if s is not None and s < NO_DEADLINE_S]
    return min(limits) if limits else None


def within(pool: futures.Executor, seconds: float | None, call: Callable[[], Any], what: str) -> Any:
    """`call()` on a pool thread, its result if it finishes within `seconds` (None: waits for it);
    else HandlerTimeout, and the call is left to finish on its own."""
    if seconds is None:
        return call()
    future = pool.submit(call)
    try:
        return future.result(timeout=seconds)
    except futures.TimeoutError:
        raise HandlerTimeout(f"{what} did not finish within its deadline of {seconds:.1f} s") from None
