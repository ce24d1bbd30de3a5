"""The checks of a creds read: the role, its connection config and the caller.

A creds read needs four entries from Vault before it may touch the
database: the role, the role's config, the JWT mount's accessor and the
caller's entity. The first three come from the mount's storage cache
(`cached_storage` of the extensions), so they cost a round trip only after
a write. The entity is fetched on every request, because its alias
metadata changes at each login.
"""

from __future__ import annotations

from plugin.database.backend import DatabaseBackend
from plugin.database.config import DatabaseConfig, require_config
from plugin.database.errors import RoleNotAllowedError
from plugin.database.roles import RoleEntry, require_role
from plugin.identity import Caller, check_allowed, identify_caller
from plugin.logical import Request


class AccessCheck:
    """Loads what a creds read needs and checks the caller may have it."""

    def __init__(self, backend: DatabaseBackend) -> None:
        self.backend = backend

    def check(
        self, request: Request, role_name: str
    ) -> tuple[RoleEntry, DatabaseConfig, Caller]:
        """Return the role, its config and the caller, or raise the failed check.

        Errors come in the documented order: unknown role, caller not an
        agent or not allowed, unknown config, role not allowed by the config.
        """
        role = require_role(request.storage, role_name)
        caller = identify_caller(request, self.backend.system)
        check_allowed(caller, role.allowed_agents, role_name)
        config = require_config(request.storage, role.db_name)
        if not config.allows_role(role_name):
            raise RoleNotAllowedError(
                f"role {role_name!r} is not in allowed_roles of config "
                f"{role.db_name!r}: add it there"
            )
        return role, config, caller
