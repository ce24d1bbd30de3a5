"""Database connections and roles, as terraform-provider-vault 5.x writes them.

Sources: `resource_database_secret_backend_connection.go` (PostgreSQL block
only) and `resource_database_secret_backend_role.go`. The provider checks
the server version before sending some fields; the fields here are the ones
it sends to Vault 1.18 and later, which includes every OpenBao 2.x release
because the provider compares version numbers only.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, ClassVar

from devstack.tfapply_errors import ConfigError
from devstack.tfapply_schema import (
    ABSENT,
    Arg,
    Attrs,
    BlockSchema,
    PathResource,
    require_known,
)
from devstack.tfapply_vault import VaultClient

log = logging.getLogger(__name__)

POSTGRES_PLUGIN = "postgresql-database-plugin"

POSTGRESQL_BLOCK = BlockSchema(
    {
        "connection_url": Arg("string"),
        "max_open_connections": Arg("int", default=2),
        "max_idle_connections": Arg("int"),
        "max_connection_lifetime": Arg("int"),
        "username": Arg("string"),
        "password": Arg("string", sensitive=True),
        "username_template": Arg("string"),
        "disable_escaping": Arg("bool", default=False),
        "tls_ca": Arg("string"),
        "tls_certificate": Arg("string"),
        "private_key": Arg("string", sensitive=True),
        "password_authentication": Arg("string", default="password"),
    }
)


# Fields of the read that `DatabaseConnection.refresh` compares: top-level
# ones with the resource's arguments, connection_details ones with the block.
REFRESHED_ARGUMENTS = ("allowed_roles", "password_policy")
REFRESHED_POSTGRESQL_FIELDS = (
    "username",
    "max_open_connections",
    "password_authentication",
)


class DatabaseConnection(PathResource):
    name = "vault_database_secret_backend_connection"
    arguments: ClassVar[Mapping[str, Arg]] = {
        "backend": Arg("string", required=True),
        "name": Arg("string", required=True),
        "plugin_name": Arg("string"),
        "plugin_version": Arg("string"),
        "verify_connection": Arg("bool", default=True),
        "allowed_roles": Arg("list"),
        "root_rotation_statements": Arg("list"),
        "password_policy": Arg("string"),
    }
    blocks: ClassVar[Mapping[str, BlockSchema]] = {"postgresql": POSTGRESQL_BLOCK}

    def validate(self, attrs: Attrs) -> None:
        if len(attrs.blocks.get("postgresql", [])) != 1:
            raise ConfigError("exactly one postgresql block is required")

    def path(self, attrs: Attrs) -> str:
        return connection_path(attrs)

    def payload(
        self, attrs: Attrs, *, create: bool, sensitive_changed: frozenset[str]
    ) -> dict[str, Any]:
        return connection_payload(attrs, sensitive_changed)

    def refresh(self, client: VaultClient, attrs: Attrs) -> list[str] | None:
        """Compare the arguments vault-config sets, and password_policy.

        The provider's Read (`databaseSecretBackendConnectionRead`) sets
        these from the response. As in the plugin SDK, a null argument
        equals the type's zero value ("" or []).
        NOTE: the other arguments the provider reads back are not compared.
        """
        response = client.read(connection_path(attrs))
        if response is None:
            return [ABSENT]
        data = response.get("data") or {}
        details = data.get("connection_details") or {}
        block = attrs.block("postgresql")
        assert block is not None  # validate() checked it
        configured = {name: attrs.get(name) for name in REFRESHED_ARGUMENTS}
        stored = {name: data.get(name) for name in REFRESHED_ARGUMENTS}
        for name in REFRESHED_POSTGRESQL_FIELDS:
            configured[f"postgresql.{name}"] = block.get(name)
            stored[f"postgresql.{name}"] = details.get(name)
        return [
            name
            for name in configured
            if (configured[name] or None) != (stored[name] or None)
        ]


def connection_path(attrs: Attrs) -> str:
    require_known(attrs, "backend", "name")
    return f"{str(attrs.get('backend')).strip('/')}/config/{attrs.get('name')}"


def connection_payload(
    attrs: Attrs, sensitive_changed: frozenset[str]
) -> dict[str, Any]:
    """Build the config write as `writeDatabaseSecretConfig` does for PostgreSQL."""
    block = attrs.block("postgresql")
    assert block is not None  # validate() checked it
    data: dict[str, Any] = {
        "plugin_name": attrs.get_ok("plugin_name") or POSTGRES_PLUGIN
    }
    for name in ("connection_url", "max_open_connections"):
        if block.get_ok(name):
            data[name] = block.get(name)
    for name in ("max_idle_connections", "username_template"):
        if block.exists(name):
            data[name] = block.get(name)
    if block.exists("max_connection_lifetime"):
        data["max_connection_lifetime"] = f"{block.get('max_connection_lifetime')}s"
    data["username"] = block.get("username") or ""
    # The provider resends the password only when it changed, because Vault
    # may have rotated it (rotate-root) since the last apply.
    if "postgresql.password" in sensitive_changed and block.get_ok("password"):
        data["password"] = block.get("password")
    data["disable_escaping"] = block.get("disable_escaping")
    for name in ("tls_ca", "tls_certificate", "private_key", "password_authentication"):
        if block.get_ok(name):
            data[name] = block.get(name)
    for name in ("plugin_version", "password_policy", "root_rotation_statements"):
        if attrs.get_ok(name):
            data[name] = attrs.get(name)
    data["verify_connection"] = attrs.get("verify_connection")
    if attrs.exists("allowed_roles"):
        # Sent as one comma-separated string, as the provider does.
        data["allowed_roles"] = ",".join(attrs.get("allowed_roles") or [])
    return data


ROLE_API_FIELDS = (
    "default_ttl",
    "max_ttl",
    "creation_statements",
    "revocation_statements",
    "rollback_statements",
    "renew_statements",
)
ROLE_OPTIONAL_FIELDS = ("credential_config", "credential_type")


class DatabaseRole(PathResource):
    name = "vault_database_secret_backend_role"
    create_differs = True
    arguments: ClassVar[Mapping[str, Arg]] = {
        "backend": Arg("string", required=True),
        "name": Arg("string", required=True),
        "db_name": Arg("string", required=True),
        "default_ttl": Arg("int"),
        "max_ttl": Arg("int"),
        "creation_statements": Arg("list", required=True),
        "revocation_statements": Arg("list"),
        "rollback_statements": Arg("list"),
        "renew_statements": Arg("list"),
        "credential_type": Arg("string"),
        "credential_config": Arg("map"),
    }

    def path(self, attrs: Attrs) -> str:
        return database_role_path(attrs)

    def payload(
        self, attrs: Attrs, *, create: bool, sensitive_changed: frozenset[str]
    ) -> dict[str, Any]:
        return database_role_payload(attrs, create=create)


def database_role_path(attrs: Attrs) -> str:
    require_known(attrs, "backend", "name")
    return f"{str(attrs.get('backend')).strip('/')}/roles/{attrs.get('name')}"


def database_role_payload(attrs: Attrs, *, create: bool) -> dict[str, Any]:
    """Build the role write as `databaseSecretBackendRoleWrite` does.

    The provider sends db_name and creation_statements always and the other
    fields when they changed: on create that is every set field. An update
    here sends every field, so removing an argument resets it in Vault.
    """
    data: dict[str, Any] = {
        "db_name": attrs.get("db_name"),
        "creation_statements": attrs.get("creation_statements"),
    }
    for name in ROLE_API_FIELDS[:2]:
        if attrs.get_ok(name) or not create:
            data[name] = attrs.get(name) or 0
    for name in ROLE_API_FIELDS[3:]:
        if attrs.get_ok(name) or not create:
            data[name] = attrs.get(name) or []
    for name in ROLE_OPTIONAL_FIELDS:
        if attrs.get_ok(name):
            data[name] = attrs.get(name)
    return data
