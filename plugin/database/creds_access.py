"""The checks of a creds read: the role, its connection config and the caller.

A creds read makes four calls to Vault before it may touch the database:
the role, the role's config, the JWT mount's accessor and the caller's
entity. They are independent but for the config, whose name the role
stores, so three of them run on I/O threads while the request thread
reads the accessor. The config is loaded from storage on every request,
and only its name is guessed from the previous read of the role, so a
changed role costs one more round trip, never a stale config.
"""

from __future__ import annotations

from plugin.database.backend import DatabaseBackend
from plugin.database.config import DatabaseConfig, load_config, require_config
from plugin.database.errors import RoleNotAllowedError
from plugin.database.roles import RoleEntry, require_role
from plugin.identity import Caller, check_allowed, identify_caller
from plugin.logical import LogicalError, Request


class AccessCheck:
    """Loads what a creds read needs and checks the caller may have it."""

    def __init__(self, backend: DatabaseBackend) -> None:
        self.backend = backend
        # Role name -> the db_name it had when last read; a guess, not a cache.
        self._config_names: dict[str, str] = {}

    def check(
        self, request: Request, role_name: str
    ) -> tuple[RoleEntry, DatabaseConfig, Caller]:
        """Return the role, its config and the caller, or raise the failed check.

        Errors come in the documented order: unknown role, caller not an
        agent or not allowed, unknown config, role not allowed by the config.
        """
        storage = request.storage
        system = self.backend.prefetch_entity(request.entity_id)
        role_loading = self.backend.submit(require_role, storage, role_name)
        guess = self._config_names.get(role_name, "")
        config_loading = (
            self.backend.submit(load_config, storage, guess) if guess else None
        )
        try:
            caller = identify_caller(request, system)
        except LogicalError:
            role_loading.result()  # an unknown role is reported first
            raise
        role = role_loading.result()
        check_allowed(caller, role.allowed_agents, role_name)
        self._config_names[role_name] = role.db_name
        if config_loading is not None and guess == role.db_name:
            config = config_loading.result()
        else:
            config = load_config(storage, role.db_name)
        if config is None:
            config = require_config(storage, role.db_name)
        if not config.allows_role(role_name):
            raise RoleNotAllowedError(
                f"role {role_name!r} is not in allowed_roles of config "
                f"{role.db_name!r}: add it there"
            )
        return role, config, caller
