"""Paths `aws/creds/<name>` and `aws/sts/<name>`: mint credentials for the caller."""

from __future__ import annotations

import logging

from plugin.aws.backend import AwsBackend, Clients
from plugin.aws.creds_iam_user import issue_iam_user
from plugin.aws.creds_sts import issue_sts
from plugin.aws.issue import Issue
from plugin.aws.roles import IAM_USER, require_role
from plugin.framework import Field, FieldData, FieldType, Path, SecretType, name_group
from plugin.identity import check_allowed, identify_caller
from plugin.logical import Operation, Request, Response

logger = logging.getLogger(__name__)

S = FieldType.STRING

CREDS_FIELDS = {
    "name": Field(S, "Name of the role; no default."),
    "role_arn": Field(
        S,
        "IAM role to assume, one of the role's role_arns; default: the only one "
        "when the role has one.",
    ),
    "ttl": Field(
        FieldType.DURATION,
        "Session duration of STS credentials, at least 900s; default: the role's "
        "default_sts_ttl, else 3600s.",
        default=3600,
    ),
    "role_session_name": Field(
        S,
        "Suffix of the assumed_role session name ab-<agent>@<suffix>, at most 64 "
        "characters in all; default: a generated name with the agent.",
    ),
    "mfa_code": Field(
        S, "Current code of the MFA device of session_token roles; default empty."
    ),
}

CREDS_HELP = """\
Checks that the caller's agent name matches the role's allowed_agents, then
mints credentials of the role's credential_type. iam_user creates an IAM user
with one access key, waits until the key authenticates, and deletes the user
on revoke. STS types return session credentials whose lease is the session's
real lifetime; AWS cannot revoke them before it ends (see the role field
deny_older_sessions_on_revoke). The response contains access_key, secret_key,
session_token (null for iam_user), region and, with a custom endpoint,
endpoint_url. aws/creds/<name> and aws/sts/<name> behave the same.
"""


def creds_paths(backend: AwsBackend, secret: SecretType) -> list[Path]:
    """Return the creds and sts paths; `secret` is the type their leases get."""

    def issue(request: Request, data: FieldData) -> Response:
        role_name = data.get("name")
        role = require_role(request.storage, role_name)
        # The caller is checked before anything touches AWS.
        caller = identify_caller(request, backend.system)
        check_allowed(caller, role.allowed_agents, role_name)

        def issue_with(clients: Clients) -> Response:
            call = Issue(backend, request, role_name, role, caller, clients)
            if role.credential_type == IAM_USER:
                return issue_iam_user(call, secret)
            return issue_sts(call, secret, data)

        return backend.with_clients(request.storage, issue_with)

    return [
        Path(
            pattern="aws/(?:creds|sts)/" + name_group("name"),
            fields=CREDS_FIELDS,
            operations={Operation.READ: issue, Operation.UPDATE: issue},
            help_synopsis="Create AWS credentials for the calling agent.",
            help_description=CREDS_HELP,
        )
    ]
