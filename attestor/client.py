"""Client of the attestor's Unix socket: request a JWT for the calling process.

The attestor identifies the caller from the kernel (SO_PEERCRED and /proc), so
the request carries nothing about who the caller is. The optional `tool` and
`on_behalf_of` values are the caller's own assertions, and the JWT carries
them under `asserted`.
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any, NamedTuple

from attestor.protocol import MAX_RESPONSE_BYTES, ErrorCode, Op

__all__ = [
    "AttestorError",
    "IssuedToken",
    "inspect_identity",
    "request_reload",
    "request_token",
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


class IssuedToken(NamedTuple):
    """A JWT issued for the calling process; `repr` leaves the token out."""

    token: str
    agent: str
    jti: str
    expires_at: int

    def __repr__(self) -> str:
        return f"IssuedToken(agent={self.agent!r}, jti={self.jti!r})"  # no JWT


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
    asserted = {
        key: value
        for key, value in (("tool", tool), ("on_behalf_of", on_behalf_of))
        if value is not None
    }
    request: dict[str, Any] = {"op": Op.TOKEN.value}
    if asserted:
        request["asserted"] = asserted

    response = _exchange(socket_path, request, timeout)
    try:
        return IssuedToken(
            token=str(response["token"]),
            agent=str(response["agent"]),
            jti=str(response["jti"]),
            expires_at=int(response["expires_at"]),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise AttestorError(
            ErrorCode.BAD_RESPONSE,
            f"attestor at {os.fspath(socket_path)} returned a success response "
            f"without token, agent, jti or expires_at ({err!r}); "
            "check that client and daemon versions match",
        ) from err


def inspect_identity(
    socket_path: str | os.PathLike[str], *, timeout: float = 5.0
) -> dict[str, Any]:
    """Return the attested identity of the calling process, without a JWT.

    The result has `process` (the attested facts) and `agent` (the matching
    agent's name, or None with the reason in `error`).
    """
    return _exchange(socket_path, {"op": Op.INSPECT.value}, timeout)


def request_reload(
    socket_path: str | os.PathLike[str], *, timeout: float = 5.0
) -> None:
    """Ask the daemon to re-read its config and keys (root or its own uid)."""
    _exchange(socket_path, {"op": Op.RELOAD.value}, timeout)


def _exchange(
    socket_path: str | os.PathLike[str], request: dict[str, Any], timeout: float
) -> dict[str, Any]:
    path = os.fspath(socket_path)
    try:
        raw = _send_and_receive(path, json.dumps(request).encode() + b"\n", timeout)
    except (FileNotFoundError, ConnectionRefusedError) as err:
        raise AttestorError(
            ErrorCode.UNAVAILABLE,
            f"no attestor is listening at {path} ({err.strerror}); start "
            "`agent-attestor serve` or set AGENT_ATTESTOR_SOCKET to its socket",
        ) from err
    except TimeoutError as err:
        raise AttestorError(
            ErrorCode.UNAVAILABLE,
            f"attestor at {path} did not respond within {timeout:g} s; "
            "check the daemon's log",
        ) from err
    except OSError as err:
        raise AttestorError(
            ErrorCode.UNAVAILABLE,
            f"cannot talk to the attestor at {path}: {err}; check the socket's "
            "permissions and the daemon's log",
        ) from err
    return _parse_response(path, raw)


def _send_and_receive(path: str, payload: bytes, timeout: float) -> bytes:
    # One deadline for the whole exchange: a server trickling bytes must not
    # extend it with every recv.
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(payload)

        chunks: list[bytes] = []
        received = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            sock.settimeout(remaining)
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            received += len(chunk)
            if chunk.endswith(b"\n") or received > MAX_RESPONSE_BYTES:
                break
    return b"".join(chunks)


def _parse_response(path: str, raw: bytes) -> dict[str, Any]:
    if len(raw) > MAX_RESPONSE_BYTES:
        raise AttestorError(
            ErrorCode.BAD_RESPONSE,
            f"attestor at {path} sent more than {MAX_RESPONSE_BYTES} bytes; "
            "check that the socket belongs to agent-attestor",
        )
    try:
        response = json.loads(raw)
    except ValueError as err:
        raise AttestorError(
            ErrorCode.BAD_RESPONSE,
            f"attestor at {path} sent a response that is not JSON "
            f"({len(raw)} bytes); check the daemon's log",
        ) from err
    if not isinstance(response, dict):
        raise AttestorError(
            ErrorCode.BAD_RESPONSE,
            f"attestor at {path} sent a JSON {type(response).__name__}, "
            "expected an object",
        )
    if response.get("ok") is not True:
        code = str(response.get("code") or ErrorCode.INTERNAL)
        message = str(response.get("error") or "request rejected without a message")
        raise AttestorError(code, message)
    return response
