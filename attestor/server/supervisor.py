"""`processes = N`: one parent supervising N socket workers and a JWKS server.

Python threads that each make many short system calls mostly hand the GIL to
each other, so one process tops out near one core. With `processes` above 1
the parent binds the socket and the JWKS port, then forks N socket workers
and one JWKS process. The parent starts no thread itself, so every fork,
including a restart, copies a single-threaded process. The parent restarts a child that
dies, passes SIGHUP on to the children, and on SIGTERM stops them and removes
the socket. Children get SIGTERM if the parent dies (PR_SET_PDEATHSIG).

A watchdog kills a socket worker that has spent more than `stall_timeout`
seconds on one request, and the parent restarts it. Reading /proc/PID/cmdline
waits for the target's memory-map lock, which a hostile process can hold
(for example with a page fault on a FUSE file it serves slowly); the wait is
killable, so SIGKILL ends it. Workers report the start of each request in a
shared anonymous mapping the parent reads.
"""

from __future__ import annotations

import ctypes
import logging
import mmap
import os
import signal
import struct
import time

from attestor.server.daemon import Daemon, block_control_signals, wait_for_signal

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_RESTART_DELAY_SECONDS = 1.0
_STOP_TIMEOUT_SECONDS = 15.0
_SLOT = struct.Struct("d")


class Supervisor:
    """Forks and watches the worker processes of one Daemon."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.workers = daemon.config.workers
        # pid -> (parts, index of the socket worker process, or -1)
        self.children: dict[int, tuple[tuple[str, ...], int]] = {}
        # One float per worker thread: when its current request started, or 0.
        slots = daemon.config.processes * self.workers
        self._busy_since = mmap.mmap(-1, _SLOT.size * slots)
        self._stopping = False

    def serve_forever(self) -> None:
        """Bind, fork the children and supervise them until SIGTERM or SIGINT."""
        self.daemon.socket_server.bind()
        block_control_signals()
        try:
            self._spawn(("jwks",), -1)
            for index in range(self.daemon.config.processes):
                self._spawn(("socket",), index)
            logger.info(
                "supervising %d socket workers and a JWKS server at %s",
                self.daemon.config.processes,
                self.daemon.jwks.url,
            )
            self._supervise()
        finally:
            self._stopping = True
            self._stop_children()
            self.daemon.socket_server.remove_socket()
            logger.info("agent-attestor supervisor stopped")

    def _supervise(self) -> None:
        while True:
            signum = wait_for_signal(timeout=0.5)
            if signum == signal.SIGHUP:
                self._pass_on(signal.SIGHUP)
            elif signum is not None:
                logger.info("received signal %d, stopping the workers", signum)
                return
            self._kill_stalled()
            self._reap_and_restart()

    def _spawn(self, parts: tuple[str, ...], index: int) -> None:
        for thread in range(self.workers if index >= 0 else 0):
            _SLOT.pack_into(self._busy_since, self._offset(index, thread), 0.0)
        pid = os.fork()
        if pid:
            self.children[pid] = (parts, index)
            return
        code = 1
        try:
            code = self._run_child(parts, index)
        except BaseException:
            logger.exception("%s worker %d failed", "/".join(parts), os.getpid())
        finally:
            os._exit(code)

    def _run_child(self, parts: tuple[str, ...], index: int) -> int:
        parent = os.getppid()
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:
            return 1  # the parent died before the death signal was armed

        daemon = self.daemon
        # A restarted child was forked from the parent's config, which may be
        # older than its siblings'.
        daemon.reload()
        daemon.after_reload = lambda: os.kill(parent, signal.SIGHUP)
        daemon.socket_server.activity = lambda thread, since: _SLOT.pack_into(
            self._busy_since, self._offset(index, thread), since
        )
        daemon.serve_forever(parts, remove_socket=False)
        return 0

    def _kill_stalled(self) -> None:
        now = time.monotonic()
        limit = self.daemon.config.stall_timeout
        for pid, (_, index) in list(self.children.items()):
            for thread in range(self.workers if index >= 0 else 0):
                (since,) = _SLOT.unpack_from(
                    self._busy_since, self._offset(index, thread)
                )
                if since and now - since > limit:
                    logger.error(
                        "socket worker %d spent %.0f s on one request, over "
                        "stall_timeout %g s; killing it",
                        pid,
                        now - since,
                        limit,
                    )
                    os.kill(pid, signal.SIGKILL)
                    break

    def _reap_and_restart(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            parts, index = self.children.pop(pid)
            if self._stopping:
                continue
            logger.error(
                "%s worker %d exited (%s); restarting it",
                "/".join(parts),
                pid,
                _describe(status),
            )
            time.sleep(_RESTART_DELAY_SECONDS)
            self._spawn(parts, index)

    def _offset(self, index: int, thread: int) -> int:
        return _SLOT.size * (index * self.workers + thread)

    def _pass_on(self, signum: int) -> None:
        for pid in list(self.children):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                continue

    def _stop_children(self) -> None:
        self._pass_on(signal.SIGTERM)
        deadline = time.monotonic() + _STOP_TIMEOUT_SECONDS
        while self.children and time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid:
                self.children.pop(pid, None)
            else:
                time.sleep(0.05)
        for pid in self.children:
            logger.error(
                "worker %d did not stop within %g s; killing it",
                pid,
                _STOP_TIMEOUT_SECONDS,
            )
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        self.children.clear()


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"
