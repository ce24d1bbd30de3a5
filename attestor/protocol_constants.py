"""Names and limits of the attestor's socket protocol, importable without `enum`.

`attestor.protocol` re-exports all of these next to its `Op` and `ErrorCode`
enums. The client and agent-exec import them from here, because `enum` and
the modules it imports add about 3 ms to agent-exec's start-up (Python
3.11).
"""

from __future__ import annotations

import os

SOCKET_ENV = "AGENT_ATTESTOR_SOCKET"
DEFAULT_SOCKET_PATH = "/run/agent-attestor/agent.sock"

MAX_REQUEST_BYTES = 64 * 1024
# A response carries a JWT with the caller's bounded cmdline and parent chain.
MAX_RESPONSE_BYTES = 1024 * 1024

# Bounds on what a caller may assert about itself (`asserted` in the JWT).
MAX_ASSERTED_CHARS = 256
ASSERTED_KEYS = ("tool", "on_behalf_of")

# The values of `Op`: operations a client may request.
OP_TOKEN = "token"  # noqa: S105 - an operation name, not a secret
OP_INSPECT = "inspect"
OP_RELOAD = "reload"

# The values of `ErrorCode`: failure codes in `{"ok": false, "code": ...}`.
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
