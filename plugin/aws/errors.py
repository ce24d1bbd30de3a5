"""Errors of the AWS backend, one class per failed check.

Each class derives from `AwsError` and from the `plugin.logical` error of
the HTTP status it maps to.
"""

from __future__ import annotations

from plugin.logical import BadRequestError, LogicalError


class AwsError(LogicalError):
    """Base of the AWS backend's errors, mapped to a 500 by default."""


class ConfigNotFoundError(AwsError, BadRequestError):
    """`aws/config/root` was never written."""


class InvalidConfigError(AwsError, BadRequestError):
    """A value of `aws/config/root` or `aws/config/lease` is invalid."""


class RoleNotFoundError(AwsError, BadRequestError):
    """A request names a role that does not exist."""


class InvalidRoleError(AwsError, BadRequestError):
    """A role definition is invalid."""


class InvalidRequestError(AwsError, BadRequestError):
    """A creds request parameter (ttl, role_arn, role_session_name) is invalid."""


class AwsRejectedError(AwsError, BadRequestError):
    """AWS rejected a call for a reason the operator can fix (policy, limit, name)."""


class AwsUnavailableError(AwsError):
    """AWS could not be reached or kept failing; Vault retries revokes after this."""


class RequestCancelledError(AwsError):
    """Vault cancelled the creds read, so the key would reach no one."""
