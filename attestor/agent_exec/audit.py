"""The audit record of one call, printed as one JSON line with `--json`.

The record names the call by the JWT's `jti` and the token by its accessor,
which Vault's audit log shows on every request made with the token. It
lists what the attestor attested about the process and, under `asserted`,
what the caller claimed, which nothing checks. Then come the roles, the
leases, the timings and how the call ended. It never contains a token, a
JWT or a credential, nor the command's arguments, which may carry data the
caller did not mean to log.
"""

from __future__ import annotations

import time

from attestor.json_lite import dumps, loads

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class AuditRecord:
    """Facts collected while the call runs; `as_dict` is what gets printed."""

    def __init__(self) -> None:
        self.started = time.time()
        self.call_id = ""
        self.agent = ""
        self.token_accessor = ""
        self.attested: dict[str, Any] = {}
        self.asserted: dict[str, Any] = {}
        self.program = ""
        self.roles: list[str] = []
        self.lease_ids: list[str] = []
        self.policies: list[str] = []
        self.decision = "not_reached"
        self.reason = ""
        self.timings_ms: dict[str, float] = {}
        self.child: dict[str, Any] = {}
        self.revocation: dict[str, Any] | None = None
        self.exit_code: int | None = None

    def set_claims(self, jwt: str) -> None:
        """Copy the attested and asserted claims out of the (unverified) JWT."""
        claims = decode_claims(jwt)
        self.attested = {
            key: claims[key]
            for key in ("sub", "uid", "user", "exe", "exe_sha256", "host", "iss")
            if key in claims
        }
        asserted = claims.get("asserted")
        self.asserted = dict(asserted) if isinstance(asserted, dict) else {}

    def as_dict(self) -> dict[str, Any]:
        return {
            "type": "agent-exec",
            "time": _iso8601(self.started),
            "call_id": self.call_id,
            "agent": self.agent,
            "token_accessor": self.token_accessor,
            "attested": self.attested,
            "asserted": self.asserted,
            "program": self.program,
            "roles": self.roles,
            "lease_ids": self.lease_ids,
            "policy": {
                "decision": self.decision,
                "reason": self.reason,
                "token_policies": self.policies,
            },
            "timings_ms": self.timings_ms,
            "child": self.child,
            "revocation": self.revocation,
            "exit_code": self.exit_code,
        }

    def to_json(self) -> str:
        return dumps(self.as_dict())


class Stopwatch:
    """Records how long each named step took, in milliseconds."""

    def __init__(self, timings: dict[str, float]) -> None:
        self._timings = timings
        self._origin = time.perf_counter()
        self._last = self._origin

    def lap(self, step: str) -> None:
        now = time.perf_counter()
        self._timings[step] = round((now - self._last) * 1000, 2)
        self._last = now

    def total(self) -> None:
        self._timings["total"] = round((time.perf_counter() - self._origin) * 1000, 2)


# base64url (RFC 4648, section 5) uses '-' and '_' where base64 uses '+' and '/'.
_URLSAFE_TO_STANDARD = str.maketrans("-_", "+/")


def decode_claims(jwt: str) -> dict[str, Any]:
    """Return a JWT's payload without verifying it; {} if it is malformed.

    agent-exec only reports these claims: Vault verifies the signature.
    """
    import binascii  # what base64 runs, without base64's own imports

    try:
        payload = jwt.split(".")[1].translate(_URLSAFE_TO_STANDARD)
        decoded = loads(binascii.a2b_base64(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}
    return decoded if isinstance(decoded, dict) else {}


def _iso8601(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))
