"""A thread pool that runs calls with as few hand-offs as possible.

`concurrent.futures.ThreadPoolExecutor` builds a Future per task and checks
its thread count under a lock; here a task is a bare callable on a
`queue.SimpleQueue`. Each queued task has a worker reserved for it: an idle
one, or a new one up to the limit. So a call that waits for another call
(Setup waits for the broker stream) never waits behind it in the queue,
unless the limit is reached.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

logger = logging.getLogger(__name__)


class WorkerPool:
    """Run callables on up to `max_workers` daemon threads."""

    def __init__(self, max_workers: int, name: str) -> None:
        self._max_workers = max_workers
        self._name = name
        self._tasks: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0  # workers waiting for a task that no one reserved yet
        self._backlog = 0  # queued tasks that wait for a busy worker to finish
        self._threads = 0

    def submit(self, task: Callable[[], None], *, beyond_limit: bool = False) -> None:
        """Run `task` on a worker; `beyond_limit` starts one past the limit if needed.

        A connection's reading goes beyond the limit, so it does not wait
        behind calls. Calls that wait for frames (flow-control window, the
        broker stream) would otherwise wait forever once they hold every
        worker.
        """
        with self._lock:
            if self._idle > 0:
                self._idle -= 1
            elif beyond_limit or self._threads < self._max_workers:
                self._start_thread(task)
                return
            else:
                self._backlog += 1
        self._tasks.put(task)

    def stop(self) -> None:
        """Let idle workers exit; a worker stuck in a call stays (it is a daemon)."""
        with self._lock:
            count = self._threads
        for _ in range(count):
            self._tasks.put(None)

    def _start_thread(self, first: Callable[[], None]) -> None:
        index = self._threads
        self._threads += 1
        threading.Thread(
            target=self._work, args=(first,), name=f"{self._name}_{index}", daemon=True
        ).start()

    def _work(self, first: Callable[[], None]) -> None:
        task: Callable[[], None] | None = first
        while task is not None:
            try:
                task()
            except Exception:
                logger.exception("a worker task failed")
            with self._lock:
                if self._backlog:
                    self._backlog -= 1  # this worker takes a queued task
                else:
                    self._idle += 1
            task = self._tasks.get()
