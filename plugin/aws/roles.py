"""Roles (`aws/roles/<name>`): what a credential may do, and who may get one."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from plugin.aws.errors import RoleNotFoundError
from plugin.framework import list_entries, load_entry, save_entry
from plugin.logical import Storage

ROLE_PREFIX = "aws/role/"

IAM_USER = "iam_user"
ASSUMED_ROLE = "assumed_role"
FEDERATION_TOKEN = "federation_token"  # noqa: S105 (a type name)
SESSION_TOKEN = "session_token"  # noqa: S105 (a type name)
CREDENTIAL_TYPES = (IAM_USER, ASSUMED_ROLE, FEDERATION_TOKEN, SESSION_TOKEN)
STS_TYPES = (ASSUMED_ROLE, FEDERATION_TOKEN, SESSION_TOKEN)


@dataclass
class RoleEntry:
    """One stored role, with the fields of Vault's AWS engine and the extensions.

    TTLs are seconds. `key_ready_timeout` None means the root config's value.
    """

    credential_type: str = ""
    policy_arns: list[str] = field(default_factory=list)
    role_arns: list[str] = field(default_factory=list)
    policy_document: str = ""
    iam_groups: list[str] = field(default_factory=list)
    iam_tags: dict[str, str] = field(default_factory=dict)
    session_tags: dict[str, str] = field(default_factory=dict)
    external_id: str = ""
    default_sts_ttl: int = 0
    max_sts_ttl: int = 0
    user_path: str = ""
    permissions_boundary_arn: str = ""
    mfa_serial_number: str = ""
    default_ttl: int = 0
    max_ttl: int = 0
    allowed_agents: list[str] = field(default_factory=list)
    key_ready_timeout: int | None = None
    deny_older_sessions_on_revoke: bool = False

    def to_response(self) -> dict[str, Any]:
        """Return the role as Vault's AWS engine reads it back, plus extensions."""
        return {
            "credential_type": self.credential_type,
            "policy_arns": self.policy_arns,
            "role_arns": self.role_arns,
            "policy_document": self.policy_document,
            "iam_groups": self.iam_groups,
            "iam_tags": self.iam_tags,
            "session_tags": self.session_tags,
            "external_id": self.external_id,
            "default_sts_ttl": self.default_sts_ttl,
            "max_sts_ttl": self.max_sts_ttl,
            "user_path": self.user_path,
            "permissions_boundary_arn": self.permissions_boundary_arn,
            "mfa_serial_number": self.mfa_serial_number,
            "default_ttl": self.default_ttl,
            "max_ttl": self.max_ttl,
            "allowed_agents": self.allowed_agents,
            "key_ready_timeout": self.key_ready_timeout,
            "deny_older_sessions_on_revoke": self.deny_older_sessions_on_revoke,
        }


def role_key(name: str) -> str:
    return ROLE_PREFIX + name


def load_role(storage: Storage, name: str) -> RoleEntry | None:
    return load_entry(storage, role_key(name), RoleEntry)


def require_role(storage: Storage, name: str) -> RoleEntry:
    """Return the role `name`, or raise RoleNotFoundError."""
    role = load_role(storage, name)
    if role is None:
        raise RoleNotFoundError(f"unknown role {name!r}: write aws/roles/{name} first")
    return role


def save_role(storage: Storage, name: str, role: RoleEntry) -> None:
    save_entry(storage, role_key(name), role)


def list_roles(storage: Storage) -> list[str]:
    return list_entries(storage, ROLE_PREFIX)
