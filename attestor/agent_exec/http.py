"""A small HTTP/1.1 client for the few JSON requests agent-exec sends to Vault.

agent-exec runs on every tool call, so its start-up time counts. Importing
`http.client` costs about 13 ms (it pulls in the `email` package) and `hvac`
about 80 ms, against about 0.5 ms for `_socket`, the C module under `socket`
(Python 3.11, 2-core machine). Vault's API needs little: one keep-alive
connection, JSON bodies, responses with `Content-Length` or chunked
encoding.
"""

from __future__ import annotations

import _socket
import os
import time

from attestor.agent_exec.logs import get_logger
from attestor.agent_exec.urls import split_base_url

TYPE_CHECKING = False
if TYPE_CHECKING:
    import ssl
    from collections.abc import Callable

log = get_logger(__name__)

MAX_BODY = 16 * 1024 * 1024
HEX_DIGITS = b"0123456789abcdefABCDEF"
# Go's net/http server closes idle connections after a while (Vault: 5 min by
# default); reconnecting before reuse is cheaper than recovering a failed send.
MAX_IDLE = 30.0


class HttpError(Exception):
    """The server could not be reached or sent a malformed response."""


class ClosedBeforeResponseError(HttpError):
    """The server closed the connection before the response began."""


class HttpResponse:
    """An HTTP response, with a redirect's Location header in `location`."""

    __slots__ = ("body", "location", "status")

    def __init__(self, status: int, body: bytes, location: str = "") -> None:
        self.status = status
        self.body = body
        self.location = location


