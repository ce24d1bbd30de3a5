"""The worker pool that runs the plugin's gRPC calls."""

from __future__ import annotations

import functools
import threading

from plugin.bridge.workers import WorkerPool


def test_task_waiting_for_later_task_completes() -> None:
    pool = WorkerPool(8, "test")
    announced = threading.Event()
    finished = threading.Event()

    def setup() -> None:  # waits for a task submitted after it, as Setup does
        if announced.wait(5):
            finished.set()

    pool.submit(setup)
    pool.submit(announced.set)
    assert finished.wait(5)
    pool.stop()


def test_tasks_beyond_limit_wait_then_run() -> None:
    pool = WorkerPool(2, "test")
    release = threading.Event()
    done: list[int] = []
    lock = threading.Lock()

    def task(number: int) -> None:
        release.wait(5)
        with lock:
            done.append(number)

    for number in range(10):
        pool.submit(functools.partial(task, number))
    assert pool._threads == 2  # the other eight wait in the queue
    release.set()
    for _ in range(50):
        with lock:
            if len(done) == 10:
                break
        threading.Event().wait(0.1)
    assert sorted(done) == list(range(10))
    pool.stop()


def test_beyond_limit_runs_while_all_busy() -> None:
    pool = WorkerPool(2, "test")
    release = threading.Event()

    def block() -> None:
        release.wait(5)

    for _ in range(2):
        pool.submit(block)
    ran = threading.Event()

    pool.submit(ran.set, beyond_limit=True)

    assert ran.wait(2)
    release.set()
    pool.stop()
