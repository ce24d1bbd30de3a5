"""Connection configs (`database/config/<name>`): how to reach one PostgreSQL."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any

from plugin.database.errors import ConfigNotFoundError, InvalidConfigError
from plugin.framework import list_entries, load_entry, save_entry
from plugin.logical import Storage

PLUGIN_NAME = "postgresql-database-plugin"
SUPPORTED_PLUGINS = (PLUGIN_NAME,)
PASSWORD_AUTHENTICATIONS = ("password", "scram-sha-256")
CONFIG_PREFIX = "database/config/"
DEFAULT_PORT = 5432
DEFAULT_MAX_OPEN_CONNECTIONS = 4
# PostgreSQL's and Vault's iteration count for SCRAM-SHA-256 verifiers.
DEFAULT_SCRAM_ITERATIONS = 4096
# Connection-string keys that must come from the config's own fields.
_RESERVED_PARAMS = ("password", "passfile", "sslpassword")


@dataclass
class DatabaseConfig:
    """One stored connection config; `password` never leaves the plugin."""

    plugin_name: str = PLUGIN_NAME
    plugin_version: str = ""
    verify_connection: bool = True
    allowed_roles: list[str] = field(default_factory=list)
    root_rotation_statements: list[str] = field(default_factory=list)
    password_policy: str = ""
    connection_url: str = ""
    username: str = ""
    password: str = ""
    max_open_connections: int = DEFAULT_MAX_OPEN_CONNECTIONS
    max_idle_connections: int = 0
    max_connection_lifetime: int = 0
    password_authentication: str = "password"  # noqa: S105 (a method name)
    username_template: str = ""
    disable_escaping: bool = False
    tls_ca: str = ""
    tls_certificate: str = ""
    private_key: str = ""
    owner_role: str = ""
    scram_iterations: int = DEFAULT_SCRAM_ITERATIONS

    def connection_details(self) -> dict[str, Any]:
        """Return the readable part of the config, as Vault's read shows it."""
        details = {
            "connection_url": self.connection_url,
            "username": self.username,
            "max_open_connections": self.max_open_connections,
            "max_idle_connections": self.max_idle_connections,
            "max_connection_lifetime": f"{self.max_connection_lifetime}s",
            "password_authentication": self.password_authentication,
            "username_template": self.username_template,
            "disable_escaping": self.disable_escaping,
            "tls_ca": self.tls_ca,
            "tls_certificate": self.tls_certificate,
            "owner_role": self.owner_role,
            "scram_iterations": self.scram_iterations,
        }
        return details

    def sends_verifier(self) -> bool:
        """Return whether statements get a SCRAM verifier instead of the password."""
        return self.password_authentication == "scram-sha-256"  # noqa: S105

    def allows_role(self, role: str) -> bool:
        """Return whether `allowed_roles` (globs, `*` for all) includes `role`."""
        return any(fnmatch.fnmatchcase(role, p) for p in self.allowed_roles)

    def conninfo(self) -> dict[str, Any]:
        """Return libpq connection parameters without the password.

        The `{{username}}` and `{{password}}` templates of `connection_url`
        are dropped: the user and password are passed as separate
        parameters, never spliced into a connection string.
        """
        from psycopg.conninfo import conninfo_to_dict

        text = self.connection_url.replace("{{username}}", "").replace(
            "{{password}}", ""
        )
        try:
            params: dict[str, Any] = dict(conninfo_to_dict(text))
        except Exception as err:  # psycopg raises ProgrammingError subclasses
            raise InvalidConfigError(
                "connection_url is not a valid PostgreSQL URL or key=value string: "
                f"{type(err).__name__}; example: "
                "postgresql://{{username}}:{{password}}@127.0.0.1:5432/postgres"
            ) from None
        for key in _RESERVED_PARAMS:
            if params.get(key):
                raise InvalidConfigError(
                    f"connection_url contains {key!r}: put {{{{password}}}} in the "
                    "URL and the password in the password field"
                )
            params.pop(key, None)
        if not params.get("user"):
            params.pop("user", None)
        if self.username:
            params["user"] = self.username
        if not params.get("user"):
            raise InvalidConfigError("missing username: set the username field")
        return params

    def endpoint(self, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Return `host`, `port` and `database` for the creds response.

        `params` is the result of `conninfo()`, when the caller has it.
        """
        params = self.conninfo() if params is None else params
        return {
            "host": str(params.get("host") or "localhost"),
            "port": int(params.get("port") or DEFAULT_PORT),
            "database": str(params.get("dbname") or params["user"]),
        }

    def admin_user(self) -> str:
        return str(self.conninfo()["user"])


def config_key(name: str) -> str:
    return CONFIG_PREFIX + name


def load_config(storage: Storage, name: str) -> DatabaseConfig | None:
    """Return the stored config `name`, or None."""
    return load_entry(storage, config_key(name), DatabaseConfig)


def require_config(storage: Storage, name: str) -> DatabaseConfig:
    """Return the stored config `name`, or raise ConfigNotFoundError."""
    config = load_config(storage, name)
    if config is None:
        raise ConfigNotFoundError(
            f"database config {name!r} not found: write database/config/{name} first"
        )
    return config


def save_config(storage: Storage, name: str, config: DatabaseConfig) -> None:
    save_entry(storage, config_key(name), config)


def list_configs(storage: Storage) -> list[str]:
    return list_entries(storage, CONFIG_PREFIX)
