"""Errors of the database backend, one class per failed check.

Each class derives from `DatabaseError` and from the `plugin.logical`
error of the HTTP status it maps to.
"""

from __future__ import annotations

from plugin.logical import BadRequestError, LogicalError, PermissionDeniedError


class DatabaseError(LogicalError):
    """Base of the database backend's errors, mapped to a 500 by default."""


class ConfigNotFoundError(DatabaseError, BadRequestError):
    """A role or lease refers to a connection config that does not exist."""


class RoleNotFoundError(DatabaseError, BadRequestError):
    """A request names a role that does not exist."""


class RoleNotAllowedError(DatabaseError, PermissionDeniedError):
    """A connection config's allowed_roles does not include the role."""


class ConfigInUseError(DatabaseError, BadRequestError):
    """A config cannot be deleted while credentials minted from it are live."""


class InvalidConfigError(DatabaseError, BadRequestError):
    """A connection config value is invalid."""


class InvalidRoleError(DatabaseError, BadRequestError):
    """A role definition is invalid."""


class DatabaseUnavailableError(DatabaseError):
    """PostgreSQL could not be reached; Vault retries revokes after this."""


class AuthenticationFailedError(DatabaseUnavailableError):
    """PostgreSQL rejected the configured user or password."""


class StatementFailedError(DatabaseError):
    """PostgreSQL rejected a statement; the message carries no secret."""


class RequestCancelledError(DatabaseError):
    """Vault cancelled the creds read, so the credential would reach no one."""
