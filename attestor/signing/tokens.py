"""JWT claims for an attested process, and their signing.

Top-level attested facts are strings ("1001", not 1001) because Vault's
`claim_mappings` fail the whole login on a non-string value. The `process`
object repeats them with the full detail, every scalar a string as well, so
that a JSON-pointer mapping such as `/process/cwd` also works. What the caller
asserts about the call goes under `asserted` and nowhere else.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt

from attestor.inspection.process import (
    AncestorInfo,
    AttestationError,
    ProcessInfo,
    ScriptInfo,
)
from attestor.policy.agents import Agent
from attestor.protocol import ASSERTED_KEYS, MAX_ASSERTED_CHARS, ErrorCode
from attestor.signing.keyring import KeyRing


@dataclass(frozen=True)
class IssuedJWT:
    """A signed token and the facts the decision log records about it."""

    token: str
    jti: str
    expires_at: int
    kid: str


class TokenIssuer:
    """Builds and signs the JWT for a process that matched an agent."""

    def __init__(
        self,
        keyring: KeyRing,
        *,
        issuer: str,
        host: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keyring = keyring
        self.issuer = issuer
        self.host = host
        self.clock = clock

    def issue(
        self, process: ProcessInfo, agent: Agent, asserted: dict[str, str]
    ) -> IssuedJWT:
        now = int(self.clock())
        jti = str(uuid.uuid4())
        claims = build_claims(
            process, agent, issuer=self.issuer, host=self.host, now=now, jti=jti
        )
        if asserted:
            claims["asserted"] = asserted

        key = self.keyring.signing_key()
        token = jwt.encode(
            claims, key.private_key, algorithm=key.algorithm, headers={"kid": key.kid}
        )
        self.keyring.record_issued(key, claims["exp"])
        return IssuedJWT(token=token, jti=jti, expires_at=claims["exp"], kid=key.kid)


def build_claims(
    process: ProcessInfo, agent: Agent, *, issuer: str, host: str, now: int, jti: str
) -> dict[str, Any]:
    audience: str | list[str] = (
        # RFC 7519 allows a single string, which is what most verifiers expect.
        agent.audience[0] if len(agent.audience) == 1 else list(agent.audience)
    )
    return {
        "iss": issuer,
        "sub": agent.name,
        "aud": audience,
        "exp": now + agent.ttl,
        "nbf": now,
        "iat": now,
        "jti": jti,
        "host": host,
        "agent": agent.name,
        "pid": str(process.pid),
        "uid": str(process.uid),
        "gid": str(process.gid),
        "user": process.user,
        "exe": process.exe,
        "exe_sha256": process.exe_sha256 or "",
        "exe_deleted": _flag(process.exe_deleted),
        "process": process_claim(process),
    }


def process_claim(process: ProcessInfo) -> dict[str, Any]:
    """Return the full attested detail, every scalar as a string."""
    claim: dict[str, Any] = {
        "pid": str(process.pid),
        "ppid": str(process.ppid),
        "uid": str(process.uid),
        "gid": str(process.gid),
        "user": process.user,
        "groups": [str(group) for group in process.groups],
        "exe": process.exe,
        "exe_sha256": process.exe_sha256 or "",
        "exe_deleted": _flag(process.exe_deleted),
        "cmdline": list(process.cmdline),
        "cmdline_truncated": _flag(process.cmdline_truncated),
        "cwd": process.cwd,
        "start_time": str(process.start_time),
        "parents": [_ancestor_claim(ancestor) for ancestor in process.parents],
    }
    if process.script is not None:
        claim["script"] = _script_claim(process.script)
    return claim


def validate_asserted(raw: object) -> dict[str, str]:
    """Return the caller's assertions, or raise AttestationError (`bad_request`)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise _bad_request(
            f"'asserted' must be a JSON object, got {type(raw).__name__}"
        )
    unknown = sorted(set(raw) - set(ASSERTED_KEYS))
    if unknown:
        raise _bad_request(
            f"'asserted' has unknown key {unknown[0]!r}; use {', '.join(ASSERTED_KEYS)}"
        )

    asserted: dict[str, str] = {}
    for key, value in raw.items():
        if value is None:
            continue
        if not isinstance(value, str) or not value or len(value) > MAX_ASSERTED_CHARS:
            raise _bad_request(
                f"asserted.{key} must be a string of 1 to {MAX_ASSERTED_CHARS} "
                "characters"
            )
        if not value.isprintable():
            raise _bad_request(
                f"asserted.{key} contains control characters; send printable text only"
            )
        asserted[key] = value
    return asserted


def _ancestor_claim(ancestor: AncestorInfo) -> dict[str, Any]:
    claim: dict[str, Any] = {
        "pid": str(ancestor.pid),
        "uid": str(ancestor.uid),
        "exe": ancestor.exe,
        "exe_sha256": ancestor.exe_sha256 or "",
    }
    if ancestor.script is not None:
        claim["script"] = _script_claim(ancestor.script)
    return claim


def _script_claim(script: ScriptInfo) -> dict[str, str]:
    claim = {"kind": script.kind, "path": script.path, "sha256": script.sha256 or ""}
    if script.error:
        claim["error"] = script.error
    return claim


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _bad_request(message: str) -> AttestationError:
    return AttestationError(ErrorCode.BAD_REQUEST, message)
