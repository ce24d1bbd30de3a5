"""The Unix socket listener: accept, pin the peer, read one request, respond.

One acceptor thread hands connections to a fixed pool of workers through a
bounded queue. A client must send its whole request within `request_timeout`
and at most MAX_REQUEST_BYTES, so slow or oversized clients cost one worker
for that long at most; when the queue is full, new connections get a
`rate_limited` response at once.
"""

from __future__ import annotations

import contextlib
import grp
import json
import logging
import os
import queue
import socket
import stat
import threading
import time
from typing import Any

from attestor.inspector import Inspector
from attestor.process import AttestationError
from attestor.protocol import MAX_REQUEST_BYTES, ErrorCode
from attestor.service import Service

logger = logging.getLogger(__name__)


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
        backlog: int = 256,
    ) -> None:
        self.path = path
        self.mode = mode
        self.group = group
        self.inspector = inspector
        self.service = service
        self.workers = workers
        self.request_timeout = request_timeout
        self._queue: queue.Queue[socket.socket | None] = queue.Queue(maxsize=backlog)
        self._listener: socket.socket | None = None
        self._inode: int | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()

    def start(self) -> None:
        self._listener = _bind(self.path, self.mode, self.group)
        self._inode = os.stat(self.path).st_ino
        self._threads = [
            threading.Thread(
                target=self._work, name=f"attestor-worker-{index}", daemon=True
            )
            for index in range(self.workers)
        ]
        self._threads.append(
            threading.Thread(target=self._accept, name="attestor-accept", daemon=True)
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

    def stop(self) -> None:
        self._stopping.set()
        if self._listener is not None:
            # shutdown(2) wakes the thread blocked in accept(2); close alone does not.
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
        for _ in range(self.workers):
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout=self.request_timeout + 5)
        self._remove_socket()
        logger.info("stopped listening on %s", self.path)

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError as err:
                if not self._stopping.is_set():
                    logger.error("accept on %s failed: %s", self.path, err)
                    time.sleep(0.1)
                continue
            try:
                self._queue.put_nowait(conn)
            except queue.Full:
                logger.warning(
                    "all %d workers busy and %d connections queued; "
                    "rejecting a connection",
                    self.workers,
                    self._queue.maxsize,
                )
                _respond(
                    conn,
                    _failure(
                        ErrorCode.RATE_LIMITED,
                        "the attestor is busy; retry in a moment",
                    ),
                )

    def _work(self) -> None:
        while (conn := self._queue.get()) is not None:
            try:
                self._serve(conn)
            except Exception:
                # A worker must survive any single request; the traceback
                # goes to the log and the client gets `internal`.
                logger.exception("request failed with an unexpected error")
                _respond(
                    conn,
                    _failure(
                        ErrorCode.INTERNAL, "internal error; see the attestor's log"
                    ),
                )
            finally:
                conn.close()

    def _serve(self, conn: socket.socket) -> None:
        try:
            peer = self.inspector.pin(conn)
        except AttestationError as err:
            _log_early_rejection(err)
            _respond(conn, _failure(err.code, str(err)))
            return
        try:
            request = self._read_request(conn)
        except AttestationError as err:
            _log_early_rejection(err, pid=peer.pid, uid=peer.uid)
            response = _failure(err.code, str(err))
        else:
            response = self.service.handle(peer, request)
        finally:
            peer.close()
        _respond(conn, response)

    def _read_request(self, conn: socket.socket) -> Any:
        """Return the parsed request; raise AttestationError (`bad_request`)."""
        deadline = time.monotonic() + self.request_timeout
        buffer = b""
        while not buffer.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _bad_request(
                    f"no complete request within {self.request_timeout:g} s"
                )
            conn.settimeout(remaining)
            try:
                chunk = conn.recv(MAX_REQUEST_BYTES + 1 - len(buffer))
            except TimeoutError:
                continue
            if not chunk:
                break
            buffer += chunk
            if len(buffer) > MAX_REQUEST_BYTES:
                raise _bad_request(f"request exceeds {MAX_REQUEST_BYTES} bytes")
        try:
            return json.loads(buffer)
        except ValueError as err:
            raise _bad_request(
                "the request is not one JSON object ended by a newline"
            ) from err

    def _remove_socket(self) -> None:
        # Remove the path only if it is still this server's socket, not one a
        # newer daemon bound meanwhile.
        with contextlib.suppress(FileNotFoundError):
            if os.stat(self.path).st_ino == self._inode:
                os.unlink(self.path)


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


def _respond(conn: socket.socket, response: dict[str, Any]) -> None:
    try:
        conn.settimeout(1.0)
        conn.sendall(json.dumps(response, separators=(",", ":")).encode() + b"\n")
    except OSError as err:
        # The client left: for a token, nobody can use it any more.
        logger.info("could not send the response: %s", err)


def _bad_request(message: str) -> AttestationError:
    return AttestationError(ErrorCode.BAD_REQUEST, message)


def _log_early_rejection(err: AttestationError, **ids: int) -> None:
    fields = {"decision": "rejected", "code": err.code, "reason": str(err), **ids}
    logger.warning("request rejected", extra={"fields": fields})


def _failure(code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "code": code, "error": message}
