"""The Vault requests of one agent-exec call, over `attestor.agent_exec.http`.

Each method is one Vault API path. An unreachable Vault, a 5xx or 429
status, or a 4xx status other than 400 and 403 raises `UnavailableError`.
A 403 raises `DeniedError` and a 400 `UsageError`, except that a rejected
JWT login is a `DeniedError`. The message names the path and carries
Vault's own errors, which never contain the token. Redirects, as an HA
standby sends them, are followed.
"""

from __future__ import annotations

from attestor.agent_exec.errors import (
    DeniedError,
    ExecError,
    UnavailableError,
    UsageError,
)
from attestor.agent_exec.http import HttpConnection, HttpError, HttpResponse
from attestor.agent_exec.logs import get_logger
from attestor.agent_exec.urls import quote
from attestor.json_lite import dumps, loads

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

log = get_logger(__name__)

# An HA standby may return a redirect (307) to the active node. The request
# is then sent again there, with the same method, body and token.
REDIRECTS = frozenset({301, 302, 307, 308})
MAX_REDIRECTS = 3
NOT_VAULT_HINT = (
    "check that --vault-addr (or VAULT_ADDR) is the address of Vault or OpenBao"
)


class VaultStatusError(ExecError):
    """A 4xx response: `status` is its HTTP status, `detail` Vault's errors."""

    def __init__(self, message: str, status: int, detail: str) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


class VaultRequestError(VaultStatusError, DeniedError):
    """Vault denied a request (403, or a JWT login that it rejected)."""


class VaultInvalidRequestError(VaultStatusError, UsageError):
    """Vault rejected a request's values as invalid (400)."""


class VaultUnexpectedStatusError(VaultStatusError, UnavailableError):
    """A 4xx other than 400 and 403, such as 404, or one without Vault's errors."""


class Login:
    """The token a JWT login returned; `token` is the secret part."""

    __slots__ = ("accessor", "metadata", "policies", "renewable", "token", "ttl")

    def __init__(
        self,
        *,
        token: str,
        accessor: str,
        ttl: int,
        renewable: bool,
        policies: tuple[str, ...],
        metadata: dict[str, str],
    ) -> None:
        self.token = token
        self.accessor = accessor
        self.ttl = ttl
        self.renewable = renewable
        self.policies = policies
        self.metadata = metadata

    def __repr__(self) -> str:
        return f"Login(accessor={self.accessor!r}, ttl={self.ttl})"  # no token


class Lease:
    """A leased secret read from a creds path; `data` holds the credential."""

    __slots__ = ("data", "lease_id", "renewable", "ttl")

    def __init__(
        self, *, lease_id: str, ttl: int, renewable: bool, data: dict[str, Any]
    ) -> None:
        self.lease_id = lease_id
        self.ttl = ttl
        self.renewable = renewable
        self.data = data

    def __repr__(self) -> str:
        return f"Lease(lease_id={self.lease_id!r}, ttl={self.ttl})"  # no secrets


