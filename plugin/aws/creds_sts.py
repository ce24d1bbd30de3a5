"""STS credentials: assumed_role, federation_token and session_token.

STS sessions cannot be renewed or revoked one by one, so their lease is
the session's real lifetime and is not renewable.
"""

from __future__ import annotations

import datetime
import json
import logging
import time
from typing import Any

from plugin.aws.client import aws_errors, describe, failure
from plugin.aws.errors import InvalidConfigError, InvalidRequestError
from plugin.aws.group_policies import group_policies
from plugin.aws.issue import Issue
from plugin.aws.role_checks import MIN_STS_TTL
from plugin.aws.roles import ASSUMED_ROLE, FEDERATION_TOKEN
from plugin.aws.usernames import (
    MAX_FEDERATION_NAME,
    NameInputs,
    render_name,
    session_name,
)
from plugin.framework import FieldData, SecretType
from plugin.logical import Response

logger = logging.getLogger(__name__)

# Vault's default session duration when neither the read nor the role sets one.
DEFAULT_STS_TTL = 3600


def issue_sts(issue: Issue, secret: SecretType, data: FieldData) -> Response:
    """Call STS for the role's credential type and lease the session."""
    kind = issue.role.credential_type
    ttl = session_ttl(issue, data)
    try:
        if kind == ASSUMED_ROLE:
            result, details = _assume_role(issue, data, ttl)
        elif kind == FEDERATION_TOKEN:
            result, details = _federation_token(issue, ttl)
        else:
            result, details = _session_token(issue, data, ttl), {}
    except aws_errors() as err:
        logger.error(
            "sts call failed: role=%s agent=%s type=%s error=%s",
            issue.role_name,
            issue.caller.agent,
            kind,
            describe(err),
        )
        raise failure(err, f"issuing {kind} credentials") from err
    return _leased(issue, secret, result, details, ttl)


def session_ttl(issue: Issue, data: FieldData) -> int:
    """Return the session duration: the read's ttl, else the role's, capped."""
    role = issue.role
    requested, given = data.get_ok("ttl")
    uncapped = requested if given else (role.default_sts_ttl or DEFAULT_STS_TTL)
    max_ttl = role.max_sts_ttl or issue.backend.system.max_lease_ttl()
    ttl = min(uncapped, max_ttl) if max_ttl else uncapped
    if ttl < MIN_STS_TTL:
        origin = f"ttl {uncapped} s" if given else f"the role's default of {uncapped} s"
        if ttl == uncapped:
            remedy = f"ask for at least {MIN_STS_TTL} s"
        else:
            origin += (
                f", capped to {max_ttl} s by max_sts_ttl or the mount's max lease TTL"
            )
            remedy = f"raise that maximum to at least {MIN_STS_TTL} s"
        raise InvalidRequestError(
            f"session duration {ttl} s ({origin}) is below {MIN_STS_TTL} s, "
            f"the shortest session AWS issues: {remedy}"
        )
    return ttl


