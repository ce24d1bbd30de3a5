"""Names and limits of the attestor's Unix socket protocol, shared by both ends.

One request per connection: the client sends one JSON object ended by a newline
and the server returns one JSON object ended by a newline, then closes.
"""

from __future__ import annotations

import enum
import os

SOCKET_ENV = "AGENT_ATTESTOR_SOCKET"
DEFAULT_SOCKET_PATH = "/run/agent-attestor/agent.sock"

MAX_REQUEST_BYTES = 64 * 1024
# A response carries a JWT with the caller's bounded cmdline and parent chain.
MAX_RESPONSE_BYTES = 1024 * 1024

# Bounds on what a caller may assert about itself (`asserted` in the JWT).
MAX_ASSERTED_CHARS = 256
ASSERTED_KEYS = ("tool", "on_behalf_of")


class Op(enum.StrEnum):
    """Operations a client may request."""

    TOKEN = "token"  # noqa: S105  # issue a JWT for the calling process
    INSPECT = "inspect"  # return the attested identity, no JWT
    RELOAD = "reload"  # re-read config and keys (root or the daemon's uid)


class ErrorCode(enum.StrEnum):
    """Failure codes in `{"ok": false, "code": ...}` responses."""

    NO_MATCHING_AGENT = "no_matching_agent"
    PROCESS_CHANGED = "process_changed"
    RATE_LIMITED = "rate_limited"
    BAD_REQUEST = "bad_request"
    INTERNAL = "internal"
    # Raised by the client only, never sent by the server.
    UNAVAILABLE = "unavailable"
    BAD_RESPONSE = "bad_response"


def default_socket_path() -> str:
    """Return the socket path from `AGENT_ATTESTOR_SOCKET`, or the default."""
    return os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET_PATH