class VaultClient:
    """Vault's HTTP API for one token; one connection, not thread-safe."""

    def __init__(
        self, addr: str, *, token: str = "", namespace: str = "", timeout: float = 10.0
    ) -> None:
        try:
            self._http = HttpConnection(addr, timeout=timeout)
        except HttpError as err:
            raise ExecError(str(err)) from err
        self.addr = addr
        self.token = token
        self._namespace = namespace

    def preconnect(self) -> None:
        """Open the connection ahead of the first request.

        A failure is only logged: the first request connects again and
        reports it.
        """
        try:
            self._http.connect()
        except HttpError as err:
            log.debug("connecting ahead of the first request failed: %s", err)

    def close(self) -> None:
        self._http.close()

    def copy(self) -> VaultClient:
        """Return a client with the same token on a connection of its own."""
        return VaultClient(self.addr, token=self.token, namespace=self._namespace)

    def login_jwt(
        self,
        mount: str,
        role: str,
        jwt: str,
        *,
        meanwhile: Callable[[], None] | None = None,
    ) -> Login:
        """Log in with `jwt`; `meanwhile` runs while Vault checks it."""
        path = f"auth/{mount}/login"
        try:
            body = self._call("POST", path, {"role": role, "jwt": jwt}, meanwhile)
        except (VaultInvalidRequestError, VaultRequestError) as err:
            # Vault's JWT auth method returns 400 for a JWT or a JWT role that
            # it rejects ("error validating token", "role ... could not be
            # found"), so a 400 here is a denial, not a usage error.
            raise VaultRequestError(
                f"Vault rejected POST {path}: {err.detail}; check --auth-mount "
                f"(the JWT auth mount, now {mount!r}), that it has a role "
                f"named {role!r} for this agent, and that the mount's "
                "jwks_url or keys are the attestor's",
                err.status,
                err.detail,
            ) from err
        auth = body.get("auth") or {}
        if not auth.get("client_token"):
            raise UnavailableError(
                f"the response of {self._http.base_url} to auth/{mount}/login has "
                f"no token; {NOT_VAULT_HINT}"
            )
        self.token = auth["client_token"]
        return Login(
            token=auth["client_token"],
            accessor=auth.get("accessor", ""),
            ttl=int(auth.get("lease_duration", 0)),
            renewable=bool(auth.get("renewable", False)),
            policies=tuple(auth.get("policies") or ()),
            metadata=dict(auth.get("metadata") or {}),
        )

    def capabilities(
        self, paths: list[str], *, meanwhile: Callable[[], None] | None = None
    ) -> dict[str, list[str]]:
        """Return this token's capabilities on each path; mints nothing."""
        body = self._call("POST", "sys/capabilities-self", {"paths": paths}, meanwhile)
        data = body.get("data") or body
        return {path: list(data.get(path) or []) for path in paths}

    def read_creds(
        self,
        path: str,
        params: dict[str, str] | None = None,
        *,
        meanwhile: Callable[[], None] | None = None,
    ) -> Lease:
        """Read a creds path; `meanwhile` runs while the secrets engine works."""
        query = "".join(
            f"{'&' if i else '?'}{quote(k)}={quote(v)}"
            for i, (k, v) in enumerate((params or {}).items())
        )
        body = self._call("GET", path + query, None, meanwhile)
        return Lease(
            lease_id=body.get("lease_id", ""),
            ttl=int(body.get("lease_duration", 0)),
            renewable=bool(body.get("renewable", False)),
            data=dict(body.get("data") or {}),
        )

    def renew_self(self, increment: int) -> int:
        """Renew the token; return its new TTL in seconds."""
        body = self._call("POST", "auth/token/renew-self", {"increment": increment})
        return int((body.get("auth") or {}).get("lease_duration", 0))

    def renew_lease(self, lease_id: str, increment: int) -> int:
        """Renew a lease; return its new TTL in seconds."""
        body = self._call(
            "PUT", "sys/leases/renew", {"lease_id": lease_id, "increment": increment}
        )
        return int(body.get("lease_duration", 0))

    def revoke_lease(
        self, lease_id: str, *, meanwhile: Callable[[], None] | None = None
    ) -> None:
        """Revoke a lease and wait for the secrets engine's revoke to finish.

        The path form lets a policy grant revocation per creds path, and its
        `sync` field defaults to true; a failed engine revoke returns 400.
        """
        self._call("PUT", f"sys/leases/revoke/{lease_id}", {"sync": True}, meanwhile)

    def lease_exists(self, lease_id: str) -> bool:
        """Look the lease up; a 400 means that Vault no longer tracks it.

        After a revoke, the 400 ("invalid lease": revoked or expired) is the
        expected response, so it is logged as the confirmation, not as a
        rejected request.
        """
        method, path = "PUT", "sys/leases/lookup"
        response = self._exchange(method, path, {"lease_id": lease_id})
        if response.status == 400:
            body = _load(self._http.base_url, method, path, response)
            log.debug(
                "lease %s is gone, as expected: Vault's lookup returned 400 (%s)",
                lease_id,
                _error_detail(response.status, body),
            )
            return False
        _decode(self._http.base_url, method, path, response)
        return True

    def revoke_self(self, *, meanwhile: Callable[[], None] | None = None) -> None:
        """Revoke the token; Vault then revokes its remaining leases itself."""
        self._call("POST", "auth/token/revoke-self", None, meanwhile)

    def _call(
        self,
        method: str,
        path: str,
        payload: dict[str, Any] | None = None,
        meanwhile: Callable[[], None] | None = None,
    ) -> Any:
        response = self._exchange(method, path, payload, meanwhile)
        return _decode(self._http.base_url, method, path, response)

    def _exchange(
        self,
        method: str,
        path: str,
        payload: dict[str, Any] | None = None,
        meanwhile: Callable[[], None] | None = None,
    ) -> HttpResponse:
        """Send a request, following redirects; return the final response."""
        headers = {"X-Vault-Request": "true", "Accept": "application/json"}
        if self.token:
            headers["X-Vault-Token"] = self.token
        if self._namespace:
            headers["X-Vault-Namespace"] = self._namespace
        body = None
        if payload is not None:
            headers["Content-Type"] = "application/json"
            body = dumps(payload).encode()

        target = f"/v1/{path}"
        for _ in range(MAX_REDIRECTS + 1):
            response = self._send(method, target, headers, body, meanwhile)
            meanwhile = None
            if response.status not in REDIRECTS or not response.location:
                return response
            target = self._follow(response.location)
        raise UnavailableError(
            f"Vault redirected {method} {path} more than {MAX_REDIRECTS} times"
        )

    def _send(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        body: bytes | None,
        meanwhile: Callable[[], None] | None,
    ) -> HttpResponse:
        try:
            return self._http.request(method, target, headers, body, meanwhile)
        except HttpError as err:
            raise self._unreachable(err) from err

    def _unreachable(self, err: HttpError) -> UnavailableError:
        return UnavailableError(
            f"cannot reach Vault at {self._http.base_url}: {err}; check "
            "--vault-addr (or VAULT_ADDR) and that the server is running "
            "and unsealed"
        )

    def _follow(self, location: str) -> str:
        """Point this client at a redirect's origin; return the request target."""
        from urllib.parse import urlsplit  # imported here: redirects are rare

        parts = urlsplit(location)
        if parts.scheme and parts.netloc:
            origin = f"{parts.scheme}://{parts.netloc}"
            # As Vault's own client does: the token never follows a redirect
            # from https to plain http.
            if self._http.base_url.startswith("https:") and parts.scheme != "https":
                raise UnavailableError(
                    f"Vault at {self._http.base_url} redirected to {origin}, "
                    "which would send the token without TLS; check the active "
                    "node's api_addr, which must be an https address"
                )
            log.info("vault redirected to %s", origin)
            self._http.close()
            try:
                self._http = HttpConnection(origin, timeout=self._http.timeout)
            except HttpError as err:
                raise UnavailableError(f"invalid Vault redirect: {err}") from err
        return parts.path + (f"?{parts.query}" if parts.query else "")


