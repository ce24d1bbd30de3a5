"""The socket server's I/O loop: accept, pin each peer, collect its request.

One thread multiplexes every connection with selectors, so a client that
sends its request slowly, or never, costs a table entry instead of a thread.
Complete requests go to the worker threads. A connection that has not sent a
complete request within `request_timeout`, or sent more than
MAX_REQUEST_BYTES, gets a `bad_request` response and is closed.

Few busy threads matter here: Python threads that all make many short system
calls spend much of their time handing the GIL to each other.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import selectors
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from attestor.inspection.inspector import Inspector, Peer
from attestor.inspection.process import AttestationError
from attestor.protocol import MAX_REQUEST_BYTES, ErrorCode
from attestor.server.logs import RepeatFilter

logger = logging.getLogger(__name__)


@dataclass
class Pending:
    """A pinned connection whose request is still arriving."""

    conn: socket.socket
    peer: Peer
    deadline: float
    buffer: bytearray = field(default_factory=bytearray)


Deliver = Callable[[socket.socket, Peer, Any], None]


class RequestReader:
    """Runs the I/O loop until `stop`; hands complete requests to `deliver`.

    `deliver` receives the connection, the pinned peer (the receiver closes
    both) and the parsed request. While `can_accept` returns False (the
    workers are behind), the loop stops accepting: connections wait in the
    kernel's backlog, where a sibling process may accept them.
    """

    def __init__(
        self,
        listener: socket.socket,
        *,
        inspector: Inspector,
        deliver: Deliver,
        request_timeout: float,
        max_pending: int,
        max_pending_per_uid: int,
        can_accept: Callable[[], bool] = lambda: True,
    ) -> None:
        self.listener = listener
        self.can_accept = can_accept
        self._accepting = True
        self.inspector = inspector
        self.deliver = deliver
        self.request_timeout = request_timeout
        self.max_pending = max_pending
        self.max_pending_per_uid = max_pending_per_uid
        self._selector = selectors.DefaultSelector()
        self._pending: dict[int, Pending] = {}
        self._per_uid: Counter[int] = Counter()
        self._wake_read, self._wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._running = True
        self._quiet = RepeatFilter()

    def run(self) -> None:
        self.listener.setblocking(False)
        self._selector.register(self.listener, selectors.EVENT_READ, None)
        self._selector.register(self._wake_read, selectors.EVENT_READ, None)
        while self._running:
            self._throttle()
            for key, _ in self._selector.select(self._next_timeout()):
                if key.fileobj is self.listener:
                    self._accept_all()
                elif key.fileobj == self._wake_read:
                    os.read(self._wake_read, 64)
                else:
                    self._receive(self._pending[key.fd])
            self._expire(time.monotonic())
        self._close_all()

    def _throttle(self) -> None:
        # The listener stays readable while connections wait, so it must
        # leave the selector, or select() would return at once forever.
        accepting = self.can_accept()
        if accepting and not self._accepting:
            self._selector.register(self.listener, selectors.EVENT_READ, None)
        elif not accepting and self._accepting:
            self._selector.unregister(self.listener)
        self._accepting = accepting

    @property
    def accepting(self) -> bool:
        return self._accepting

    def wake(self) -> None:
        """Make the loop re-check `can_accept` now instead of at its next poll."""
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_write, b"x")

    def stop(self) -> None:
        self._running = False
        self.wake()

    def _accept_all(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:
                logger.error("accept failed: %s", err)
                return
            self._admit(conn)

    def _admit(self, conn: socket.socket) -> None:
        try:
            peer = self.inspector.pin(conn)
        except AttestationError as err:
            log_rejection(err)
            respond(conn, failure(err.code, str(err)))
            conn.close()
            return

        busy = len(self._pending) >= self.max_pending
        if busy or self._per_uid[peer.uid] >= self.max_pending_per_uid:
            self._reject_busy(conn, peer)
            return

        conn.setblocking(False)
        pending = Pending(conn, peer, time.monotonic() + self.request_timeout)
        self._pending[conn.fileno()] = pending
        self._per_uid[peer.uid] += 1
        self._selector.register(conn, selectors.EVENT_READ, None)

    def _reject_busy(self, conn: socket.socket, peer: Peer) -> None:
        if self._quiet.should_log(peer.uid):
            logger.warning(
                "too many pending connections (uid %d has %d, all %d); "
                "rejecting pid %d and, for a second, further ones of this uid "
                "without logging",
                peer.uid,
                self._per_uid[peer.uid],
                len(self._pending),
                peer.pid,
            )
        respond(
            conn,
            failure(
                ErrorCode.RATE_LIMITED, "too many pending requests; retry in a moment"
            ),
        )
        peer.close()
        conn.close()

    def _receive(self, pending: Pending) -> None:
        try:
            chunk = pending.conn.recv(MAX_REQUEST_BYTES + 1 - len(pending.buffer))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        pending.buffer += chunk

        if len(pending.buffer) > MAX_REQUEST_BYTES:
            self._fail(pending, f"request exceeds {MAX_REQUEST_BYTES} bytes")
        elif chunk and not pending.buffer.endswith(b"\n"):
            return
        else:
            self._complete(pending)

    def _complete(self, pending: Pending) -> None:
        self._forget(pending)
        try:
            request = json.loads(pending.buffer)
        except ValueError:
            self._reply_and_close(
                pending,
                failure(
                    ErrorCode.BAD_REQUEST,
                    "the request is not one JSON object ended by a newline",
                ),
            )
            return
        # The worker writes the response with a blocking send and a timeout.
        pending.conn.setblocking(True)
        self.deliver(pending.conn, pending.peer, request)

    def _expire(self, now: float) -> None:
        for pending in [p for p in self._pending.values() if p.deadline <= now]:
            self._fail(
                pending, f"no complete request within {self.request_timeout:g} s"
            )

    def _fail(self, pending: Pending, message: str) -> None:
        self._forget(pending)
        err = AttestationError(ErrorCode.BAD_REQUEST, message)
        log_rejection(err, pid=pending.peer.pid, uid=pending.peer.uid)
        self._reply_and_close(pending, failure(err.code, message))

    def _reply_and_close(self, pending: Pending, response: dict[str, Any]) -> None:
        respond(pending.conn, response)
        pending.conn.close()
        pending.peer.close()

    def _forget(self, pending: Pending) -> None:
        self._selector.unregister(pending.conn)
        del self._pending[pending.conn.fileno()]
        self._per_uid[pending.peer.uid] -= 1
        if not self._per_uid[pending.peer.uid]:
            del self._per_uid[pending.peer.uid]

    def _next_timeout(self) -> float | None:
        # While throttled, the workers call wake() as they catch up; the poll
        # every 50 ms is a fallback.
        recheck = None if self._accepting else 0.05
        if not self._pending:
            return recheck
        earliest = min(pending.deadline for pending in self._pending.values())
        remaining = max(0.0, earliest - time.monotonic())
        return remaining if recheck is None else min(remaining, recheck)

    def _close_all(self) -> None:
        for pending in list(self._pending.values()):
            self._forget(pending)
            pending.conn.close()
            pending.peer.close()
        self._selector.close()
        os.close(self._wake_read)
        os.close(self._wake_write)


def respond(conn: socket.socket, response: dict[str, Any]) -> None:
    """Send one response line; a client that left is logged, not raised."""
    try:
        # A response is a few KiB and fits the socket buffer; the timeout only
        # bounds a client that stopped reading with a full buffer.
        conn.settimeout(1.0)
        conn.sendall(json.dumps(response, separators=(",", ":")).encode() + b"\n")
    except OSError as err:
        # A token in an unsent response is lost with the connection.
        logger.info("could not send the response: %s", err)


def failure(code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "code": code, "error": message}


def log_rejection(err: AttestationError, **ids: int) -> None:
    fields = {"decision": "rejected", "code": err.code, "reason": str(err), **ids}
    logger.warning("request rejected", extra={"fields": fields})