def _assume_role(
    issue: Issue, data: FieldData, ttl: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    role = issue.role
    role_arn = data.get("role_arn")
    if not role_arn:
        if len(role.role_arns) != 1:
            raise InvalidRequestError(
                f"role {issue.role_name!r} has {len(role.role_arns)} role_arns: give "
                "role_arn, one of " + ", ".join(role.role_arns)
            )
        role_arn = role.role_arns[0]
    elif role_arn not in role.role_arns:
        raise InvalidRequestError(
            f"role_arn {role_arn!r} is not in role_arns of role {issue.role_name!r}"
        )
    name = _name(issue, data.get("role_session_name"))
    params: dict[str, Any] = {
        "RoleArn": role_arn,
        "RoleSessionName": name,
        "DurationSeconds": ttl,
        **_session_policies(issue),
    }
    if role.session_tags:
        params["Tags"] = [{"Key": k, "Value": v} for k, v in role.session_tags.items()]
    if role.external_id:
        params["ExternalId"] = role.external_id
    result = issue.clients.sts.assume_role(**params)
    details = {"role_arn": role_arn, "session_name": name}
    return dict(result), details


def _federation_token(issue: Issue, ttl: int) -> tuple[dict[str, Any], dict[str, Any]]:
    policies = _session_policies(issue)
    if not policies:
        # Without a session policy the token carries every permission of the
        # root config's user, which Vault's engine refuses as well.
        raise InvalidRequestError(
            f"role {issue.role_name!r} has no policy_document, policy_arns or "
            "iam_groups: federation_token needs at least one"
        )
    inputs = NameInputs(issue.caller.agent, issue.role_name, kind="STS")
    template = issue.clients.config.username_template
    try:
        name = render_name(template, inputs, MAX_FEDERATION_NAME)
    except ValueError as err:
        raise InvalidConfigError(f"invalid username_template: {err}") from err
    result = issue.clients.sts.get_federation_token(
        Name=name, DurationSeconds=ttl, **policies
    )
    return dict(result), {"session_name": name}


def _session_token(issue: Issue, data: FieldData, ttl: int) -> dict[str, Any]:
    params: dict[str, Any] = {"DurationSeconds": ttl}
    if issue.role.mfa_serial_number:
        code = data.get("mfa_code")
        if not code:
            raise InvalidRequestError(
                f"role {issue.role_name!r} has an MFA device: give mfa_code"
            )
        params.update(SerialNumber=issue.role.mfa_serial_number, TokenCode=code)
    return dict(issue.clients.sts.get_session_token(**params))


def _name(issue: Issue, requested: str) -> str:
    inputs = NameInputs(
        issue.caller.agent, issue.role_name, issue.request.display_name, "IAM"
    )
    try:
        return session_name(requested, issue.clients.config.username_template, inputs)
    except ValueError as err:
        raise InvalidRequestError(str(err)) from err


def _session_policies(issue: Issue) -> dict[str, Any]:
    """Return Policy and PolicyArns: the role's, plus those of its iam_groups."""
    role = issue.role
    documents = [role.policy_document] if role.policy_document else []
    arns = list(role.policy_arns)
    if role.iam_groups:
        group_documents, group_arns = group_policies(issue.clients.iam, role.iam_groups)
        documents += group_documents
        arns += group_arns
    params: dict[str, Any] = {}
    if documents:
        params["Policy"] = combine_documents(documents)
    if arns:
        params["PolicyArns"] = [{"arn": arn} for arn in dict.fromkeys(arns)]
    return params


def combine_documents(documents: list[str]) -> str:
    """Merge policy documents into one, keeping every statement."""
    if len(documents) == 1:
        return documents[0]
    statements: list[Any] = []
    for document in documents:
        found = json.loads(document).get("Statement", [])
        statements += found if isinstance(found, list) else [found]
    combined = {"Version": "2012-10-17", "Statement": statements}
    return json.dumps(combined, separators=(",", ":"))


def _leased(
    issue: Issue,
    secret: SecretType,
    result: dict[str, Any],
    details: dict[str, Any],
    ttl: int,
) -> Response:
    expiration: datetime.datetime = result["Credentials"]["Expiration"]
    remaining = int(expiration.timestamp() - time.time())
    if not 0 < remaining <= ttl + 60:
        # The clocks of this host and AWS disagree; the requested duration
        # is what AWS granted.
        logger.warning("clock skew against AWS: expiration=%s", expiration.isoformat())
        remaining = ttl
    data = _response_data(issue, result)
    internal = {
        **issue.internal_data(issue.role.credential_type),
        **details,
        "is_sts": True,
        "expires_at": expiration.timestamp(),
        "deny_older_sessions": issue.role.deny_older_sessions_on_revoke,
    }
    response = secret.response(data, internal, ttl=remaining, max_ttl=remaining)
    if response.secret is not None:
        response.secret.lease.renewable = False
    logger.info(
        "credential issued: role=%s agent=%s type=%s session=%s token_accessor=%s "
        "ttl=%d",
        issue.role_name,
        issue.caller.agent,
        issue.role.credential_type,
        details.get("session_name", ""),
        issue.request.client_token_accessor,
        remaining,
    )
    return response


def _response_data(issue: Issue, result: dict[str, Any]) -> dict[str, Any]:
    """Return the creds data of an STS result, with the extensions."""
    credentials = result["Credentials"]
    expiration: datetime.datetime = credentials["Expiration"]
    data: dict[str, Any] = {
        "access_key": credentials["AccessKeyId"],
        "secret_key": credentials["SecretAccessKey"],
        "security_token": credentials["SessionToken"],
        "session_token": credentials["SessionToken"],
        "expiration": expiration.astimezone(datetime.UTC).isoformat(),
        **issue.endpoint_data(),
    }
    user = result.get("AssumedRoleUser") or result.get("FederatedUser")
    if user:
        data["arn"] = user["Arn"]
    return data
