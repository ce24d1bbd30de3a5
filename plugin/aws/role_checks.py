"""Validation of AWS roles, with Vault's rules and those of the extensions."""

from __future__ import annotations

import json
import re

from plugin.aws.errors import InvalidRoleError
from plugin.aws.roles import (
    ASSUMED_ROLE,
    CREDENTIAL_TYPES,
    IAM_USER,
    SESSION_TOKEN,
    STS_TYPES,
    RoleEntry,
)

# AWS rejects STS sessions shorter than 15 minutes.
MIN_STS_TTL = 900
_USER_PATH = re.compile(r"^/([\x21-\x7F]{0,510}/)?$")
# ASCII, as AWS's account ids and partitions are; matched with `fullmatch`,
# since `$` alone would accept a trailing newline.
_POLICY_ARN = re.compile(r"arn:[\w-]+:iam::(\d{12}|aws):policy/.+", re.ASCII)
_ROLE_ARN = re.compile(r"arn:[\w-]+:iam::\d{12}:role/.+", re.ASCII)


def compact_policy(document: str) -> str:
    """Return `document` as compact JSON, or raise InvalidRoleError."""
    if not document.strip():
        return ""
    try:
        parsed = json.loads(document)
    except json.JSONDecodeError as err:
        raise InvalidRoleError(
            f"policy_document is not valid JSON ({err.msg} at line {err.lineno}): "
            "give an IAM policy document"
        ) from err
    if not isinstance(parsed, dict):
        raise InvalidRoleError("policy_document must be a JSON object")
    return json.dumps(parsed, separators=(",", ":"))


def validate_role(role: RoleEntry) -> None:
    """Raise InvalidRoleError naming every rule the role breaks."""
    problems = _type_problems(role) + _ttl_problems(role) + _arn_problems(role)
    if problems:
        raise InvalidRoleError("invalid role: " + "; ".join(problems))


def _type_problems(role: RoleEntry) -> list[str]:
    kind = role.credential_type
    if not kind:
        return [f"missing credential_type: use one of {', '.join(CREDENTIAL_TYPES)}"]
    if kind not in CREDENTIAL_TYPES:
        return [
            f"unsupported credential_type {kind!r}: use one of "
            f"{', '.join(CREDENTIAL_TYPES)}"
        ]
    only = {
        "role_arns": (bool(role.role_arns), (ASSUMED_ROLE,)),
        "session_tags": (bool(role.session_tags), (ASSUMED_ROLE,)),
        "external_id": (bool(role.external_id), (ASSUMED_ROLE,)),
        "deny_older_sessions_on_revoke": (
            role.deny_older_sessions_on_revoke,
            (ASSUMED_ROLE,),
        ),
        "user_path": (bool(role.user_path), (IAM_USER,)),
        "permissions_boundary_arn": (bool(role.permissions_boundary_arn), (IAM_USER,)),
        "iam_tags": (bool(role.iam_tags), (IAM_USER,)),
        "default_ttl": (bool(role.default_ttl), (IAM_USER,)),
        "max_ttl": (bool(role.max_ttl), (IAM_USER,)),
        "key_ready_timeout": (role.key_ready_timeout is not None, (IAM_USER,)),
        "default_sts_ttl": (bool(role.default_sts_ttl), STS_TYPES),
        "max_sts_ttl": (bool(role.max_sts_ttl), STS_TYPES),
        "mfa_serial_number": (bool(role.mfa_serial_number), (SESSION_TOKEN,)),
    }
    problems = [
        f"{name} applies only to credential_type {' or '.join(kinds)}, not {kind}"
        for name, (is_set, kinds) in only.items()
        if is_set and kind not in kinds
    ]
    if kind == SESSION_TOKEN and (role.policy_document or role.policy_arns):
        problems.append(
            "session_token credentials take no policy_document or policy_arns: "
            "they carry the permissions of the root config's user"
        )
    if kind == SESSION_TOKEN and role.iam_groups:
        problems.append("session_token credentials take no iam_groups")
    if kind == ASSUMED_ROLE and not role.role_arns:
        problems.append("assumed_role needs role_arns: the ARNs of IAM roles to assume")
    return problems


def _ttl_problems(role: RoleEntry) -> list[str]:
    problems = []
    for name in ("default_sts_ttl", "max_sts_ttl"):
        value = getattr(role, name)
        if value and value < MIN_STS_TTL:
            problems.append(
                f"{name} {value} s is below {MIN_STS_TTL} s, the shortest session "
                "AWS issues"
            )
    if role.max_sts_ttl and role.default_sts_ttl > role.max_sts_ttl:
        problems.append("default_sts_ttl must be less than or equal to max_sts_ttl")
    if role.max_ttl and role.default_ttl > role.max_ttl:
        problems.append("default_ttl must be less than or equal to max_ttl")
    return problems


def _arn_problems(role: RoleEntry) -> list[str]:
    problems = []
    if role.user_path and not _USER_PATH.fullmatch(role.user_path):
        problems.append(
            f"invalid user_path {role.user_path!r}: it must start and end with /, "
            "such as /agents/"
        )
    boundary = role.permissions_boundary_arn
    if boundary and not _POLICY_ARN.fullmatch(boundary):
        problems.append(
            f"invalid permissions_boundary_arn {boundary!r}: expected an IAM policy "
            "ARN such as arn:aws:iam::aws:policy/ReadOnlyAccess"
        )
    problems += [
        f"invalid policy_arns entry {arn!r}: expected an IAM policy ARN"
        for arn in role.policy_arns
        if not _POLICY_ARN.fullmatch(arn)
    ]
    problems += [
        f"invalid role_arns entry {arn!r}: expected an IAM role ARN such as "
        "arn:aws:iam::123456789012:role/NAME"
        for arn in role.role_arns
        if not _ROLE_ARN.fullmatch(arn)
    ]
    return problems
