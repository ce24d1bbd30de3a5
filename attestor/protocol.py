"""Names and limits of the attestor's Unix socket protocol, shared by both ends.

One request per connection: the client sends one JSON object ended by a newline
and the server returns one JSON object ended by a newline, then closes.
The constants live in `attestor.protocol_constants`, which imports no `enum`.
"""

from __future__ import annotations

import enum

from attestor import protocol_constants as wire
from attestor.protocol_constants import (
    ASSERTED_KEYS,
    DEFAULT_SOCKET_PATH,
    MAX_ASSERTED_CHARS,
    MAX_REQUEST_BYTES,
    MAX_RESPONSE_BYTES,
    SOCKET_ENV,
    default_socket_path,
)

__all__ = [
    "ASSERTED_KEYS",
    "DEFAULT_SOCKET_PATH",
    "MAX_ASSERTED_CHARS",
    "MAX_REQUEST_BYTES",
    "MAX_RESPONSE_BYTES",
    "SOCKET_ENV",
    "ErrorCode",
    "Op",
    "default_socket_path",
]


class Op(enum.StrEnum):
    """Operations a client may request."""

    TOKEN = wire.OP_TOKEN  # issue a JWT for the calling process
    INSPECT = wire.OP_INSPECT  # return the attested identity, no JWT
    RELOAD = wire.OP_RELOAD  # re-read config and keys (root or the daemon's uid)


class ErrorCode(enum.StrEnum):
    """Failure codes in `{"ok": false, "code": ...}` responses."""

    NO_MATCHING_AGENT = wire.NO_MATCHING_AGENT
    PROCESS_CHANGED = wire.PROCESS_CHANGED
    RATE_LIMITED = wire.RATE_LIMITED
    BAD_REQUEST = wire.BAD_REQUEST
    INTERNAL = wire.INTERNAL
    # Raised by the client only, never sent by the server.
    UNAVAILABLE = wire.UNAVAILABLE
    BAD_RESPONSE = wire.BAD_RESPONSE
