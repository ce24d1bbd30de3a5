"""boto3 clients for IAM and STS, and the classification of their errors.

boto3 is imported only here and only when a client is first built, so a
plugin that never serves an `aws/` path starts without it (about 140 ms).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from plugin.aws.config import RootConfig
from plugin.aws.errors import AwsError, AwsRejectedError, AwsUnavailableError

if TYPE_CHECKING:
    from mypy_boto3_iam import IAMClient
    from mypy_boto3_sts import STSClient

CONNECT_TIMEOUT = 5
READ_TIMEOUT = 20

# Error codes of failures that a later retry may not meet; other codes mean
# the request itself is wrong.
TRANSIENT_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "ServiceUnavailable",
        "ServiceFailure",
        "InternalFailure",
        "InternalError",
        "RequestTimeout",
        "ConcurrentModification",
    }
)
NOT_FOUND = "NoSuchEntity"
# Codes STS returns while a new access key has not reached it yet.
KEY_NOT_READY_CODES = frozenset({"InvalidClientTokenId", "SignatureDoesNotMatch"})
# Codes IAM and STS return when the signing access key is deleted or unknown.
AUTH_FAILURE_CODES = frozenset({"InvalidClientTokenId", "SignatureDoesNotMatch"})


@dataclass(frozen=True)
class KeyPair:
    """Credentials to sign with; `session_token` only for STS sessions."""

    access_key: str
    secret_key: str
    session_token: str = ""


def aws_errors() -> tuple[type[Exception], ...]:
    """Return the exception classes boto3 raises for failed calls."""
    from botocore.exceptions import BotoCoreError, ClientError
    from botocore.parsers import ResponseParserError

    # An unparsable response (an HTML error page) is not a BotoCoreError.
    return (ClientError, BotoCoreError, ResponseParserError)


def error_code(err: BaseException) -> str:
    """Return the AWS error code of a failed call, or "" for a transport error."""
    response = getattr(err, "response", None)
    if not isinstance(response, dict):
        return ""
    return str(response.get("Error", {}).get("Code", ""))


def http_status(err: BaseException) -> int:
    response = getattr(err, "response", None)
    if not isinstance(response, dict):
        return 0
    return int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def is_transient(err: BaseException) -> bool:
    """Return whether a retry may succeed: throttling, 5xx, connection errors."""
    code = error_code(err)
    if not code:
        return True  # no AWS error response at all: a connection or parse failure
    return code in TRANSIENT_CODES or http_status(err) >= 500


def describe(err: BaseException) -> str:
    """Return `Code: message` of a failed call; AWS messages carry no secret."""
    code = error_code(err)
    response = getattr(err, "response", None)
    if code and isinstance(response, dict):
        message = str(response.get("Error", {}).get("Message", ""))
        return f"{code}: {message}" if message else code
    return f"{type(err).__name__}: {err}"


def iam_client(config: RootConfig, keys: KeyPair | None = None) -> IAMClient:
    """Build an IAM client signed with `keys`, else with the config's keys."""
    client: IAMClient = _client("iam", config, config.iam_endpoint, keys)
    return client


def sts_client(config: RootConfig, keys: KeyPair | None = None) -> STSClient:
    """Build an STS client signed with `keys`, else with the config's keys."""
    client: STSClient = _client("sts", config, config.sts_endpoint, keys)
    return client


def _client(
    service: str, config: RootConfig, endpoint: str, keys: KeyPair | None
) -> Any:
    import boto3
    from botocore.config import Config

    if keys is None and config.access_key:
        keys = KeyPair(config.access_key, config.secret_key)
    retries: dict[str, Any] = {"mode": "standard"}
    if config.max_retries >= 0:
        retries["total_max_attempts"] = config.max_retries + 1
    settings = Config(
        region_name=config.effective_region(),
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_TIMEOUT,
        retries=retries,  # type: ignore[arg-type]
        user_agent_extra="agent-bridge",
    )
    # A fresh session per client: boto3's default session is shared and
    # not thread-safe to create clients from.
    session = boto3.session.Session(
        aws_access_key_id=keys.access_key if keys else None,
        aws_secret_access_key=keys.secret_key if keys else None,
        aws_session_token=(keys.session_token or None) if keys else None,
        botocore_session=isolated_botocore_session() if keys else None,
    )
    return session.client(
        service,  # type: ignore[call-overload]
        endpoint_url=endpoint or None,
        config=settings,
    )


def isolated_botocore_session() -> Any:
    """Return a botocore session that reads no profile or AWS config file.

    With explicit keys, the host's AWS_PROFILE and ~/.aws files have nothing
    to add, and a profile named there but missing would fail every client.
    """
    import botocore.session

    return botocore.session.Session(
        session_vars={
            "profile": (None, None, None, None),
            "config_file": (None, None, os.devnull, None),
            "credentials_file": (None, None, os.devnull, None),
        }
    )


def failure(err: BaseException, action: str) -> AwsError:
    """Return the error a handler raises for a failed AWS call.

    Throttling, 5xx and transport failures are 500s, so Vault retries a
    failed revoke; every other rejection is the operator's to fix: a 400.
    """
    if is_transient(err):
        return AwsUnavailableError(f"{action} failed, try again: {describe(err)}")
    return AwsRejectedError(f"{action} was rejected by AWS: {describe(err)}")
