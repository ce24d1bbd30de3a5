"""Decide one request from a pinned peer: inspect, match an agent, sign.

Every decision is logged as one JSON line with the pid, executable, hash, and
the agent and jti or the rejection code and reason. The JWT itself is never
logged.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from attestor.inspection.inspector import Inspector, Peer
from attestor.inspection.process import AttestationError, ProcessInfo
from attestor.policy.agents import Agent, WrapperRule, select_agent
from attestor.protocol import ErrorCode, Op
from attestor.server.logs import RepeatFilter
from attestor.server.ratelimit import RateLimiter
from attestor.signing.tokens import TokenIssuer, process_claim, validate_asserted

logger = logging.getLogger(__name__)

Response = dict[str, Any]


@dataclass(frozen=True)
class Policy:
    """The reloadable part of the config: who gets tokens, and how often."""

    agents: tuple[Agent, ...]
    wrappers: WrapperRule
    limiter: RateLimiter


class Service:
    """Turns a request from a pinned peer into a response.

    `reload` re-reads the config and keys and returns None, or the reason it
    failed (the daemon then keeps the previous config).
    """

    def __init__(
        self,
        *,
        inspector: Inspector,
        issuer: TokenIssuer,
        policy: Policy,
        reload: Callable[[], str | None],
    ) -> None:
        self.inspector = inspector
        self.issuer = issuer
        self.policy = policy
        self.reload = reload
        self._quiet = RepeatFilter()

    def handle(self, peer: Peer, request: Any) -> Response:
        """Return the response to `request`; never raises for the caller's mistakes."""
        try:
            op = _parse_op(request)
            policy = self.policy
            # The limit applies before /proc is read, so a flood costs little.
            if not policy.limiter.allow(peer.uid):
                raise self._rate_limited(peer, policy.limiter)
            if op is Op.RELOAD:
                return self._reload(peer)
            if op is Op.INSPECT:
                return self._inspect(peer, policy)
            return self._issue(peer, policy, request.get("asserted"))
        except AttestationError as err:
            if err.code != ErrorCode.RATE_LIMITED or self._quiet.should_log(peer.uid):
                _log_rejection(peer, err)
            return {"ok": False, "code": err.code, "error": str(err)}

    def _issue(self, peer: Peer, policy: Policy, raw_asserted: object) -> Response:
        asserted = validate_asserted(raw_asserted)
        process = self.inspector.inspect(peer)
        try:
            agent = select_agent(policy.agents, policy.wrappers, process)
        except AttestationError as err:
            _log_rejection(peer, err, process)
            return {"ok": False, "code": err.code, "error": str(err)}

        issued = self.issuer.issue(process, agent, asserted)
        _log_decision(
            "token issued",
            process,
            decision="issued",
            agent=agent.name,
            jti=issued.jti,
            kid=issued.kid,
            expires_at=issued.expires_at,
            asserted=asserted,
        )
        return {
            "ok": True,
            "token": issued.token,
            "agent": agent.name,
            "jti": issued.jti,
            "expires_at": issued.expires_at,
        }

    def _inspect(self, peer: Peer, policy: Policy) -> Response:
        process = self.inspector.inspect(peer)
        response: Response = {
            "ok": True,
            "agent": None,
            "process": process_claim(process),
        }
        try:
            response["agent"] = select_agent(
                policy.agents, policy.wrappers, process
            ).name
        except AttestationError as err:
            response["code"] = err.code
            response["error"] = str(err)
        _log_decision(
            "identity inspected", process, decision="inspected", agent=response["agent"]
        )
        return response

    def _reload(self, peer: Peer) -> Response:
        if peer.uid not in (0, os.geteuid()):
            raise AttestationError(
                ErrorCode.BAD_REQUEST,
                f"reload is restricted to root and uid {os.geteuid()}; "
                f"uid {peer.uid} may send SIGHUP to the daemon only if it owns it",
            )
        logger.info("reload requested by pid %d uid %d", peer.pid, peer.uid)
        problem = self.reload()
        if problem is not None:
            raise AttestationError(ErrorCode.INTERNAL, problem)
        return {"ok": True}

    def _rate_limited(self, peer: Peer, limiter: RateLimiter) -> AttestationError:
        wait = limiter.retry_after(peer.uid)
        return AttestationError(
            ErrorCode.RATE_LIMITED,
            f"uid {peer.uid} exceeded {limiter.rate:g} tokens per second "
            f"(burst {limiter.burst}); retry in {wait:.2f} s",
        )


def _parse_op(request: Any) -> Op:
    if not isinstance(request, dict):
        raise AttestationError(
            ErrorCode.BAD_REQUEST, "the request must be a JSON object"
        )
    try:
        return Op(str(request.get("op")))
    except ValueError as err:
        known = ", ".join(op.value for op in Op)
        raise AttestationError(
            ErrorCode.BAD_REQUEST,
            f"unknown op {request.get('op')!r}; use one of {known}",
        ) from err


def _log_rejection(
    peer: Peer, err: AttestationError, process: ProcessInfo | None = None
) -> None:
    fields: dict[str, Any] = {
        "decision": "rejected",
        "code": err.code,
        "reason": str(err),
    }
    if process is None:
        fields.update(pid=peer.pid, uid=peer.uid)
        logger.warning("token rejected", extra={"fields": fields})
    else:
        _log_decision("token rejected", process, level=logging.WARNING, **fields)


def _log_decision(
    message: str, process: ProcessInfo, *, level: int = logging.INFO, **fields: Any
) -> None:
    facts = {
        "pid": process.pid,
        "uid": process.uid,
        "exe": process.exe,
        "exe_sha256": process.exe_sha256,
        "exe_deleted": process.exe_deleted,
    }
    if process.script is not None:
        facts["script"] = process.script.path
    logger.log(level, message, extra={"fields": {**facts, **fields}})
