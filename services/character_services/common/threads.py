"""Threads for RPC handlers that cannot hold a process past its stop, and handler deadlines.

`concurrent.futures.ThreadPoolExecutor` joins its (non-daemon) threads when the interpreter exits,
so one handler stuck in a loop kept `oct up` alive after SIGTERM for as long as it was stuck. A
Python thread cannot be killed; what a service can do is stop waiting for it: the handler's
caller is answered at the deadline (`within`), and the process exits when its servers stopped
(`DaemonPool`), leaving stuck threads to die with it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent import futures
from typing import Any

from character_services.common.errors import HandlerTimeout


class DaemonPool(futures.Executor):
    """A bounded thread pool of daemon threads, started as work arrives (like ThreadPoolExecutor)."""

    def __init__(self, max_workers: int, name: str):
        self._max_workers = max_workers
        self._name = name
        self._work: queue.SimpleQueue[tuple[futures.Future[Any], Callable[[], Any]] | None] = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._closed = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> futures.Future[Any]:
        future: futures.Future[Any] = futures.Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot schedule new work after shutdown")
            self._work.put((future, lambda: fn(*args, **kwargs)))
            if not self._idle.acquire(blocking=False) and len(self._threads) < self._max_workers:
                thread = threading.Thread(target=self._run, name=f"{self._name}_{len(self._threads)}", daemon=True)
                thread.start()
                self._threads.append(thread)
        return future

    def _run(self) -> None:
        while (item := self._work.get()) is not None:
            future, call = item
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(call())
                except BaseException as err:  # handed to whoever waits on the future
                    future.set_exception(err)
            self._idle.release()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._closed = True
            threads = list(self._threads)
        for _ in threads:
            self._work.put(None)
        if wait:
            for thread in threads:
                thread.join()


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
