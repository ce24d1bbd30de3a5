"""Log in to Vault's JWT auth with a token from the attestor.

The Vault CLI's default token helper reads the token from `~/.vault-token`;
`store_token` writes it there (mode 0600), so `bao`/`vault` commands run
afterwards use it.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

import hvac
import hvac.exceptions
import requests

logger = logging.getLogger(__name__)


class LoginError(Exception):
    """Vault rejected the login or could not be reached."""


@dataclass(frozen=True)
class VaultLogin:
    """The result of a JWT login; `repr` leaves the token out."""

    token: str = field(repr=False)
    accessor: str
    policies: tuple[str, ...]
    lease_duration: int
    renewable: bool
    metadata: dict[str, str]

    def public_fields(self) -> dict[str, Any]:
        return {
            "accessor": self.accessor,
            "policies": list(self.policies),
            "lease_duration": self.lease_duration,
            "renewable": self.renewable,
            "metadata": self.metadata,
        }


def vault_login(
    address: str,
    *,
    jwt: str,
    role: str,
    mount: str = "jwt",
    ca_cert: str | None = None,
    timeout: float = 10.0,
) -> VaultLogin:
    """POST the JWT to `auth/MOUNT/login` and return the issued Vault token."""
    client = hvac.Client(url=address, verify=ca_cert or True, timeout=timeout)
    try:
        # use_token=False: the caller decides where the token goes; hvac would
        # otherwise keep it on the client object.
        response = client.auth.jwt.jwt_login(
            role=role, jwt=jwt, path=mount, use_token=False
        )
    except hvac.exceptions.VaultError as err:
        if not isinstance(err.json, dict):
            # Vault sends every error response with a JSON body of `errors`.
            raise LoginError(
                f"the server at {address} is not Vault: it responded to the login "
                f"with {_status_text(err)} and no JSON error body; check "
                "--address or VAULT_ADDR"
            ) from err
        raise LoginError(
            f"Vault at {address} rejected the login to auth/{mount} as role "
            f"{role!r}: {_vault_message(err)}; check the role's bound claims "
            "and audience, and the mount's jwks_url"
        ) from err
    except requests.RequestException as err:
        raise LoginError(
            f"cannot reach Vault at {address}: {err}; check VAULT_ADDR"
        ) from err

    if not isinstance(response, dict):
        # hvac returns the raw response when a 2xx body is not JSON.
        raise LoginError(
            f"the server at {address} is not Vault: its login response is not "
            "JSON; check --address or VAULT_ADDR"
        )
    auth = response.get("auth") or {}
    try:
        return VaultLogin(
            token=auth["client_token"],
            accessor=auth.get("accessor", ""),
            policies=tuple(auth.get("policies") or ()),
            lease_duration=int(auth.get("lease_duration", 0)),
            renewable=bool(auth.get("renewable", False)),
            metadata=dict(auth.get("metadata") or {}),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise LoginError(
            f"Vault at {address} returned a login response without auth.client_token"
        ) from err


def store_token(token: str, path: str | None = None) -> str:
    """Write `token` where the Vault CLI's token helper reads it; return the path."""
    target = path or os.path.join(os.path.expanduser("~"), ".vault-token")
    directory = os.path.dirname(target) or "."
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=".vault-token.")
    try:
        # mkstemp creates the file with mode 0600, before the token is written.
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(token)
        os.replace(temporary, target)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    logger.debug("stored the Vault token in %s", target)
    return target


def _status_text(err: hvac.exceptions.VaultError) -> str:
    """Return the HTTP status behind one of hvac's per-status exceptions."""
    statuses = {
        hvac.exceptions.InvalidRequest: 400,
        hvac.exceptions.Unauthorized: 401,
        hvac.exceptions.Forbidden: 403,
        hvac.exceptions.InvalidPath: 404,
        hvac.exceptions.RateLimitExceeded: 429,
        hvac.exceptions.InternalServerError: 500,
        hvac.exceptions.VaultNotInitialized: 501,
        hvac.exceptions.BadGateway: 502,
        hvac.exceptions.VaultDown: 503,
    }
    status = statuses.get(type(err))
    return f"HTTP {status}" if status else "an HTTP error status"


def _vault_message(err: hvac.exceptions.VaultError) -> str:
    errors = getattr(err, "errors", None)
    if isinstance(errors, list) and errors:
        return "; ".join(str(item) for item in errors)
    return str(err) or type(err).__name__
