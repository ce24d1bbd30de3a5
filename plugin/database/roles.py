"""Roles (`database/roles/<name>`): what a credential may do, and who may get one."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from plugin.database.errors import RoleNotFoundError
from plugin.framework import list_entries, load_entry, save_entry
from plugin.logical import Storage

ROLE_PREFIX = "database/role/"
CREDENTIAL_TYPES = ("password",)


@dataclass
class RoleEntry:
    """One stored role; TTLs are seconds, zero meaning the mount's value."""

    db_name: str = ""
    creation_statements: list[str] = field(default_factory=list)
    revocation_statements: list[str] = field(default_factory=list)
    rollback_statements: list[str] = field(default_factory=list)
    renew_statements: list[str] = field(default_factory=list)
    default_ttl: int = 0
    max_ttl: int = 0
    credential_type: str = "password"
    credential_config: dict[str, str] = field(default_factory=dict)
    allowed_agents: list[str] = field(default_factory=list)

    def to_response(self) -> dict[str, Any]:
        """Return the role as Vault's database engine reads it back."""
        return dataclasses.asdict(self)


def role_key(name: str) -> str:
    return ROLE_PREFIX + name


def load_role(storage: Storage, name: str) -> RoleEntry | None:
    return load_entry(storage, role_key(name), RoleEntry)


def require_role(storage: Storage, name: str) -> RoleEntry:
    """Return the role `name`, or raise RoleNotFoundError."""
    role = load_role(storage, name)
    if role is None:
        raise RoleNotFoundError(
            f"unknown role {name!r}: write database/roles/{name} first"
        )
    return role


def save_role(storage: Storage, name: str, role: RoleEntry) -> None:
    save_entry(storage, role_key(name), role)


def list_roles(storage: Storage) -> list[str]:
    return list_entries(storage, ROLE_PREFIX)
