"""DaemonPool: bounded, reuses idle threads, cancels queued work on request, and never holds a
process past its stop."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from concurrent import futures

import pytest
from character.daemon_pool import DaemonPool


def test_a_stuck_call_does_not_hold_the_process_at_exit():
    script = textwrap.dedent("""
        import threading
        from character.daemon_pool import DaemonPool
        pool = DaemonPool(2, "stuck")
        started = threading.Event()
        pool.submit(lambda: (started.set(), threading.Event().wait()))
        started.wait()
        pool.shutdown(wait=False)
        print("stopped", flush=True)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "stopped"


def test_results_and_errors_reach_the_caller():
    pool = DaemonPool(1, "t")
    assert pool.submit(lambda a, b=0: a + b, 2, b=3).result(timeout=10) == 5
    with pytest.raises(KeyError, match="missing"):
        pool.submit(lambda: {}["missing"]).result(timeout=10)
    pool.shutdown()


def test_never_more_than_max_workers_run_at_once():
    pool = DaemonPool(2, "bounded")
    lock, running, peak = threading.Lock(), [0], [0]
    release = threading.Event()

    def work() -> None:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        release.wait(10)
        with lock:
            running[0] -= 1

    jobs = [pool.submit(work) for _ in range(6)]
    time.sleep(0.3)  # time for more threads to start, were the pool not bounded
    assert peak[0] == 2
    release.set()
    futures.wait(jobs, timeout=10)
    assert all(job.done() for job in jobs)
    pool.shutdown()


def test_an_idle_thread_is_reused_rather_than_a_new_one_started():
    pool = DaemonPool(4, "reuse")
    names = []
    for _ in range(3):
        names.append(pool.submit(lambda: threading.current_thread().name).result(timeout=10))
        time.sleep(0.05)  # the thread is back to waiting
    assert set(names) == {"reuse_0"}
    assert all(t.daemon for t in threading.enumerate() if t.name.startswith("reuse_"))
    pool.shutdown()


def test_shutdown_cancels_queued_work_when_asked_and_refuses_new_work():
    pool = DaemonPool(1, "cancel")
    release = threading.Event()
    running = pool.submit(release.wait, 10)
    queued = pool.submit(lambda: "ran")
    time.sleep(0.1)
    pool.shutdown(wait=False, cancel_futures=True)
    assert queued.cancelled()
    release.set()
    assert running.result(timeout=10) is True
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(lambda: None)


def test_shutdown_without_cancel_lets_queued_work_finish():
    pool = DaemonPool(1, "drain")
    jobs = [pool.submit(time.sleep, 0.05) for _ in range(3)]
    pool.shutdown(wait=True)
    assert all(job.done() and not job.cancelled() for job in jobs)


def test_a_pool_without_workers_is_refused():
    with pytest.raises(ValueError, match="at least 1, got 0"):
        DaemonPool(0, "none")