def _tidy(error: object) -> str:
    """Flatten Go's multierror text ("1 error occurred:\n\t* permission denied")."""
    lines = [line.strip(" \t*") for line in str(error).splitlines()]
    return "; ".join(line for line in lines if line and not _is_multierror_head(line))


def _is_multierror_head(line: str) -> bool:
    """Tell whether `line` reads "N error occurred:" or "N errors occurred:"."""
    count, _, rest = line.partition(" ")
    return count.isdigit() and rest in ("error occurred:", "errors occurred:")


def _load(addr: str, method: str, path: str, response: HttpResponse) -> Any:
    """Parse a response body; an empty body is an empty object."""
    try:
        return loads(response.body) if response.body else {}
    except ValueError as err:
        raise UnavailableError(
            f"the response of {addr} to {method} {path} is not JSON (status "
            f"{response.status}); {NOT_VAULT_HINT}"
        ) from err


def _error_detail(status: int, body: Any) -> str:
    """Join the `errors` of an error response, or name its status."""
    errors = body.get("errors") if isinstance(body, dict) else None
    return "; ".join(_tidy(e) for e in errors) if errors else f"status {status}"


def _decode(addr: str, method: str, path: str, response: HttpResponse) -> Any:
    path = path.split("?", 1)[0]
    body = _load(addr, method, path, response)
    status = response.status
    if status < 400:
        return body if isinstance(body, dict) else {}

    detail = _error_detail(status, body)
    log.debug("vault %s %s returned %d: %s", method, path, status, detail)
    if status >= 500 or status == 429:
        raise UnavailableError(f"Vault failed {method} {path}: {detail}")
    raise _client_error(addr, f"{method} {path}", status, body, detail)


def _client_error(
    addr: str, request: str, status: int, body: Any, detail: str
) -> VaultStatusError:
    """Return the error for a 4xx response to `request` ("METHOD path").

    Vault's error responses carry an `errors` list (checked for 400, 403
    and 404 on OpenBao 2.7.2), so a 4xx without one comes from another
    server.
    """
    if not (isinstance(body, dict) and isinstance(body.get("errors"), list)):
        return VaultUnexpectedStatusError(
            f"the response of {addr} to {request} has status {status} and no "
            f"Vault errors; {NOT_VAULT_HINT}",
            status,
            detail,
        )
    if status == 403:
        return VaultRequestError(f"Vault rejected {request}: {detail}", status, detail)
    if status == 400:
        return VaultInvalidRequestError(
            f"Vault rejected {request} as invalid: {detail}; check the option or "
            "role value that the error names",
            status,
            detail,
        )
    return VaultUnexpectedStatusError(
        f"Vault returned status {status} to {request}: {detail}; check "
        "VAULT_NAMESPACE, --auth-mount and --mount, and "
        f"{NOT_VAULT_HINT}",
        status,
        detail,
    )
