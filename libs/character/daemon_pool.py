"""A thread pool whose threads never hold a process past its stop.

`concurrent.futures.ThreadPoolExecutor` joins its (non-daemon) threads when the interpreter exits,
so one call stuck in a loop (an RPC handler, a generation on the persona server) kept the process
alive after SIGTERM for as long as it was stuck. A Python thread cannot be killed; what a server can
do is stop waiting for it and exit, leaving the stuck thread to die with the process.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent import futures
from typing import Any


class DaemonPool(futures.Executor):
    """A bounded thread pool of daemon threads, started as work arrives (like ThreadPoolExecutor)."""

    def __init__(self, max_workers: int, name: str):
        if max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, got {max_workers}")
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
        """Take no more work; with `cancel_futures`, cancel what has not started (its waiters
        see CancelledError); with `wait`, join the threads once they finish what they run."""
        with self._lock:
            self._closed = True
            threads = list(self._threads)
            if cancel_futures:
                self._cancel_queued()
        for _ in threads:
            self._work.put(None)
        if wait:
            for thread in threads:
                thread.join()

    def _cancel_queued(self) -> None:
        while True:
            try:
                item = self._work.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                item[0].cancel()
