"""Deny older sessions of an IAM role: the only revocation AWS offers for STS.

A session's credentials stay valid until they expire. What AWS supports,
and what the console's "Revoke active sessions" does, is an inline policy
on the IAM role that denies every action to sessions whose
`aws:TokenIssueTime` is older than a time. Its blast radius is the whole
role: every session issued before that time dies, other agents' included.
"""

from __future__ import annotations

import datetime
import json
import logging
import threading
from typing import TYPE_CHECKING, Any

from plugin.aws.client import NOT_FOUND, aws_errors, error_code

if TYPE_CHECKING:
    from mypy_boto3_iam import IAMClient

logger = logging.getLogger(__name__)

# The name the AWS console uses, so the console and the plugin share one policy.
POLICY_NAME = "AWSRevokeOlderSessions"
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
# Concurrent revokes read, compare and write the one policy of a role.
_lock = threading.Lock()


def role_name_of(role_arn: str) -> str:
    """Return the role name of `arn:aws:iam::ACCOUNT:role/PATH/NAME`."""
    return role_arn.rsplit("/", 1)[-1]


def deny_sessions_before(
    iam: IAMClient, role_arn: str, cutoff: datetime.datetime
) -> datetime.datetime:
    """Deny sessions of the role issued before `cutoff`; return the cutoff in force.

    The cutoff only moves forward: a policy with a later time is kept.
    """
    name = role_name_of(role_arn)
    wanted = cutoff.astimezone(datetime.UTC).replace(microsecond=0)
    with _lock:
        current = _current_cutoff(iam, name)
        if current is not None and current >= wanted:
            return current
        document = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Deny",
                    "Action": ["*"],
                    "Resource": ["*"],
                    "Condition": {
                        "DateLessThan": {
                            "aws:TokenIssueTime": wanted.strftime(_TIME_FORMAT)
                        }
                    },
                }
            ],
        }
        iam.put_role_policy(
            RoleName=name, PolicyName=POLICY_NAME, PolicyDocument=json.dumps(document)
        )
    logger.warning(
        "denied older sessions of an IAM role: role_arn=%s issued_before=%s",
        role_arn,
        wanted.strftime(_TIME_FORMAT),
    )
    return wanted


def _current_cutoff(iam: IAMClient, name: str) -> datetime.datetime | None:
    try:
        found = iam.get_role_policy(RoleName=name, PolicyName=POLICY_NAME)
    except aws_errors() as err:
        if error_code(err) == NOT_FOUND:
            return None
        raise
    document: Any = found["PolicyDocument"]
    if isinstance(document, str):
        document = json.loads(document)
    try:
        statement = document["Statement"][0]
        text = statement["Condition"]["DateLessThan"]["aws:TokenIssueTime"]
        parsed = datetime.datetime.strptime(text, _TIME_FORMAT)
    except (KeyError, IndexError, TypeError, ValueError):
        return None  # a policy of another shape is replaced
    return parsed.replace(tzinfo=datetime.UTC)