class HttpConnection:
    """One keep-alive connection to `base_url` (http or https), not thread-safe.

    Each response must arrive in full within `timeout` seconds of the end of
    its request, so a server that sends bytes slowly cannot stretch a wait.
    It uses `_socket`, because `socket` itself imports `enum` and
    `selectors`, which add about 6 ms to agent-exec's start-up.
    """

    def __init__(self, base_url: str, *, timeout: float = 10.0) -> None:
        try:
            parts = split_base_url(base_url)
        except ValueError as err:
            raise HttpError(
                f"invalid Vault address {base_url!r} ({err}): expected "
                "http://HOST:PORT or https://HOST:PORT"
            ) from err
        self.base_url = base_url.rstrip("/")
        self._tls = parts.scheme == "https"
        self._host = parts.host
        self._port = parts.port
        self._host_header = parts.netloc
        self.timeout = timeout
        self._sock: _socket.socket | None = None
        self._buffer = b""
        self._last_used = 0.0
        # When the response being read must be complete, in time.monotonic().
        self._deadline = 0.0

    def connect(self) -> None:
        """Open the connection now, so that the first request does not wait for it."""
        if self._sock is None:
            try:
                self._connect()
            except OSError as err:
                raise HttpError(f"connecting to {self.base_url} failed: {err}") from err

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock = None
        self._buffer = b""

    def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes | None,
        meanwhile: Callable[[], None] | None = None,
    ) -> HttpResponse:
        """Send one request and read its response, reconnecting when needed.

        `meanwhile`, if given, runs once after the request is sent and before
        the response is read, so its work overlaps the server's.
        """
        if self._sock is not None and time.monotonic() - self._last_used > MAX_IDLE:
            self.close()
        message = self._format(method, path, headers, body)
        # The server may have closed a kept-alive connection just before the
        # request arrived; a fresh connection settles which case this was.
        reused = self._sock is not None
        try:
            self._send(message)
        except OSError as err:
            self._give_up_unless(reused, method, path, err)
            self._resend(method, path, message)
            reused = False
        if meanwhile is not None:
            try:
                meanwhile()
            except BaseException:
                self.close()  # the response is never read
                raise

        try:
            return self._read_response(method)
        except (OSError, HttpError) as err:
            self._give_up_unless(reused and _may_be_stale(err), method, path, err)
        self._resend(method, path, message)
        try:
            return self._read_response(method)
        except (OSError, HttpError) as err:
            self.close()
            raise _failure(method, self.base_url + path, err) from err

    def _give_up_unless(
        self, retry: bool, method: str, path: str, err: Exception
    ) -> None:
        """Close the connection; raise HttpError unless `retry` is set."""
        self.close()
        if not retry:
            raise _failure(method, self.base_url + path, err) from err
        log.debug("retrying %s %s on a new connection", method, path)

    def _resend(self, method: str, path: str, message: bytes) -> None:
        try:
            self._send(message)
        except OSError as err:
            self.close()
            raise _failure(method, self.base_url + path, err) from err

    def _format(
        self, method: str, path: str, headers: dict[str, str], body: bytes | None
    ) -> bytes:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self._host_header}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        lines.append(f"Content-Length: {len(body or b'')}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")

    def _send(self, message: bytes) -> None:
        sock = self._sock if self._sock is not None else self._connect()
        sock.sendall(message)

    def _read_response(self, method: str) -> HttpResponse:
        self._deadline = time.monotonic() + self.timeout
        status, response_headers = self._read_head()
        payload = self._read_body(method, status, response_headers)
        if response_headers.get("connection", "").lower() == "close":
            self.close()
        self._last_used = time.monotonic()
        return HttpResponse(status, payload, response_headers.get("location", ""))

    def _connect(self) -> _socket.socket:
        sock = _open_tcp(self._host, self._port, self.timeout)
        sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
        if self._tls:
            import socket  # ssl imports it anyway, and only https needs it

            plain = socket.socket(fileno=sock.detach())
            plain.settimeout(self.timeout)
            sock = _tls_context().wrap_socket(plain, server_hostname=self._host)
        self._sock = sock
        self._last_used = time.monotonic()
        return sock

    def _read_head(self) -> tuple[int, dict[str, str]]:
        head = self._read_until(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        fields = status_line.split(" ", 2)
        if (
            len(fields) < 2
            or not fields[0].startswith("HTTP/1.")
            or not _is_digits(fields[1], 3)
        ):
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
            value = headers["content-length"]
            if not _is_digits(value):
                raise HttpError(f"invalid Content-Length header {value[:40]!r}")
            length = int(value)
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
            size_line = self._read_until(b"\r\n").split(b";", 1)[0].strip()
            if not size_line or size_line.strip(HEX_DIGITS):
                raise HttpError(f"invalid chunk size {size_line[:40]!r}")
            size = int(size_line, 16)
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
        parts = []
        while chunk := self._receive():
            parts.append(chunk)
        return b"".join(parts)

    def _fill(self) -> None:
        chunk = self._receive()
        if not chunk:
            raise ClosedBeforeResponseError(
                "connection closed by the server before the response"
            )
        self._buffer += chunk

    def _receive(self) -> bytes:
        assert self._sock is not None
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no complete response within {self.timeout:g} s")
        self._sock.settimeout(remaining)
        return self._sock.recv(65536)


def _may_be_stale(err: Exception) -> bool:
    """Tell whether `err` may come from a kept-alive connection the server closed.

    A timeout or a malformed response means that the server has the request
    and may act on it, so sending it again could mint a second lease.
    """
    if isinstance(err, TimeoutError):
        return False
    return isinstance(err, OSError | ClosedBeforeResponseError)


def _is_digits(text: str, count: int = 0) -> bool:
    """Tell whether `text` is ASCII digits only, `count` of them if given."""
    return text.isascii() and text.isdigit() and (not count or len(text) == count)


def _failure(method: str, url: str, err: Exception) -> HttpError:
    return HttpError(f"{method} {url} failed: {err}")


def _open_tcp(host: str, port: int, timeout: float) -> _socket.socket:
    """Connect to the first address of `host` that accepts, as create_connection does.

    An ASCII host name goes to getaddrinfo as bytes, because a str one is
    encoded with the idna codec, whose import costs about 1 ms of each call.
    """
    name = host.encode("ascii") if host.isascii() else host
    last_error: OSError | None = None
    for family, kind, proto, _, address in _socket.getaddrinfo(
        name, port, 0, _socket.SOCK_STREAM
    ):
        sock = _socket.socket(family, kind, proto)
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
