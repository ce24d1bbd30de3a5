"""Relay bytes from plaintext grpcio sockets to Vault's TLS sockets (Python ssl).

grpcio cannot complete a TLS handshake with Vault's P-521 certificate, so
the broker's channels to Vault go through this relay. grpcio connects to a
private plaintext socket per broker service. One thread runs a selector
loop that pairs each such connection with a TLS connection to Vault's
broker server. Vault's calls into the plugin need no relay, because
`grpc_server` terminates their TLS itself.

One thread keeps each OpenSSL object on a single thread (OpenSSL objects
must not be used from two threads at once) and costs one wake-up per burst.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from plugin.bridge.endpoint import Endpoint

logger = logging.getLogger(__name__)

_ACCEPT_BACKLOG = 64
_DIAL_TIMEOUT = 5.0
_SWEEP_SECONDS = 1.0


@dataclass
class _Listener:
    sock: socket.socket
    path: str
    connect: Callable[[socket.socket], None]


@dataclass
class _Commands:
    pending: queue.SimpleQueue[Callable[[], None]] = field(
        default_factory=queue.SimpleQueue
    )


class TlsProxy:
    """The selector loop; listeners may be added from any thread."""

    def __init__(self, client_context: ssl.SSLContext) -> None:
        self._client_context = client_context
        self._selector = selectors.DefaultSelector()
        self._listeners: dict[str, _Listener] = {}
        self._commands = _Commands()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="tls-proxy", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Close every listener and connection and end the loop thread."""
        self._submit(self._shutdown)
        self._thread.join(timeout=2.0)

    def dial_tls(self, listen_path: str, remote_path: str) -> None:
        """Accept plaintext on `listen_path` and relay to `remote_path` with TLS."""

        def connect(client: socket.socket) -> None:
            raw = _dial_unix(remote_path)
            tls = self._client_context.wrap_socket(
                raw, server_hostname="localhost", do_handshake_on_connect=False
            )
            Endpoint.pair(self._selector, tls, client, handshaking=True)

        self._add_listener(listen_path, connect)

    def remove_listener(self, listen_path: str) -> None:
        """Stop accepting on `listen_path`; open connections stay up."""
        self._submit(lambda: self._close_listener(listen_path))

    def _add_listener(
        self, path: str, connect: Callable[[socket.socket], None]
    ) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(path)
        sock.listen(_ACCEPT_BACKLOG)
        sock.setblocking(False)
        listener = _Listener(sock, path, connect)
        self._submit(lambda: self._register_listener(listener))

    def _register_listener(self, listener: _Listener) -> None:
        self._listeners[listener.path] = listener
        self._selector.register(listener.sock, selectors.EVENT_READ, listener)

    def _close_listener(self, path: str) -> None:
        listener = self._listeners.pop(path, None)
        if listener is None:
            return
        self._selector.unregister(listener.sock)
        listener.sock.close()
        _unlink(path)

    def _submit(self, command: Callable[[], None]) -> None:
        self._commands.pending.put(command)
        # A full wake-up socket already wakes the loop, so a failed send is fine.
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def _run(self) -> None:
        next_sweep = time.monotonic() + _SWEEP_SECONDS
        try:
            while not self._stopping:
                for key, mask in self._selector.select(timeout=_SWEEP_SECONDS):
                    self._dispatch(key, mask)
                now = time.monotonic()
                if now >= next_sweep:
                    self._expire_handshakes(now)
                    next_sweep = now + _SWEEP_SECONDS
        except Exception:
            logger.exception("tls proxy loop failed; plugin connections are down")

    def _expire_handshakes(self, now: float) -> None:
        # A peer that connects and then sends nothing produces no events, so
        # the loop closes handshakes past their deadline once a second.
        for key in list(self._selector.get_map().values()):
            owner = key.data
            expired = isinstance(owner, Endpoint) and owner.handshaking
            if expired and now > owner.handshake_deadline:
                logger.warning("TLS handshake timed out; closing the connection")
                owner.close()

    def _dispatch(self, key: selectors.SelectorKey, events: int) -> None:
        owner = key.data
        if owner is None:
            self._drain_commands()
        elif isinstance(owner, _Listener):
            self._accept(owner)
        elif isinstance(owner, Endpoint):
            owner.handle(events)

    def _drain_commands(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass
        while not self._commands.pending.empty():
            self._commands.pending.get_nowait()()

    def _accept(self, listener: _Listener) -> None:
        while True:
            try:
                client, _ = listener.sock.accept()
            except BlockingIOError:
                return
            try:
                listener.connect(client)
            except OSError as err:
                logger.warning(
                    "could not relay a connection; closing it",
                    extra={"listener": listener.path, "error": str(err)},
                )
                client.close()

    def _shutdown(self) -> None:
        self._stopping = True
        for path in list(self._listeners):
            self._close_listener(path)
        for key in list(self._selector.get_map().values()):
            if isinstance(key.data, Endpoint):
                key.data.close()
        self._selector.unregister(self._wake_r)
        self._wake_r.close()
        self._wake_w.close()
        self._selector.close()


def _dial_unix(path: str) -> socket.socket:
    # A unix connect to a listening socket completes at once unless its
    # backlog is full, so a blocking connect on the loop thread is brief.
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(_DIAL_TIMEOUT)
        sock.connect(path)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
