"""A small Vault HTTP API client for the applier (urllib, JSON bodies).

The token travels only in the X-Vault-Token header; error messages carry
Vault's own error text and the request path, never the token or a body.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from devstack.tfapply_errors import TfApplyError, VaultAPIError

log = logging.getLogger(__name__)


class VaultClient:
    def __init__(self, addr: str, token: str, *, timeout: float = 120.0) -> None:
        parsed = urllib.parse.urlsplit(addr)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise TfApplyError(
                f"invalid Vault address {addr!r}: expected http(s)://host:port"
            )
        if not token:
            raise TfApplyError("no Vault token: set VAULT_TOKEN or pass token=")
        self.addr = addr.rstrip("/")
        self.token = token
        self.timeout = timeout

    def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        query: dict[str, str] | None = None,
    ) -> dict[str, Any] | None:
        """Send one request; return the decoded JSON response, None if empty."""
        url = f"{self.addr}/v1/{path.strip('/')}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(  # noqa: S310 - scheme checked in __init__
            url,
            data=data,
            method=method,
            headers={"X-Vault-Token": self.token, "Content-Type": "application/json"},
        )
        log.debug("vault %s %s", method, path)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                raw = response.read()
        except urllib.error.HTTPError as err:
            raise VaultAPIError(method, path, err.code, _error_detail(err)) from err
        except (urllib.error.URLError, OSError) as err:
            raise TfApplyError(
                f"Vault {method} {path} failed: cannot reach {self.addr}: {err}"
            ) from err
        return json.loads(raw) if raw.strip() else None

    def read(
        self, path: str, *, query: dict[str, str] | None = None
    ) -> dict[str, Any] | None:
        """GET `path`; return None when Vault returns 404."""
        try:
            return self.request("GET", path, query=query)
        except VaultAPIError as err:
            if err.status == 404:
                return None
            raise

    def write(self, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        return self.request("POST", path, body)

    def put(self, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        return self.request("PUT", path, body)

    def delete(self, path: str, *, query: dict[str, str] | None = None) -> None:
        """DELETE `path`; a path that is already gone counts as deleted."""
        try:
            self.request("DELETE", path, query=query)
        except VaultAPIError as err:
            if err.status != 404:
                raise
            log.debug("vault DELETE %s: already gone", path)

    def mount_table(self, kind: str) -> dict[str, Any]:
        """Return `sys/mounts` or `sys/auth` (or `sys/audit`) keyed by "path/"."""
        response = self.read(f"sys/{kind}") or {}
        table = response.get("data", response)
        return table if isinstance(table, dict) else {}


def _error_detail(err: urllib.error.HTTPError) -> str:
    raw = err.read().decode(errors="replace").strip()
    try:
        errors = json.loads(raw).get("errors")
    except (ValueError, AttributeError):
        return raw[:500] or err.reason
    if isinstance(errors, list) and errors:
        return "; ".join(str(error) for error in errors)
    return raw[:500]
