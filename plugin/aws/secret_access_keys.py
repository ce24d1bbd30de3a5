"""The `access_keys` secret type: revoke and renew AWS credentials.

Revoke and renew requests carry no caller identity and may arrive after
the role was deleted, so they work from the lease's `internal_data` and
the stored root config alone.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from plugin.aws.backend import AwsBackend
from plugin.aws.client import aws_errors, describe, error_code, is_transient
from plugin.aws.errors import AwsUnavailableError
from plugin.aws.iam import delete_user
from plugin.aws.session_revoke import deny_sessions_before
from plugin.framework import SecretType, extend_ttl, renewed
from plugin.logical import BadRequestError, Request, Response

if TYPE_CHECKING:
    from mypy_boto3_iam import IAMClient

logger = logging.getLogger(__name__)

SECRET_TYPE_ACCESS_KEYS = "access_keys"  # noqa: S105 (Vault's type name)
# Revokes return within this many seconds, well inside Vault's 90 s request
# timeout; a revoke still failing then is retried by Vault.
REVOKE_DEADLINE = 45
# IAM may not show a user created this recently: "not found" is trusted only
# for older users, or for users whose key was seen to authenticate.
PROPAGATION_GRACE = 300
_FIRST_PAUSE = 0.5
_MAX_PAUSE = 8.0


class UserNotVisibleError(Exception):
    """IAM reports a just-created user as missing, which may be propagation lag."""


class AccessKeysSecret:
    """Revoke and renew handlers bound to one backend."""

    def __init__(self, backend: AwsBackend) -> None:
        self.backend = backend

    def secret_type(self) -> SecretType:
        return SecretType(SECRET_TYPE_ACCESS_KEYS, revoke=self.revoke, renew=self.renew)

    def revoke(self, request: Request) -> Response | None:
        internal = _internal(request)
        if internal.get("is_sts"):
            return self._revoke_session(request, internal)
        username = str(internal["username"])
        issued = request.secret.lease.issue_time if request.secret else 0.0
        trust_missing = bool(internal.get("key_verified")) or (
            time.time() - issued > PROPAGATION_GRACE
        )
        existed = self.backend.with_clients(
            request.storage,
            lambda clients: self._delete_with_retries(
                clients.iam, username, trust_missing
            ),
        )
        logger.info(
            "credential revoked: role=%s agent=%s username=%s lease_id=%s existed=%s",
            internal.get("role"),
            internal.get("agent"),
            username,
            request.secret.lease_id if request.secret else "",
            existed,
        )
        return None

    def renew(self, request: Request) -> Response:
        internal = _internal(request)
        if internal.get("is_sts"):
            raise BadRequestError(
                "STS credentials cannot be renewed: their session ends at "
                f"{_utc(internal.get('expires_at'))}; read new credentials instead"
            )
        lease = request.secret.lease if request.secret else None
        ttl = extend_ttl(
            increment=lease.increment if lease else 0,
            default_ttl=int(internal.get("default_ttl") or 0),
            max_ttl=int(internal.get("max_ttl") or 0),
            issue_time=lease.issue_time if lease else 0.0,
        )
        logger.info(
            "credential renewed: role=%s username=%s ttl=%d",
            internal.get("role"),
            internal.get("username"),
            ttl,
        )
        return renewed(request, ttl)

    def _delete_with_retries(
        self, iam: IAMClient, username: str, trust_missing: bool
    ) -> bool:
        def attempt() -> bool:
            existed = delete_user(iam, username)
            if not existed and not trust_missing:
                raise UserNotVisibleError(username)
            return existed

        try:
            return retry_for(REVOKE_DEADLINE, attempt, _worth_retrying, username)
        except UserNotVisibleError as err:
            raise AwsUnavailableError(
                f"IAM reports user {username!r} missing, but it was created less than "
                f"{PROPAGATION_GRACE} s ago and IAM is eventually consistent; the "
                "revoke fails so that Vault retries it"
            ) from err
        except aws_errors() as err:
            raise AwsUnavailableError(
                f"deleting IAM user {username!r} failed: {describe(err)}; Vault "
                "retries the revoke"
            ) from err

    def _revoke_session(self, request: Request, internal: dict[str, Any]) -> Response:
        expires = _utc(internal.get("expires_at"))
        session = internal.get("session_name") or "the session"
        role_arn = str(internal.get("role_arn") or "")
        if internal.get("deny_older_sessions") and role_arn:
            now = datetime.datetime.now(datetime.UTC)
            try:
                cutoff = self.backend.with_clients(
                    request.storage,
                    lambda clients: deny_sessions_before(clients.iam, role_arn, now),
                )
            except aws_errors() as err:
                raise AwsUnavailableError(
                    f"denying older sessions of {role_arn} failed: {describe(err)}; "
                    "Vault retries the revoke"
                ) from err
            warning = (
                f"denied every session of {role_arn} issued before "
                f"{cutoff.isoformat()}, other agents' sessions included; the "
                f"credentials of {session} would otherwise stay valid until {expires}"
            )
        else:
            warning = (
                f"AWS STS credentials cannot be revoked one by one: the credentials "
                f"of {session} remain valid until {expires}; set "
                "deny_older_sessions_on_revoke on the role to deny older sessions "
                "of the IAM role at revoke"
            )
        logger.warning(
            "session revoke: role=%s agent=%s session=%s message=%s",
            internal.get("role"),
            internal.get("agent"),
            session,
            warning,
        )
        return Response(warnings=[warning])


def _worth_retrying(err: BaseException) -> bool:
    if isinstance(err, UserNotVisibleError):
        return True
    # DeleteConflict: the holder attached something after the listing.
    return error_code(err) == "DeleteConflict" or (
        isinstance(err, aws_errors()) and is_transient(err)
    )


def retry_for(
    seconds: float,
    attempt: Callable[[], bool],
    retryable: Callable[[BaseException], bool],
    username: str,
) -> bool:
    """Run `attempt` until it succeeds, with exponential backoff up to `seconds`.

    An error that `retryable` rejects, or one that leaves no time for
    another attempt, is raised. tenacity is not among the plugin's runtime
    dependencies (plugin/requirements.lock), so the loop is written here.
    """
    deadline = time.monotonic() + seconds
    pause, number = _FIRST_PAUSE, 1
    while True:
        try:
            return attempt()
        except Exception as err:
            if not retryable(err) or time.monotonic() + pause > deadline:
                raise
            logger.warning(
                "revoke retried: username=%s attempt=%d error=%s",
                username,
                number,
                describe(err),
            )
        time.sleep(pause)
        pause, number = min(pause * 2, _MAX_PAUSE), number + 1


def _internal(request: Request) -> dict[str, Any]:
    if request.secret is None:
        raise ValueError("revoke and renew requests always carry their secret")
    return request.secret.internal_data


def _utc(timestamp: object) -> str:
    if not isinstance(timestamp, int | float):
        return "its expiry"
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).isoformat()
