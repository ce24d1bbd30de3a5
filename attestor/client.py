"""Client of the attestor's Unix socket: request a JWT for the calling process.

The attestor identifies the caller from the kernel (SO_PEERCRED and /proc), so
the request carries nothing about who the caller is. The optional `tool` and
`on_behalf_of` values are the caller's own assertions, and the JWT carries
them under `asserted`.

agent-exec imports this module on every call, so it imports no `json`,
`socket`, `typing` or `enum`: `_socket` is the C module under `socket`, and
`attestor.json_lite` explains the JSON.
"""

from __future__ import annotations

import _socket
import os
import stat
import time

from attestor import protocol_constants as wire
from attestor.json_lite import dumps, loads

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "AttestorError",
    "IssuedToken",
    "TokenRequest",
    "inspect_identity",
    "request_reload",
    "request_token",
    "send_token_request",
]


class AttestorError(Exception):
    """A failed attestor request, with an `ErrorCode` value in `code`.

    The server sends `no_matching_agent`, `process_changed`, `rate_limited`,
    `bad_request` or `internal`. The client itself raises `unavailable` when no
    daemon listens at the socket or it timed out, and `bad_response` when the
    response is malformed.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class IssuedToken:
    """A JWT issued for the calling process; `repr` leaves the token out."""

    __slots__ = ("agent", "expires_at", "jti", "token")

    def __init__(self, token: str, agent: str, jti: str, expires_at: int) -> None:
        self.token = token
        self.agent = agent
        self.jti = jti
        self.expires_at = expires_at

    def __repr__(self) -> str:
        return f"IssuedToken(agent={self.agent!r}, jti={self.jti!r})"  # no JWT


class TokenRequest:
    """A token request already sent; `result` waits for the attestor's JWT.

    The caller can do other work between sending and reading, while the
    attestor inspects it.
    """

    def __init__(self, exchange: _Exchange) -> None:
        self._exchange = exchange

    def result(self) -> IssuedToken:
        """Read the response; raise AttestorError if the attestor rejected it."""
        response = self._exchange.response()
        try:
            return IssuedToken(
                token=str(response["token"]),
                agent=str(response["agent"]),
                jti=str(response["jti"]),
                expires_at=int(response["expires_at"]),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise AttestorError(
                wire.BAD_RESPONSE,
                f"attestor at {self._exchange.path} returned a success response "
                f"without token, agent, jti or expires_at ({err!r}); "
                "check that client and daemon versions match",
            ) from err

    def close(self) -> None:
        """Abandon the request without reading its response."""
        self._exchange.close()


def send_token_request(
    socket_path: str | os.PathLike[str],
    *,
    tool: str | None = None,
    on_behalf_of: str | None = None,
    timeout: float = 5.0,
) -> TokenRequest:
    """Send a JWT request to the attestor at `socket_path` and return at once.

    `timeout` counts from now to the end of `TokenRequest.result`. Raises
    AttestorError (`unavailable`) when the daemon cannot be reached.
    """
    asserted = {
        key: value
        for key, value in (("tool", tool), ("on_behalf_of", on_behalf_of))
        if value is not None
    }
    request: dict[str, Any] = {"op": wire.OP_TOKEN}
    if asserted:
        request["asserted"] = asserted
    return TokenRequest(_Exchange(socket_path, request, timeout))


def request_token(
    socket_path: str | os.PathLike[str],
    *,
    tool: str | None = None,
    on_behalf_of: str | None = None,
    timeout: float = 5.0,
) -> IssuedToken:
    """Request a JWT for the calling process from the attestor at `socket_path`.

    Raises AttestorError when the daemon rejects the caller or cannot be
    reached.
    """
    request = send_token_request(
        socket_path, tool=tool, on_behalf_of=on_behalf_of, timeout=timeout
    )
    return request.result()


def inspect_identity(
    socket_path: str | os.PathLike[str], *, timeout: float = 5.0
) -> dict[str, Any]:
    """Return the attested identity of the calling process, without a JWT.

    The result has `process` (the attested facts) and `agent` (the matching
    agent's name, or None with the reason in `error`).
    """
    return _Exchange(socket_path, {"op": wire.OP_INSPECT}, timeout).response()


def request_reload(
    socket_path: str | os.PathLike[str], *, timeout: float = 5.0
) -> None:
    """Ask the daemon to re-read its config and keys (root or its own uid)."""
    _Exchange(socket_path, {"op": wire.OP_RELOAD}, timeout).response()


class _Exchange:
    """One request on its own connection, sent on construction, read by `response`."""

    def __init__(
        self,
        socket_path: str | os.PathLike[str],
        request: dict[str, Any],
        timeout: float,
    ) -> None:
        self.path = os.fspath(socket_path)
        self._timeout = timeout
        # One deadline for the whole exchange: a server trickling bytes must
        # not extend it with every recv.
        self._deadline = time.monotonic() + timeout
        self._sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            self._sock.settimeout(timeout)
            self._sock.connect(self.path)
            self._sock.sendall(dumps(request).encode() + b"\n")
        except OSError as err:
            self._sock.close()
            raise self._unavailable(err) from err

    def response(self) -> dict[str, Any]:
        try:
            raw = self._receive()
        except OSError as err:
            raise self._unavailable(err) from err
        finally:
            self._sock.close()
        return _parse_response(self.path, raw)

    def close(self) -> None:
        self._sock.close()

    def _receive(self) -> bytes:
        chunks: list[bytes] = []
        received = 0
        while True:
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            self._sock.settimeout(remaining)
            chunk = self._sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            received += len(chunk)
            if chunk.endswith(b"\n") or received > wire.MAX_RESPONSE_BYTES:
                break
        return b"".join(chunks)

    def _unavailable(self, err: OSError) -> AttestorError:
        kind = _file_kind(self.path)
        if isinstance(err, ConnectionRefusedError) and kind not in {"socket", ""}:
            # On Linux, connect() to a path that is not a socket fails with
            # ECONNREFUSED, as it does for a socket without a listener.
            message = (
                f"{self.path} is a {kind}, not a socket; set AGENT_ATTESTOR_SOCKET "
                "to the socket of `agent-attestor serve`"
            )
        elif isinstance(err, FileNotFoundError | ConnectionRefusedError):
            message = (
                f"no attestor is listening at {self.path} ({err.strerror}); start "
                "`agent-attestor serve` or set AGENT_ATTESTOR_SOCKET to its socket"
            )
        elif isinstance(err, TimeoutError):
            message = (
                f"attestor at {self.path} did not respond within "
                f"{self._timeout:g} s; check the daemon's log"
            )
        else:
            message = (
                f"cannot talk to the attestor at {self.path}: {err}; check the "
                "socket's permissions and the daemon's log"
            )
        return AttestorError(wire.UNAVAILABLE, message)


def _file_kind(path: str) -> str:
    """Return the file type of `path` ("socket", "directory", ...), or "" if unknown."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return ""
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISREG(mode):
        return "regular file"
    return "special file"


def _parse_response(path: str, raw: bytes) -> dict[str, Any]:
    if len(raw) > wire.MAX_RESPONSE_BYTES:
        raise AttestorError(
            wire.BAD_RESPONSE,
            f"attestor at {path} sent more than {wire.MAX_RESPONSE_BYTES} bytes; "
            "check that the socket belongs to agent-attestor",
        )
    try:
        response = loads(raw)
    except ValueError as err:
        raise AttestorError(
            wire.BAD_RESPONSE,
            f"attestor at {path} sent a response that is not JSON "
            f"({len(raw)} bytes); check the daemon's log",
        ) from err
    if not isinstance(response, dict):
        raise AttestorError(
            wire.BAD_RESPONSE,
            f"attestor at {path} sent a JSON {type(response).__name__}, "
            "expected an object",
        )
    if "ok" not in response:
        raise AttestorError(
            wire.BAD_RESPONSE,
            f"attestor at {path} sent a JSON object without 'ok'; check that the "
            "socket belongs to agent-attestor",
        )
    if response["ok"] is not True:
        code = str(response.get("code") or wire.INTERNAL)
        message = str(
            response.get("error")
            or f"attestor at {path} rejected the request without a message"
        )
        raise AttestorError(code, message)
    return response
