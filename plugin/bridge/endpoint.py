"""One side of a relayed connection, driven by the TLS proxy's selector loop.

Each Endpoint owns a socket and the bytes still to be written to it; its
peer is the other side of the same relay. Reads from one side append to the
peer's buffer, which is flushed at once and, if the socket is full, when it
becomes writable. Reading pauses while the peer has more than
`_HIGH_WATER` unsent bytes, so a slow side cannot grow memory without bound.
"""

from __future__ import annotations

import logging
import selectors
import socket
import ssl
import time

logger = logging.getLogger(__name__)

_CHUNK = 256 * 1024
_HIGH_WATER = 4 * 1024 * 1024
_HANDSHAKE_TIMEOUT = 10.0
_WOULD_BLOCK = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


class Endpoint:
    """A socket, its unsent bytes, and the endpoint it relays to."""

    def __init__(
        self,
        selector: selectors.BaseSelector,
        sock: socket.socket,
        *,
        handshaking: bool,
    ) -> None:
        self.selector = selector
        self.sock = sock
        self.out = bytearray()
        self.peer: Endpoint = self
        self.handshaking = handshaking
        self.handshake_deadline = time.monotonic() + _HANDSHAKE_TIMEOUT
        self.closed = False
        # OpenSSL requires a write retried after SSLWantWriteError to pass
        # the same bytes again, so the length of that attempt is kept.
        self._retry_len = 0
        self._want_write = False
        self._mask = 0

    @classmethod
    def pair(
        cls,
        selector: selectors.BaseSelector,
        tls: ssl.SSLSocket,
        plain: socket.socket,
        *,
        handshaking: bool,
    ) -> None:
        """Register a TLS socket and a plaintext socket as each other's peer."""
        tls.setblocking(False)
        plain.setblocking(False)
        tls_end = cls(selector, tls, handshaking=handshaking)
        plain_end = cls(selector, plain, handshaking=False)
        tls_end.peer, plain_end.peer = plain_end, tls_end
        tls_end.update_interest()
        plain_end.update_interest()
        if handshaking:
            tls_end.continue_handshake()

    def handle(self, events: int) -> None:
        if self.closed:
            return
        if self.handshaking:
            self.continue_handshake()
            return
        if events & selectors.EVENT_WRITE:
            self.flush()
        if events & selectors.EVENT_READ and not self.closed:
            self.read()

    def continue_handshake(self) -> None:
        assert isinstance(self.sock, ssl.SSLSocket)
        try:
            self.sock.do_handshake()
        except ssl.SSLWantReadError:
            self._want_write = False
        except ssl.SSLWantWriteError:
            self._want_write = True
        except (ssl.SSLError, OSError) as err:
            logger.warning("TLS handshake failed", extra={"error": str(err)})
            self.close()
            return
        else:
            # Bytes from the plaintext side waited in self.out during the
            # handshake (grpcio sends its HTTP/2 settings at once), and the
            # peer's reading was not yet relayed anywhere.
            self.handshaking = False
            self._want_write = False
            self.flush()
            self.peer.read()
            return
        if time.monotonic() > self.handshake_deadline:
            logger.warning("TLS handshake timed out; closing the connection")
            self.close()
            return
        self.update_interest()

    def read(self) -> None:
        """Move whatever the socket has to the peer's buffer."""
        peer = self.peer
        while not self.closed and len(peer.out) < _HIGH_WATER:
            try:
                data = self.sock.recv(_CHUNK)
            except _WOULD_BLOCK:
                break
            except OSError as err:
                logger.debug("relayed connection failed", extra={"error": str(err)})
                self.close()
                return
            if not data:
                peer.flush()  # deliver what arrived before the end of stream
                self.close()
                return
            peer.out += data
            # A short read emptied the socket, but OpenSSL may still hold
            # decrypted bytes of a record that arrived whole.
            if len(data) < _CHUNK and not self._has_pending():
                break
        peer.flush()
        self.update_interest()

    def flush(self) -> None:
        """Write buffered bytes until the socket would block."""
        if self.handshaking or self.closed:
            self.update_interest()
            return
        was_full = len(self.out) >= _HIGH_WATER
        while self.out:
            length = self._retry_len or min(len(self.out), _CHUNK)
            try:
                sent = self.sock.send(memoryview(self.out)[:length])
            except _WOULD_BLOCK:
                self._retry_len = length
                break
            except OSError as err:
                logger.debug("relayed connection failed", extra={"error": str(err)})
                self.close()
                return
            self._retry_len = 0
            del self.out[:sent]
        self.update_interest()
        # The peer stopped reading at the high-water mark and may hold
        # decrypted bytes that no socket event will announce again.
        if was_full and len(self.out) < _HIGH_WATER and not self.peer.closed:
            self.peer.read()

    def update_interest(self) -> None:
        if self.closed:
            return
        mask = 0
        if self.handshaking:
            mask = selectors.EVENT_WRITE if self._want_write else selectors.EVENT_READ
        else:
            if len(self.peer.out) < _HIGH_WATER:
                mask |= selectors.EVENT_READ
            if self.out:
                mask |= selectors.EVENT_WRITE
        if mask == self._mask:
            return
        if self._mask == 0:
            self.selector.register(self.sock, mask, self)
        elif mask == 0:
            self.selector.unregister(self.sock)
        else:
            self.selector.modify(self.sock, mask, self)
        self._mask = mask

    def close(self) -> None:
        """Close this socket and its peer."""
        for end in (self, self.peer):
            if end.closed:
                continue
            end.closed = True
            if end._mask:
                end.selector.unregister(end.sock)
                end._mask = 0
            end.sock.close()

    def _has_pending(self) -> bool:
        return isinstance(self.sock, ssl.SSLSocket) and self.sock.pending() > 0
