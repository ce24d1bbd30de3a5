"""Paths `aws/roles/<name>` and `aws/roles/`."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

from plugin.aws.backend import AwsBackend
from plugin.aws.errors import InvalidRoleError
from plugin.aws.role_checks import compact_policy, validate_role
from plugin.aws.roles import (
    ASSUMED_ROLE,
    IAM_USER,
    RoleEntry,
    list_roles,
    load_role,
    role_key,
    save_role,
)
from plugin.framework import Field, FieldData, FieldType, Path, name_group
from plugin.logical import Operation, Request, Response

logger = logging.getLogger(__name__)

S, LIST, DURATION = FieldType.STRING, FieldType.COMMA_STRING_LIST, FieldType.DURATION
KV = FieldType.KV_PAIRS

ROLE_FIELDS = {
    "name": Field(S, "Name of the role; no default."),
    "credential_type": Field(
        S,
        "iam_user, assumed_role, federation_token or session_token; required, "
        "no default.",
    ),
    "role_arns": Field(LIST, "IAM roles assumed_role may assume; default none."),
    "policy_arns": Field(
        LIST,
        "Managed policies: attached to an iam_user, or session policies of STS "
        "credentials; default none.",
    ),
    "policy_document": Field(
        S,
        "IAM policy JSON: an inline policy of an iam_user, or the session policy "
        "of STS credentials; default empty.",
    ),
    "iam_groups": Field(
        LIST,
        "Groups an iam_user joins; for STS credentials their policies join the "
        "session policy; default none.",
    ),
    "iam_tags": Field(KV, "Tags of created IAM users; default none."),
    "session_tags": Field(KV, "Session tags of assumed_role sessions; default none."),
    "external_id": Field(S, "External ID sent with AssumeRole; default empty."),
    "default_sts_ttl": Field(
        DURATION, "Session duration when a read gives no ttl; default 0, meaning 1h."
    ),
    "max_sts_ttl": Field(
        DURATION, "Longest session duration; default 0, meaning the mount's max TTL."
    ),
    "user_path": Field(S, "Path of created IAM users; default /."),
    "permissions_boundary_arn": Field(
        S, "Policy ARN set as permissions boundary of iam_user users; default none."
    ),
    "mfa_serial_number": Field(
        S, "MFA device of the root config's user, for session_token; default none."
    ),
    "default_ttl": Field(
        DURATION,
        "Lease TTL of iam_user credentials; default 0, meaning aws/config/lease.",
    ),
    "max_ttl": Field(
        DURATION,
        "Max lease TTL of iam_user credentials; default 0, meaning aws/config/lease.",
    ),
    "allowed_agents": Field(
        LIST,
        "Globs matched against the caller's agent name (its JWT sub); default "
        "empty, which allows no agent.",
    ),
    "key_ready_timeout": Field(
        DURATION,
        "How long an iam_user creds read waits for the new key to authenticate; "
        "default: the value of aws/config/root.",
    ),
    "deny_older_sessions_on_revoke": Field(
        FieldType.BOOL,
        "On revoke of an assumed_role lease, deny every session of the IAM role "
        "issued before the revoke, other agents' sessions included; default false.",
    ),
    "policy": Field(S, "Deprecated: use policy_document; default empty."),
    "arn": Field(S, "Deprecated: use role_arns or policy_arns; default empty."),
}

ROLE_HELP = """\
Defines the AWS credentials of aws/creds/<name> and aws/sts/<name>, with the
API of Vault's AWS secrets engine, plus allowed_agents: the agents (globs over
the name of the caller's alias on the JWT auth mount of config/identity) that
may read them. Writing an existing role keeps the stored values of fields the
request leaves out, as Vault does.
"""


class _RolePath(Path):
    """A path whose KV fields also take Vault's list form `["key=value"]`."""

    def field_data(self, request: Request, captures: Mapping[str, str]) -> FieldData:
        raw = dict(request.data)
        for name in ("iam_tags", "session_tags"):
            if isinstance(raw.get(name), list | tuple):
                raw[name] = _pairs(name, raw[name])
        return FieldData(self.fields, raw, captures)


def role_paths(backend: AwsBackend) -> list[Path]:
    """Return the role and role-list paths."""

    def list_(request: Request, data: FieldData) -> Response:
        return Response(data={"keys": list_roles(request.storage)})

    def read(request: Request, data: FieldData) -> Response | None:
        role = load_role(request.storage, data.get("name"))
        return None if role is None else Response(data=role.to_response())

    def write(request: Request, data: FieldData) -> Response | None:
        name = data.get("name")
        with backend.write_lock:
            role, warnings = merge_role(load_role(request.storage, name), data)
            validate_role(role)
            save_role(request.storage, name, role)
        logger.info("role written: role=%s type=%s", name, role.credential_type)
        return Response(warnings=warnings) if warnings else None

    def delete(request: Request, data: FieldData) -> None:
        name = data.get("name")
        with backend.write_lock:
            request.storage.delete(role_key(name))
        logger.info("role deleted: role=%s", name)

    return [
        Path(
            pattern="aws/roles/?",
            operations={Operation.LIST: list_},
            help_synopsis="List the roles.",
            help_description="Returns the names of the roles in keys.",
        ),
        _RolePath(
            pattern="aws/roles/" + name_group("name"),
            fields=ROLE_FIELDS,
            operations={
                Operation.READ: read,
                Operation.CREATE: write,
                Operation.UPDATE: write,
                Operation.DELETE: delete,
            },
            help_synopsis="Manage the roles that AWS credentials are created from.",
            help_description=ROLE_HELP,
        ),
    ]


def merge_role(
    stored: RoleEntry | None, data: FieldData
) -> tuple[RoleEntry, list[str]]:
    """Return `stored` updated with the request's fields, and any warnings."""
    role = dataclasses.replace(stored) if stored else RoleEntry()
    for name in dataclasses.asdict(role):
        value, present = data.get_ok(name)
        if present:
            setattr(role, name, value)
    role.policy_document = compact_policy(role.policy_document)
    legacy = data.get("policy") or data.get("arn")
    if not legacy:
        return role, []
    if data.get_ok("credential_type")[1]:
        raise InvalidRoleError(
            "the deprecated policy and arn fields cannot be combined with "
            "credential_type: use policy_document, policy_arns or role_arns"
        )
    _apply_legacy(role, data.get("policy"), data.get("arn"))
    return role, [
        "policy and arn are deprecated; use credential_type with policy_document, "
        "policy_arns or role_arns"
    ]


def _apply_legacy(role: RoleEntry, policy: str, arn: str) -> None:
    """Translate Vault's pre-0.11 fields, as Vault upgrades them."""
    if policy and arn:
        raise InvalidRoleError("give only one of the deprecated policy and arn fields")
    if ":role/" in arn:
        role.credential_type, role.role_arns = ASSUMED_ROLE, [arn]
    elif arn:
        role.credential_type, role.policy_arns = IAM_USER, [arn]
    else:
        role.credential_type = IAM_USER
        role.policy_document = compact_policy(policy)


def _pairs(name: str, items: list[Any] | tuple[Any, ...]) -> dict[str, str]:
    pairs = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        if not sep or not key:
            raise InvalidRoleError(
                f"invalid {name} entry {item!r}: expected key=value or a JSON object"
            )
        pairs[key] = value
    return pairs
