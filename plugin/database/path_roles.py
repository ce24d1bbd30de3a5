"""Paths `database/roles/<name>` and `database/roles/`."""

from __future__ import annotations

import logging

from plugin.database.backend import DatabaseBackend
from plugin.database.errors import InvalidRoleError
from plugin.database.roles import (
    CREDENTIAL_TYPES,
    RoleEntry,
    list_roles,
    load_role,
    role_key,
    save_role,
)
from plugin.database.sql import PLACEHOLDERS, find_invalid_placeholder
from plugin.framework import Field, FieldData, FieldType, Path, name_group
from plugin.logical import Operation, Request, Response

logger = logging.getLogger(__name__)

LIST = FieldType.STRING_LIST

ROLE_FIELDS = {
    "name": Field(FieldType.STRING, "Name of the role; no default."),
    "db_name": Field(
        FieldType.STRING, "Connection config the role uses; required, no default."
    ),
    "creation_statements": Field(
        LIST,
        "Statements that create the user, with {{name}}, {{password}} and "
        "{{expiration}}; required, no default.",
    ),
    "revocation_statements": Field(
        LIST,
        "Statements that remove the user, with {{name}}; default: end its "
        "sessions, reassign its objects to owner_role, drop it.",
    ),
    "rollback_statements": Field(
        LIST,
        "Statements that undo a failed creation, with {{name}}; default: the "
        "default revocation.",
    ),
    "renew_statements": Field(
        LIST,
        "Statements that extend the user, with {{name}} and {{expiration}}; "
        "default ALTER ROLE ... VALID UNTIL.",
    ),
    "default_ttl": Field(
        FieldType.DURATION, "Lease TTL; default 0, meaning the mount's default."
    ),
    "max_ttl": Field(
        FieldType.DURATION, "Max lease TTL; default 0, meaning the mount's max."
    ),
    "credential_type": Field(
        FieldType.STRING, "Credential type; only password; default password."
    ),
    "credential_config": Field(
        FieldType.KV_PAIRS, "Accepted for compatibility, must be empty; default {}."
    ),
    "allowed_agents": Field(
        FieldType.COMMA_STRING_LIST,
        "Globs matched against the caller's agent name (its JWT sub); default "
        "empty, which allows no agent.",
    ),
}

ROLE_HELP = """\
Defines how credentials are created and removed, with the API of Vault's
database secrets engine, plus allowed_agents: the agents (globs over the
name of the caller's alias on the JWT auth mount of config/identity) that may
read database/creds/<name>. Writing an existing role keeps the stored values
of fields the request leaves out, so a typed Terraform role resource and a
generic write of allowed_agents can manage one role together.
"""


def role_paths(backend: DatabaseBackend) -> list[Path]:
    """Return the role and role-list paths."""
    handlers = _RoleHandlers(backend)
    return [
        Path(
            pattern="database/roles/?",
            operations={Operation.LIST: handlers.list},
            help_synopsis="List the roles.",
            help_description="Returns the names of the roles in keys.",
        ),
        Path(
            pattern="database/roles/" + name_group("name"),
            fields=ROLE_FIELDS,
            operations={
                Operation.READ: handlers.read,
                Operation.CREATE: handlers.write,
                Operation.UPDATE: handlers.write,
                Operation.DELETE: handlers.delete,
            },
            existence_check=handlers.exists,
            help_synopsis="Manage the roles that credentials are created from.",
            help_description=ROLE_HELP,
        ),
    ]


class _RoleHandlers:
    def __init__(self, backend: DatabaseBackend) -> None:
        self.backend = backend

    def exists(self, request: Request, data: FieldData) -> bool:
        return load_role(request.storage, data.get("name")) is not None

    def list(self, request: Request, data: FieldData) -> Response:
        return Response(data={"keys": list_roles(request.storage)})

    def read(self, request: Request, data: FieldData) -> Response | None:
        role = load_role(request.storage, data.get("name"))
        return None if role is None else Response(data=role.to_response())

    def write(self, request: Request, data: FieldData) -> None:
        name = data.get("name")
        with self.backend.write_lock:
            stored = load_role(request.storage, name)
            # Like Vault: an update keeps fields the request leaves out, a
            # create starts from the defaults.
            updating = stored is not None and request.operation is Operation.UPDATE
            role = merge_role(stored if updating else None, data)
            validate_role(role)
            save_role(request.storage, name, role)
        logger.info("role written: role=%s update=%s", name, updating)

    def delete(self, request: Request, data: FieldData) -> None:
        name = data.get("name")
        with self.backend.write_lock:
            request.storage.delete(role_key(name))
        logger.info("role deleted: role=%s", name)


def merge_role(stored: RoleEntry | None, data: FieldData) -> RoleEntry:
    """Return `stored` updated with the request's fields, or a new role."""
    role = stored or RoleEntry()
    for field_name in ROLE_FIELDS:
        value, present = data.get_ok(field_name)
        if present and field_name != "name":
            setattr(role, field_name, value)
    role.revocation_statements = [s for s in role.revocation_statements if s.strip()]
    return role


def validate_role(role: RoleEntry) -> None:
    """Raise InvalidRoleError for a role that cannot mint credentials."""
    if not role.db_name:
        raise InvalidRoleError("missing db_name: name the connection config to use")
    if not any(s.strip() for s in role.creation_statements):
        raise InvalidRoleError(
            "missing creation_statements: give the SQL that creates the user, "
            """e.g. CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' """
            "VALID UNTIL '{{expiration}}'"
        )
    check_placeholders(role)
    if role.credential_type not in CREDENTIAL_TYPES:
        raise InvalidRoleError(
            f"unsupported credential_type {role.credential_type!r}: supported "
            f"types are {', '.join(CREDENTIAL_TYPES)}"
        )
    if role.credential_config:
        raise InvalidRoleError(
            "credential_config is not supported for password credentials; leave "
            "it empty"
        )
    if role.max_ttl and role.default_ttl > role.max_ttl:
        raise InvalidRoleError(
            f"default_ttl {role.default_ttl} s is greater than max_ttl "
            f"{role.max_ttl} s: lower default_ttl or raise max_ttl"
        )


# The placeholders that have a value in each statement field. Revoke and
# rollback run with the user name only, without a password or expiration.
STATEMENT_PLACEHOLDERS: dict[str, tuple[str, ...]] = {
    "creation_statements": PLACEHOLDERS,
    "revocation_statements": ("name", "username"),
    "rollback_statements": ("name", "username"),
    "renew_statements": ("name", "username", "expiration"),
}


def check_placeholders(role: RoleEntry) -> None:
    """Raise InvalidRoleError for a placeholder a statement field cannot fill."""
    for field_name, allowed in STATEMENT_PLACEHOLDERS.items():
        found = find_invalid_placeholder(getattr(role, field_name), allowed)
        if found:
            raise InvalidRoleError(placeholder_error(field_name, found, allowed))


def placeholder_error(field_name: str, found: str, allowed: tuple[str, ...]) -> str:
    """Return the message for placeholder `found` in field `field_name`."""
    usable = f"{field_name} can use {_braced(allowed)}"
    if found.strip("{} ") in PLACEHOLDERS:
        return f"placeholder {found} has no value in {field_name}: {usable}"
    message = (
        f"unknown placeholder {found} in {field_name}: the known placeholders are "
        f"{_braced(PLACEHOLDERS)}"
    )
    return message if allowed == PLACEHOLDERS else f"{message}; {usable}"


def _braced(keys: tuple[str, ...]) -> str:
    return ", ".join("{{" + key + "}}" for key in keys)
