"""iam_user credentials: one IAM user with one access key per lease."""

from __future__ import annotations

import logging
import time

from plugin.aws.client import (
    KEY_NOT_READY_CODES,
    KeyPair,
    aws_errors,
    describe,
    error_code,
    failure,
    sts_client,
)
from plugin.aws.config import RootConfig, load_lease
from plugin.aws.errors import InvalidConfigError, RequestCancelledError
from plugin.aws.iam import UserPlan, create_user, delete_user
from plugin.aws.issue import Issue
from plugin.aws.roles import IAM_USER
from plugin.aws.rollback import WAL_KIND_USER
from plugin.aws.usernames import NameInputs, render_name
from plugin.framework import SecretType, delete_wal, effective_ttls, put_wal
from plugin.logical import Response

logger = logging.getLogger(__name__)

_FIRST_POLL = 0.25
_MAX_POLL = 2.0


def issue_iam_user(issue: Issue, secret: SecretType) -> Response:
    """Create the user, its policies and key, and lease the key."""
    config = issue.clients.config
    inputs = NameInputs(
        issue.caller.agent, issue.role_name, issue.request.display_name, "IAM"
    )
    try:
        username = render_name(config.username_template, inputs)
    except ValueError as err:
        raise InvalidConfigError(f"invalid username_template: {err}") from err
    role = issue.role
    plan = UserPlan(
        username=username,
        path=role.user_path or "/",
        policy_name=issue.role_name,
        policy_document=role.policy_document,
        policy_arns=role.policy_arns,
        groups=role.iam_groups,
        tags={**role.iam_tags, **issue.identity_tags()},
        permissions_boundary_arn=role.permissions_boundary_arn,
    )
    # Written before CreateUser, so a crash between it and the lease is undone
    # by the periodic rollback.
    wal_id = put_wal(
        issue.request.storage,
        WAL_KIND_USER,
        {"username": username, "role": issue.role_name, "agent": issue.caller.agent},
    )
    keys = _create(issue, plan, wal_id)

    timeout = config.key_ready_timeout
    if role.key_ready_timeout is not None:
        timeout = role.key_ready_timeout
    verified = wait_until_key_works(config, keys, timeout) if timeout else False
    if issue.request.is_cancelled():
        # Vault's client went away, so no lease would track the user.
        _roll_back(issue, username, wal_id)
        raise RequestCancelledError(
            "Vault cancelled the request (its client went away); the IAM user "
            f"{username!r} was deleted"
        )
    response = _leased(
        issue, secret, username, keys, verified=verified, timeout=timeout
    )
    # Vault records the lease only once it has the response, so the WAL entry
    # outlives the response. If the plugin dies before the deferred delete,
    # the rollback deletes the user while its lease runs: the credential
    # ends early, and the lease's revoke then finds no user, which is success.
    issue.backend.defer(delete_wal, issue.request.storage, wal_id)
    return response


def _create(issue: Issue, plan: UserPlan, wal_id: str) -> KeyPair:
    try:
        return create_user(issue.clients.iam, plan)
    except aws_errors() as err:
        logger.error(
            "create failed: role=%s agent=%s username=%s error=%s",
            issue.role_name,
            issue.caller.agent,
            plan.username,
            describe(err),
        )
        if _name_taken(err):
            # The user belongs to someone else, such as another lease when the
            # username_template repeats a name, so only the WAL entry goes.
            delete_wal(issue.request.storage, wal_id)
        else:
            _roll_back(issue, plan.username, wal_id)
        raise failure(err, f"creating IAM user {plan.username!r}") from err


def _name_taken(err: BaseException) -> bool:
    """Return whether a user of the name existed before this read's CreateUser.

    Only a first attempt proves it. botocore retries a CreateUser whose
    response was lost, and the user that the lost attempt created then
    fails the retry with EntityAlreadyExists too.
    """
    operation = getattr(err, "operation_name", "")
    if operation != "CreateUser" or error_code(err) != "EntityAlreadyExists":
        return False
    response = getattr(err, "response", {})
    return int(response.get("ResponseMetadata", {}).get("RetryAttempts", 0)) == 0


def _roll_back(issue: Issue, username: str, wal_id: str) -> None:
    try:
        delete_user(issue.clients.iam, username)
    except aws_errors() as err:
        # The WAL entry stays; the periodic rollback retries.
        logger.warning(
            "rollback failed, retried later: username=%s error=%s",
            username,
            describe(err),
        )
        return
    delete_wal(issue.request.storage, wal_id)


def wait_until_key_works(config: RootConfig, keys: KeyPair, timeout: int) -> bool:
    """Poll sts:GetCallerIdentity with `keys` until it succeeds or `timeout` ends.

    IAM is eventually consistent: a new key may be rejected for a few
    seconds. AccessDenied also proves the key authenticates.
    """
    sts = sts_client(config, keys)
    deadline = time.monotonic() + timeout
    pause = _FIRST_POLL
    while True:
        try:
            sts.get_caller_identity()
            return True
        except aws_errors() as err:
            code = error_code(err)
            if code == "AccessDenied":
                return True
            if code and code not in KEY_NOT_READY_CODES:
                logger.warning("key check failed: error=%s", describe(err))
        if time.monotonic() + pause > deadline:
            return False
        time.sleep(pause)
        pause = min(pause * 2, _MAX_POLL)


def _leased(
    issue: Issue,
    secret: SecretType,
    username: str,
    keys: KeyPair,
    *,
    verified: bool,
    timeout: int,
) -> Response:
    ttl, max_ttl = lease_ttls(issue)
    data = {
        "access_key": keys.access_key,
        "secret_key": keys.secret_key,
        # Vault's older name of the session token; agent-exec reads the newer.
        "security_token": None,
        "session_token": None,
        **issue.endpoint_data(),
    }
    internal = {
        **issue.internal_data(IAM_USER),
        "username": username,
        "access_key": keys.access_key,
        "is_sts": False,
        "key_verified": verified,
        "default_ttl": ttl,
        "max_ttl": max_ttl,
    }
    response = secret.response(data, internal, ttl=ttl, max_ttl=max_ttl)
    if timeout and not verified:
        response.warnings.append(
            f"the new access key did not authenticate within {timeout} s; IAM may "
            "need longer to propagate it: retry the first AWS call"
        )
    logger.info(
        "credential issued: role=%s agent=%s username=%s token_accessor=%s "
        "ttl=%d max_ttl=%d key_verified=%s",
        issue.role_name,
        issue.caller.agent,
        username,
        issue.request.client_token_accessor,
        ttl,
        max_ttl,
        verified,
    )
    return response


def lease_ttls(issue: Issue) -> tuple[int, int]:
    """Return (ttl, max_ttl): the role's, else aws/config/lease's, else the mount's."""
    lease = load_lease(issue.request.storage)
    role = issue.role
    max_ttl = min((t for t in (role.max_ttl, lease.lease_max) if t), default=0)
    return effective_ttls(
        issue.backend.system, role.default_ttl or lease.lease, max_ttl
    )
