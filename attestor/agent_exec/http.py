"""A small HTTP/1.1 client for the few JSON requests agent-exec sends to Vault.

agent-exec runs on every tool call, so its start-up time counts. Importing
`http.client` costs about 13 ms (it pulls in the `email` package) and `hvac`
about 80 ms, against about 1 ms for `socket` (`python -X importtime`, Python
3.11, 2-core machine). Vault's API needs little: one keep-alive connection,
JSON bodies, responses with `Content-Length` or chunked encoding.
"""

from __future__ import annotations

import os
import socket
import time
from typing import TYPE_CHECKING, NamedTuple
from urllib.parse import urlsplit

from attestor.agent_exec.logs import get_logger

if TYPE_CHECKING:
    import ssl

log = get_logger(__name__)

MAX_BODY = 16 * 1024 * 1024
# Go's net/http server closes idle connections after a while (Vault: 5 min by
# default); reconnecting before reuse is cheaper than recovering a failed send.
MAX_IDLE = 30.0


class HttpError(Exception):
    """The server could not be reached or sent a malformed response."""


class HttpResponse(NamedTuple):
    status: int
    body: bytes
    location: str = ""  # the Location header of a redirect


class HttpConnection:
    """One keep-alive connection to `base_url` (http or https), not thread-safe."""

    def __init__(self, base_url: str, *, timeout: float = 10.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise HttpError(
                f"invalid Vault address {base_url!r}: expected http://HOST:PORT "
                "or https://HOST:PORT"
            )
        self.base_url = base_url.rstrip("/")
        self._tls = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._tls else 80)
        self._host_header = parts.netloc
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buffer = b""
        self._last_used = 0.0

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock = None
        self._buffer = b""

    def request(
        self, method: str, path: str, headers: dict[str, str], body: bytes | None
    ) -> HttpResponse:
        """Send one request and read its response, reconnecting when needed."""
        if self._sock is not None and time.monotonic() - self._last_used > MAX_IDLE:
            self.close()
        reused = self._sock is not None
        try:
            return self._exchange(method, path, headers, body)
        except (OSError, HttpError) as err:
            self.close()
            if not reused:
                raise HttpError(
                    f"{method} {self.base_url}{path} failed: {err}"
                ) from err
        # The server may have closed a kept-alive connection just before our
        # request arrived; a fresh connection settles which case this was.
        log.debug("retrying %s %s on a new connection", method, path)
        try:
            return self._exchange(method, path, headers, body)
        except (OSError, HttpError) as err:
            self.close()
            raise HttpError(f"{method} {self.base_url}{path} failed: {err}") from err

    def _exchange(
        self, method: str, path: str, headers: dict[str, str], body: bytes | None
    ) -> HttpResponse:
        sock = self._sock if self._sock is not None else self._connect()
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self._host_header}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        lines.append(f"Content-Length: {len(body or b'')}")
        sock.sendall(
            ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")
        )

        status, response_headers = self._read_head()
        payload = self._read_body(method, status, response_headers)
        if response_headers.get("connection", "").lower() == "close":
            self.close()
        self._last_used = time.monotonic()
        return HttpResponse(status, payload, response_headers.get("location", ""))

    def _connect(self) -> socket.socket:
        sock = _open_tcp(self._host, self._port, self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._tls:
            sock = _tls_context().wrap_socket(sock, server_hostname=self._host)
        self._sock = sock
        return sock

    def _read_head(self) -> tuple[int, dict[str, str]]:
        head = self._read_until(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        fields = status_line.split(" ", 2)
        if len(fields) < 2 or not fields[0].startswith("HTTP/1."):
            raise HttpError(f"malformed status line {status_line[:80]!r}")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return int(fields[1]), headers

    def _read_body(self, method: str, status: int, headers: dict[str, str]) -> bytes:
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            return b""
        if headers.get("transfer-encoding", "").lower() == "chunked":
            return self._read_chunked()
        if "content-length" in headers:
            length = int(headers["content-length"])
            if length > MAX_BODY:
                raise HttpError(f"response body of {length} bytes is too large")
            return self._read_exact(length)
        # Neither length nor chunks: the body ends when the server closes.
        data = self._buffer + self._read_to_close()
        self.close()
        return data

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            size_line = self._read_until(b"\r\n").split(b";", 1)[0]
            size = int(size_line.strip(), 16)
            if size == 0:
                self._read_until(b"\r\n")  # the empty trailer
                return b"".join(parts)
            total += size
            if total > MAX_BODY:
                raise HttpError(f"chunked response body exceeds {MAX_BODY} bytes")
            parts.append(self._read_exact(size))
            self._read_exact(2)

    def _read_until(self, marker: bytes) -> bytes:
        while marker not in self._buffer:
            if len(self._buffer) > 64 * 1024:
                raise HttpError("response header section is too large")
            self._fill()
        head, _, self._buffer = self._buffer.partition(marker)
        return head

    def _read_exact(self, size: int) -> bytes:
        while len(self._buffer) < size:
            self._fill()
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def _read_to_close(self) -> bytes:
        assert self._sock is not None
        parts = []
        while chunk := self._sock.recv(65536):
            parts.append(chunk)
        return b"".join(parts)

    def _fill(self) -> None:
        assert self._sock is not None
        chunk = self._sock.recv(65536)
        if not chunk:
            raise HttpError("connection closed by the server before the response")
        self._buffer += chunk


def _open_tcp(host: str, port: int, timeout: float) -> socket.socket:
    """Connect to the first address of `host` that accepts, as create_connection does.

    An ASCII host name goes to getaddrinfo as bytes, because a str one is
    encoded with the idna codec, whose import costs about 1 ms of each call.
    """
    name = host.encode("ascii") if host.isascii() else host
    last_error: OSError | None = None
    for family, kind, proto, _, address in socket.getaddrinfo(
        name, port, type=socket.SOCK_STREAM
    ):
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(timeout)
            sock.connect(address)
        except OSError as err:
            sock.close()
            last_error = err
            continue
        return sock
    raise last_error or OSError(f"no address found for host {host!r}")


def _tls_context() -> ssl.SSLContext:
    """Build a verifying TLS context; `VAULT_CACERT`/`VAULT_CAPATH` add CAs."""
    import ssl  # only https pays for the import

    context = ssl.create_default_context(
        cafile=os.environ.get("VAULT_CACERT") or None,
        capath=os.environ.get("VAULT_CAPATH") or None,
    )
    return context
