"""The Unix socket server: bind, run the I/O loop, respond from worker threads.

The I/O loop (`RequestReader`) accepts connections, pins each peer at accept
and collects its request. Then one of `workers` threads attests the peer,
decides and responds. Attesting reads /proc, and a read of /proc/PID/cmdline
waits for the target's memory-map lock, which a hostile process can hold for
long. Such a request stalls one worker, not the I/O loop. Few workers (default
1 per process) keep the GIL contention between busy threads low.
"""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import queue
import socket
import stat
import threading
import time
from collections.abc import Callable
from typing import Any

from attestor.inspection.inspector import Inspector, Peer
from attestor.server.request_reader import RequestReader, failure, respond
from attestor.server.service import Service

logger = logging.getLogger(__name__)

_Job = tuple[socket.socket, Peer, Any]
# Beyond this many queued requests per worker the I/O loop stops accepting.
_MAX_QUEUED_PER_WORKER = 8


class SocketServer:
    """Serves the attestor protocol on a Unix stream socket."""

    def __init__(
        self,
        *,
        path: str,
        mode: int,
        group: str | None,
        inspector: Inspector,
        service: Service,
        workers: int,
        request_timeout: float,
        max_pending: int = 1024,
        max_pending_per_uid: int = 64,
        activity: Callable[[int, float], None] | None = None,
    ) -> None:
        self.path = path
        self.mode = mode
        self.group = group
        self.inspector = inspector
        self.service = service
        self.workers = workers
        self.request_timeout = request_timeout
        self.max_pending = max_pending
        self.max_pending_per_uid = max_pending_per_uid
        # Called as activity(worker_index, since) with the monotonic time a
        # job started, then with 0.0 when it ends: a supervisor's watchdog
        # reads it to find a worker stuck on one request.
        self.activity = activity
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._listener: socket.socket | None = None
        self._reader: RequestReader | None = None
        self._inode: int | None = None
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self.bind()
        self.serve()

    def bind(self) -> None:
        """Create the socket; a pre-forking parent binds once for all workers."""
        self._listener = _bind(self.path, self.mode, self.group)
        self._inode = os.stat(self.path).st_ino

    def serve(self) -> None:
        """Start the I/O thread and the workers on the bound socket."""
        assert self._listener is not None, "bind() must run before serve()"
        self._reader = RequestReader(
            self._listener,
            inspector=self.inspector,
            deliver=lambda conn, peer, request: self._jobs.put((conn, peer, request)),
            request_timeout=self.request_timeout,
            max_pending=self.max_pending,
            max_pending_per_uid=self.max_pending_per_uid,
            can_accept=self._has_capacity,
        )
        self._threads = [
            threading.Thread(
                target=self._work,
                args=(index,),
                name=f"attestor-worker-{index}",
                daemon=True,
            )
            for index in range(self.workers)
        ]
        self._threads.append(
            threading.Thread(target=self._reader.run, name="attestor-io", daemon=True)
        )
        for thread in self._threads:
            thread.start()
        logger.info(
            "listening on %s (mode %04o, group %s, %d workers)",
            self.path,
            self.mode,
            self.group or "-",
            self.workers,
        )

    def stop(self, *, remove_socket: bool = True) -> None:
        """Stop serving; later calls do nothing.

        A pre-forked worker passes `remove_socket=False`: the socket belongs
        to the parent, which removes it when the last worker has stopped.
        """
        if self._reader is None:
            return
        self._reader.stop()
        for _ in range(self.workers):
            self._jobs.put(None)
        for thread in self._threads:
            thread.join(timeout=10)
        if self._listener is not None:
            self._listener.close()
        if remove_socket:
            self.remove_socket()
        self._reader = None
        logger.info("stopped listening on %s", self.path)

    def remove_socket(self) -> None:
        # Remove the path only if it is still this server's socket, not one a
        # newer daemon bound meanwhile.
        with contextlib.suppress(FileNotFoundError):
            if os.stat(self.path).st_ino == self._inode:
                os.unlink(self.path)

    def _has_capacity(self) -> bool:
        return self._jobs.qsize() < _MAX_QUEUED_PER_WORKER * self.workers

    def _work(self, index: int) -> None:
        while (job := self._jobs.get()) is not None:
            conn, peer, request = job
            reader = self._reader
            if reader is not None and not reader.accepting and self._has_capacity():
                reader.wake()
            if self.activity is not None:
                self.activity(index, time.monotonic())
            try:
                response = self.service.handle(peer, request)
            except Exception:
                # A worker must survive any single request: the traceback
                # goes to the log and the client gets `internal`.
                logger.exception("request from pid %d failed unexpectedly", peer.pid)
                response = failure("internal", "internal error; see the attestor's log")
            finally:
                peer.close()
                if self.activity is not None:
                    self.activity(index, 0.0)
            respond(conn, response)
            conn.close()


def _bind(path: str, mode: int, group: str | None) -> socket.socket:
    """Bind under a temporary name, set mode and group, then rename into place.

    The rename makes the socket appear with its final permissions, never
    with the umask's.
    """
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        os.makedirs(directory, mode=0o755)
        logger.info("created socket directory %s", directory)
    _clear_stale_socket(path)

    temporary = f"{path}.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temporary)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(temporary)
        if group is not None:
            os.chown(temporary, -1, grp.getgrnam(group).gr_gid)
        os.chmod(temporary, mode)
        listener.listen(128)
        os.rename(temporary, path)
    except BaseException:
        listener.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    return listener


def _clear_stale_socket(path: str) -> None:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise OSError(
            f"{path} exists and is not a socket; remove it or change socket_path"
        )
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        logger.info("removing stale socket %s", path)
        os.unlink(path)
        return
    finally:
        probe.close()
    raise OSError(
        f"another process is listening on {path}; stop it or change socket_path"
    )
