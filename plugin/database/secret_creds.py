"""The `creds` secret type: renew and revoke a generated PostgreSQL user.

Revoke and renew requests carry no caller identity, and may arrive after
the role was deleted, so they work from the lease's `internal_data` alone,
plus the admin password of the stored connection config.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from plugin.database.backend import DatabaseBackend
from plugin.database.config import DatabaseConfig, load_config
from plugin.database.errors import ConfigNotFoundError
from plugin.database.leases import completion_key, forget_live
from plugin.database.postgres import renew_user, revoke_user
from plugin.framework import SecretType, extend_ttl, renewed
from plugin.logical import Request, Response

logger = logging.getLogger(__name__)

SECRET_TYPE_CREDS = "creds"  # noqa: S105 (a type name)


def expiration_text(timestamp: float) -> str:
    """Format a Unix time as PostgreSQL reads it in VALID UNTIL, in UTC."""
    return time.strftime("%Y-%m-%d %H:%M:%S+00", time.gmtime(timestamp))


class CredsSecret:
    """Revoke and renew handlers bound to one backend."""

    def __init__(self, backend: DatabaseBackend) -> None:
        self.backend = backend

    def secret_type(self) -> SecretType:
        return SecretType(SECRET_TYPE_CREDS, revoke=self.revoke, renew=self.renew)

    def revoke(self, request: Request) -> Response | None:
        internal = _internal(request)
        username, db_name = str(internal["username"]), str(internal["db_name"])
        config = _config_for(request, internal, "revoke")
        with self.backend.connection(
            db_name, config, internal.get("connection")
        ) as conn:
            existed = revoke_user(
                conn,
                username,
                statements=list(internal.get("revocation_statements") or []),
                owner_role=str(internal.get("owner_role") or ""),
            )
        # A revoke right after the mint may overtake the mint's deferred live
        # record, which would then outlive the user.
        self.backend.wait_deferred(completion_key(db_name, username))
        forget_live(request.storage, db_name, username)
        logger.info(
            "credential revoked: role=%s agent=%s username=%s token_accessor=%s "
            "existed=%s",
            internal.get("role"),
            internal.get("agent"),
            username,
            internal.get("token_accessor", ""),
            existed,
        )
        return None

    def renew(self, request: Request) -> Response:
        internal = _internal(request)
        username, db_name = str(internal["username"]), str(internal["db_name"])
        lease = request.secret.lease if request.secret else None
        ttl = extend_ttl(
            increment=lease.increment if lease else 0,
            default_ttl=int(internal.get("default_ttl") or 0),
            max_ttl=int(internal.get("max_ttl") or 0),
            issue_time=lease.issue_time if lease else 0.0,
        )
        config = _config_for(request, internal, "renew")
        expiration = expiration_text(time.time() + ttl + 5)
        with self.backend.connection(
            db_name, config, internal.get("connection")
        ) as conn:
            renew_user(
                conn, username, expiration, list(internal.get("renew_statements") or [])
            )
        logger.info(
            "credential renewed: role=%s username=%s ttl=%d",
            internal.get("role"),
            username,
            ttl,
        )
        return renewed(request, ttl)


def _internal(request: Request) -> dict[str, Any]:
    if request.secret is None:
        raise ValueError("revoke and renew requests always carry their secret")
    return request.secret.internal_data


def _config_for(
    request: Request, internal: dict[str, Any], action: str
) -> DatabaseConfig:
    db_name, username = internal["db_name"], internal["username"]
    config = load_config(request.storage, db_name)
    if config is None:
        logger.error(
            "config missing: action=%s config=%s username=%s", action, db_name, username
        )
        raise ConfigNotFoundError(
            f"cannot {action} user {username!r}: database config {db_name!r} was "
            f"deleted; write database/config/{db_name} again so the plugin can "
            "reach the server, or drop the user by hand and force-revoke the lease"
        )
    return config
