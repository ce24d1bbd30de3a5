"""Stand-ins for Vault's HTTP API and the attestor socket, for agent-exec's unit tests.

They implement only what agent-exec calls, with the response shapes that
OpenBao 2.7 and the attestor's socket protocol use, and record every request
so a test can check what was minted and revoked. The end-to-end tests run
against the real stack instead.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import socketserver
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

MOUNT = "agent-creds"


def make_jwt(claims: dict[str, Any]) -> str:
    """Return an unsigned JWT-shaped string; the fake Vault never verifies it."""

    def part(value: dict[str, Any]) -> str:
        raw = base64.urlsafe_b64encode(json.dumps(value).encode())
        return raw.rstrip(b"=").decode()

    return f"{part({'alg': 'ES256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


@dataclass
class VaultState:
    """What the fake Vault allows, and what it has seen."""

    readable: set[str] = field(default_factory=set)  # creds paths under MOUNT
    plugin_denies: set[str] = field(default_factory=set)
    # Creds paths that the policy grants but whose role the plugin lacks (400).
    missing_roles: set[str] = field(default_factory=set)
    namespaces: set[str] = field(default_factory=set)  # others return 404
    failing_revokes: set[str] = field(default_factory=set)  # "*" fails them all
    failing_token_revoke: bool = False  # auth/token/revoke-self returns 500
    revoke_delay: float = 0.0  # seconds each lease revocation takes
    redirect_to: str = ""  # an address to send every request to, as a standby
    token_ttl: int = 120
    lease_ttl: int = 300
    tokens: dict[str, str] = field(default_factory=dict)  # live token -> accessor
    issued_tokens: list[str] = field(default_factory=list)
    leases: dict[str, str] = field(default_factory=dict)  # lease_id -> token
    requests: list[tuple[str, str]] = field(default_factory=list)
    revoked_leases: list[str] = field(default_factory=list)
    revoked_tokens: list[str] = field(default_factory=list)
    renewals: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def minted(self) -> list[str]:
        return [
            path
            for method, path in self.requests
            if method == "GET" and "/creds/" in path
        ]

    def live_leases(self) -> list[str]:
        with self.lock:
            return list(self.leases)


class _VaultHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: VaultState

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def _dispatch(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else {}
        if self.state.redirect_to:
            self.state.requests.append((method, self.path.removeprefix("/v1/")))
            self.send_response(307)
            self.send_header("Location", self.state.redirect_to + self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path = self.path.split("?", 1)[0].removeprefix("/v1/")
        token = self.headers.get("X-Vault-Token", "")
        namespace = self.headers.get("X-Vault-Namespace", "")
        with self.state.lock:
            self.state.requests.append((method, path))
            if namespace and namespace not in self.state.namespaces:
                status, payload = 404, {"errors": ["namespace not found"]}
            else:
                status, payload = self._route(method, path, body, token)
        data = json.dumps(payload).encode() if payload is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _route(
        self, method: str, path: str, body: dict[str, Any], token: str
    ) -> tuple[int, Any]:
        if path == "auth/jwt/login":
            return self._login(body)
        if token not in self.state.tokens:
            return _error(403, "permission denied")
        if "/creds/" in path and method == "GET":
            return self._read_creds(path, token)
        if path.startswith("sys/leases/revoke/"):
            return self._revoke_lease(path.removeprefix("sys/leases/revoke/"))
        handler = {
            "sys/capabilities-self": self._capabilities,
            "sys/leases/lookup": self._lookup,
            "sys/leases/renew": self._renew_lease,
            "auth/token/renew-self": self._renew_self,
            "auth/token/revoke-self": self._revoke_self,
        }.get(path)
        if handler is None:
            return _error(404, f"no handler for route {path!r}")
        return handler(body, token)

    def _capabilities(self, body: dict[str, Any], token: str) -> tuple[int, Any]:
        readable = self.state.readable
        caps = {
            p: ["read"] if _creds(p) in readable else ["deny"] for p in body["paths"]
        }
        return 200, {**caps, "data": caps}

    def _lookup(self, body: dict[str, Any], token: str) -> tuple[int, Any]:
        if body["lease_id"] not in self.state.leases:
            return _error(400, "invalid lease")
        return 200, {"data": {"id": body["lease_id"]}}

    def _renew_lease(self, body: dict[str, Any], token: str) -> tuple[int, Any]:
        self.state.renewals.append(body["lease_id"])
        return 200, {
            "lease_id": body["lease_id"],
            "lease_duration": self.state.lease_ttl,
        }

    def _renew_self(self, body: dict[str, Any], token: str) -> tuple[int, Any]:
        self.state.renewals.append("token")
        auth = {"client_token": token, "lease_duration": self.state.token_ttl}
        return 200, {"auth": auth}

    def _revoke_self(self, body: dict[str, Any], token: str) -> tuple[int, Any]:
        s = self.state
        if s.failing_token_revoke:
            return _error(500, "failed to revoke the token: the storage is unreachable")
        s.revoked_tokens.append(s.tokens.pop(token))
        for lease_id in [lid for lid, owner in s.leases.items() if owner == token]:
            del s.leases[lease_id]
        return 204, None

    def _login(self, body: dict[str, Any]) -> tuple[int, Any]:
        token, accessor = f"s.{uuid.uuid4().hex}", uuid.uuid4().hex[:24]
        self.state.tokens[token] = accessor
        self.state.issued_tokens.append(token)
        auth = {
            "client_token": token,
            "accessor": accessor,
            "lease_duration": self.state.token_ttl,
            "renewable": True,
            "policies": ["default", f"agent-{body['role']}"],
            "metadata": {"agent": body["role"]},
        }
        return 200, {"auth": auth}

    def _read_creds(self, path: str, token: str) -> tuple[int, Any]:
        s = self.state
        if _creds(path) not in s.readable:
            return _error(403, "permission denied")
        if _creds(path) in s.plugin_denies:
            return _error(403, "agent dev is not in allowed_agents of this role")
        if _creds(path) in s.missing_roles:
            name = path.rsplit("/", 1)[1]
            return 400, {"errors": [f"unknown role '{name}': write roles/{name} first"]}
        lease_id = f"{path}/{uuid.uuid4().hex[:24]}"
        s.leases[lease_id] = token
        if "/database/" in path:
            data = {
                "username": "v-dev-1",
                "password": "p@ss/w:rd",
                "host": "127.0.0.1",
                "port": 5432,
                "database": "demo",
            }
        else:
            data = {
                "access_key": "AKIAFAKE",
                "secret_key": "fake/secret",
                "session_token": None,
                "region": "eu-west-1",
                "endpoint_url": "http://127.0.0.1:1",
            }
        return 200, {
            "lease_id": lease_id,
            "lease_duration": s.lease_ttl,
            "renewable": True,
            "data": data,
        }

    def _revoke_lease(self, lease_id: str) -> tuple[int, Any]:
        s = self.state
        time.sleep(s.revoke_delay)
        if lease_id in s.failing_revokes or "*" in s.failing_revokes:
            return _error(400, "failed to revoke: the database is unreachable")
        s.leases.pop(lease_id, None)
        s.revoked_leases.append(lease_id)
        return 204, None


def _creds(path: str) -> str:
    return path.removeprefix(f"{MOUNT}/")


def _error(status: int, message: str) -> tuple[int, Any]:
    return status, {"errors": [f"1 error occurred:\n\t* {message}\n\n"]}


@contextmanager
def fake_vault(state: VaultState) -> Iterator[str]:
    """Serve `state` on 127.0.0.1; yield the address."""
    handler = type("Handler", (_VaultHandler,), {"state": state})
    with serve_http(handler) as address:
        yield address


@contextmanager
def serve_http(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve `handler` on a free port of 127.0.0.1; yield the address."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@dataclass
class AttestorState:
    agent: str = "dev"
    failure: str = ""  # an error code to return instead of a token
    delay: float = 0.0  # seconds before each response
    requests: list[dict[str, Any]] = field(default_factory=list)
    issued: list[str] = field(default_factory=list)  # the JWTs returned
    jtis: list[str] = field(default_factory=list)


class _AttestorHandler(socketserver.StreamRequestHandler):
    state: AttestorState

    def handle(self) -> None:
        request = json.loads(self.rfile.readline())
        self.state.requests.append(request)
        time.sleep(self.state.delay)
        if self.state.failure:
            reply = {
                "ok": False,
                "code": self.state.failure,
                "error": "no agent matches",
            }
        else:
            reply = self._token(request)
        self.wfile.write(json.dumps(reply).encode() + b"\n")

    def _token(self, request: dict[str, Any]) -> dict[str, Any]:
        jti = str(uuid.uuid4())
        creds = self.request.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
        pid = int.from_bytes(creds[:4], "little")
        claims = {
            "sub": self.state.agent,
            "agent": self.state.agent,
            "jti": jti,
            "uid": str(os.getuid()),
            "exe": os.readlink(f"/proc/{pid}/exe"),
            "asserted": request.get("asserted", {}),
        }
        token = make_jwt(claims)
        self.state.issued.append(token)
        self.state.jtis.append(jti)
        return {
            "ok": True,
            "token": token,
            "agent": self.state.agent,
            "jti": jti,
            "expires_at": 2_000_000_000,
        }


@contextmanager
def fake_attestor(state: AttestorState, directory: Path) -> Iterator[str]:
    """Serve `state` on a Unix socket in `directory`; yield its path."""
    path = str(directory / "attestor.sock")
    handler = type("Handler", (_AttestorHandler,), {"state": state})
    server = socketserver.ThreadingUnixStreamServer(path, handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield path
    finally:
        server.shutdown()
        server.server_close()
