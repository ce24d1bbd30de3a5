"""A minimal Vault HTTP client for the stack's set-up steps."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from devstack.procs import StackError


class Vault:
    def __init__(self, addr: str, token: str) -> None:
        self.addr = addr.rstrip("/")
        self.token = token

    def request(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(  # noqa: S310 - the address is the stack's own
            f"{self.addr}/v1/{path}",
            data=data,
            method=method,
            headers={"X-Vault-Token": self.token, "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:  # noqa: S310
                raw = resp.read()
        except urllib.error.HTTPError as err:
            detail = err.read().decode(errors="replace").strip()
            raise StackError(
                f"Vault {method} {path} failed ({err.code}): {detail}"
            ) from err
        return json.loads(raw) if raw else None

    def write(self, path: str, body: dict[str, Any]) -> Any:
        return self.request("POST", path, body)

    def read(self, path: str) -> Any:
        return self.request("GET", path)
