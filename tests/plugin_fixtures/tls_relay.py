"""A TLS client relay for tests and benchmarks: grpcio in, Vault-style TLS out.

grpcio cannot present Vault's P-521 client certificate, so a test that
drives the plugin's TLS server with grpcio connects to this relay. The
relay dials the plugin with the given client context, through the bridge's
own `TlsTransport`, and copies bytes both ways on two threads per
connection.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from pathlib import Path

from plugin.bridge.transport import TlsTransport


class TlsRelay:
    """Accept plaintext on `listen_path`; dial `target_path` with TLS per connection."""

    def __init__(
        self, listen_path: Path, target_path: Path, context: ssl.SSLContext
    ) -> None:
        self._target = str(target_path)
        self._context = context
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(listen_path))
        self._listener.listen()
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                plain, _ = self._listener.accept()
            except OSError:
                return
            raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            raw.connect(self._target)
            tls = TlsTransport(raw, self._context, server_hostname="localhost")
            tls.handshake()
            threading.Thread(target=_to_tls, args=(plain, tls), daemon=True).start()
            threading.Thread(target=_from_tls, args=(tls, plain), daemon=True).start()


def _to_tls(plain: socket.socket, tls: TlsTransport) -> None:
    try:
        while data := plain.recv(65536):
            tls.send(data)
    except OSError:
        pass
    tls.shutdown()


def _from_tls(tls: TlsTransport, plain: socket.socket) -> None:
    try:
        while data := tls.recv():
            plain.sendall(data)
    except OSError:
        pass
    with contextlib.suppress(OSError):
        plain.shutdown(socket.SHUT_RDWR)
    plain.close()
    tls.close()
