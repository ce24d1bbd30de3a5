"""Byte transports under the plugin's HTTP/2 server: TLS (Python ssl) or plain.

The TLS transport drives OpenSSL through memory buffers, so one connection
can be read by its reader thread while worker threads write responses.
Every OpenSSL call happens under one lock. Encrypted bytes are sent while
that lock is held, so records leave in the order they were made.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from typing import Protocol

HANDSHAKE_TIMEOUT = 10.0
_READ_SIZE = 256 * 1024


class TransportClosedError(Exception):
    """The connection is closed; nothing more can be sent or received."""


class Transport(Protocol):
    """The socket operations a connection uses.

    Only the connection's reader thread calls `recv` and `close`. Any
    thread may call `send` and `shutdown`.
    """

    def recv(self) -> bytes: ...

    def send(self, data: bytes) -> None: ...

    def shutdown(self) -> None: ...

    def close(self) -> None: ...


class PlainTransport:
    """A unix socket without TLS, for a Vault that passes no client certificate."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._send_lock = threading.Lock()

    def recv(self) -> bytes:
        """Return the next bytes from the peer; b"" at the end of the stream."""
        return self.sock.recv(_READ_SIZE)

    def send(self, data: bytes) -> None:
        with self._send_lock:
            self.sock.sendall(data)

    def shutdown(self) -> None:
        _shutdown(self.sock)

    def close(self) -> None:
        self.sock.close()


class TlsTransport:
    """A unix socket whose bytes go through an `ssl.SSLObject`.

    The server side by default; the client side when `server_hostname` is
    given.
    """

    def __init__(
        self,
        sock: socket.socket,
        context: ssl.SSLContext,
        server_hostname: str | None = None,
    ) -> None:
        self.sock = sock
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(
            self._incoming,
            self._outgoing,
            server_side=server_hostname is None,
            server_hostname=server_hostname,
        )
        self._lock = threading.Lock()

    def handshake(self) -> None:
        """Complete the handshake; the contexts trust only Vault's certificate.

        A peer that has not finished within HANDSHAKE_TIMEOUT seconds is
        dropped, however slowly it keeps sending.
        """
        deadline = time.monotonic() + HANDSHAKE_TIMEOUT
        try:
            while True:
                try:
                    self._tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    self._flush()
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError("TLS handshake timed out") from None
                    self.sock.settimeout(left)
                    self._feed(self.sock.recv(_READ_SIZE))
            self._flush()
        finally:
            self.sock.settimeout(None)

    def recv(self) -> bytes:
        """Return the next decrypted bytes; b"" at the end of the stream."""
        while True:
            raw = self.sock.recv(_READ_SIZE)
            if not raw:
                return b""
            with self._lock:
                self._incoming.write(raw)
                plain = self._read_plain()
                # TLS 1.3 key updates make the reading side send a record.
                self._flush()
            if plain is None:
                return b""
            if plain:
                return plain

    def send(self, data: bytes) -> None:
        with self._lock:
            self._tls.write(data)
            self._flush()

    def shutdown(self) -> None:
        _shutdown(self.sock)

    def close(self) -> None:
        self.sock.close()

    def _read_plain(self) -> bytes | None:
        chunks = []
        # Each read returns at most one record. Checking for buffered bytes
        # first avoids the SSLWantReadError (an exception costs microseconds)
        # after the last whole record.
        while self._incoming.pending or self._tls.pending():
            try:
                chunk = self._tls.read(_READ_SIZE)
            except ssl.SSLWantReadError:
                break  # the rest of a record is still on its way
            except ssl.SSLZeroReturnError:
                return None
            if not chunk:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    def _feed(self, raw: bytes) -> None:
        if not raw:
            raise TransportClosedError(
                "peer closed the connection during the TLS handshake"
            )
        self._incoming.write(raw)

    def _flush(self) -> None:
        pending = self._outgoing.read()
        if pending:
            self.sock.sendall(pending)


def _shutdown(sock: socket.socket) -> None:
    # shutdown() wakes the reader thread blocked in recv(), and that thread
    # closes the socket. Closing it here could hand its descriptor number to
    # another socket while the reader still uses it.
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
