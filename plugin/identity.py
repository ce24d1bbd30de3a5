"""The caller-identity check: which agent is calling, proved by Vault.

The agent is the name of the caller's entity alias on the JWT auth mount
named in `config/identity` (the JWT `sub` claim). Nothing the caller sends
in the request body or headers is consulted, because both are whatever the
caller chose to send.
"""

from __future__ import annotations

import fnmatch
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from plugin.framework import Field, FieldData, FieldType, Path, get_json, put_json
from plugin.logical import (
    BadRequestError,
    Operation,
    PermissionDeniedError,
    Request,
    Response,
    Storage,
    SystemView,
)

logger = logging.getLogger(__name__)

IDENTITY_CONFIG_KEY = "config/identity"
# An auth mount's accessor is "auth_<type>_" and 8 hex digits: OpenBao 2.7
# lists auth_jwt_74f2eefb, Vault's `auth list` docs show auth_userpass_eea6507e.
ACCESSOR_PATTERN = re.compile(r"auth_[A-Za-z0-9._-]+_[0-9a-f]{8}")


class CallerDeniedError(PermissionDeniedError):
    """The caller is not an agent, or not an agent the role allows."""


@dataclass(frozen=True)
class Caller:
    """The agent behind a request, with its alias metadata.

    `metadata` comes from the JWT auth role's `claim_mappings` at the
    agent's latest login. One alias serves all logins of an agent, so its
    per-call values (tool, call id) may belong to a concurrent call.
    """

    agent: str
    entity_id: str
    metadata: Mapping[str, str] = field(default_factory=dict)


def load_jwt_mount_accessor(storage: Storage) -> str:
    """Return the configured JWT mount accessor, or "" when unset."""
    stored = get_json(storage, IDENTITY_CONFIG_KEY) or {}
    return str(stored.get("jwt_mount_accessor", ""))


def identify_caller(request: Request, system: SystemView) -> Caller:
    """Return the agent that sent `request`, or raise CallerDeniedError."""
    accessor = load_jwt_mount_accessor(request.storage)
    if not accessor:
        raise CallerDeniedError(
            "no JWT auth mount is configured for agent identities: an operator "
            "must write jwt_mount_accessor to config/identity"
        )
    if not request.entity_id:
        raise CallerDeniedError(
            "the request's token has no identity entity (a root token, or a token "
            "not issued by the JWT auth mount): log in as an agent through the "
            "attestor"
        )
    entity = system.entity_info(request.entity_id)
    if entity is None or entity.disabled:
        state = "is disabled" if entity else "was not found"
        raise CallerDeniedError(f"entity {request.entity_id} {state}")
    aliases = [a for a in entity.aliases if a.mount_accessor == accessor]
    if not aliases:
        raise CallerDeniedError(
            f"entity {request.entity_id} has no alias on the JWT auth mount "
            f"{accessor}: log in as an agent through the attestor; if the token "
            "came from such a login, an operator must check that "
            "config/identity names that mount (`bao auth list` shows accessors)"
        )
    alias = aliases[0]
    return Caller(alias.name, entity.id, dict(alias.metadata))


def check_allowed(caller: Caller, patterns: Sequence[str], role: str) -> None:
    """Raise CallerDeniedError unless a glob in `patterns` matches the agent."""
    if not patterns:
        raise CallerDeniedError(
            f"role {role!r} allows no agents: an operator must set allowed_agents"
        )
    if not any(fnmatch.fnmatchcase(caller.agent, p) for p in patterns):
        raise CallerDeniedError(
            f"agent {caller.agent!r} is not in allowed_agents of role {role!r}"
        )


def identity_paths() -> list[Path]:
    """Return the `config/identity` path."""
    return [
        Path(
            pattern="config/identity",
            fields={
                "jwt_mount_accessor": Field(
                    FieldType.STRING,
                    "Accessor of the JWT auth mount whose entity alias names are "
                    "the agent names matched against allowed_agents; no default.",
                    required=True,
                ),
            },
            operations={
                Operation.READ: _read_identity,
                Operation.UPDATE: _write_identity,
                Operation.CREATE: _write_identity,
            },
            help_synopsis="Configure which JWT auth mount names the agents.",
            help_description=(
                "A credential request is allowed only when the caller's token "
                "belongs to an entity with an alias on this JWT auth mount, and "
                "the alias name (the JWT sub claim) matches a glob in the role's "
                "allowed_agents. Find the accessor with `bao auth list`."
            ),
        )
    ]


def check_accessor(accessor: str) -> None:
    """Raise BadRequestError unless `accessor` has the form of an auth mount's.

    The plugin cannot list auth mounts, so an accessor of the right form that
    names no mount still shows only at the first request, as a denial.
    """
    hint = "give the JWT auth mount's accessor from `bao auth list`, e.g. auth_jwt_..."
    if ACCESSOR_PATTERN.fullmatch(accessor) is None:
        raise BadRequestError(
            f"invalid jwt_mount_accessor {accessor!r}: not an auth mount "
            f"accessor; {hint}"
        )
    if accessor.startswith("auth_token_"):
        raise BadRequestError(
            f"invalid jwt_mount_accessor {accessor!r}: it is the token auth "
            f"mount, whose tokens carry no agent name; {hint}"
        )


def _read_identity(request: Request, data: FieldData) -> Response | None:
    accessor = load_jwt_mount_accessor(request.storage)
    return Response(data={"jwt_mount_accessor": accessor}) if accessor else None


def _write_identity(request: Request, data: FieldData) -> Response | None:
    accessor = data.require(
        "jwt_mount_accessor", "give the accessor of the JWT auth mount (auth_jwt_...)"
    )
    check_accessor(accessor)
    put_json(request.storage, IDENTITY_CONFIG_KEY, {"jwt_mount_accessor": accessor})
    logger.info("identity configured: jwt_mount_accessor=%s", accessor)
    return None
