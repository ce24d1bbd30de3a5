"""Errors of the database backend, one class per failed check."""

from __future__ import annotations

from plugin.logical import BadRequestError, ErrorKind, LogicalError


class DatabaseError(LogicalError):
    """Base of the database backend's errors."""


class ConfigNotFoundError(DatabaseError):
    """A role or lease refers to a connection config that does not exist."""

    kind = ErrorKind.BAD_REQUEST


class RoleNotFoundError(DatabaseError):
    """A request names a role that does not exist."""

    kind = ErrorKind.BAD_REQUEST


class RoleNotAllowedError(DatabaseError):
    """A connection config's allowed_roles does not include the role."""

    kind = ErrorKind.PERMISSION_DENIED


class ConfigInUseError(BadRequestError):
    """A config cannot be deleted while credentials minted from it are live."""


class InvalidConfigError(BadRequestError):
    """A connection config value is invalid."""


class InvalidRoleError(BadRequestError):
    """A role definition is invalid."""


class DatabaseUnavailableError(DatabaseError):
    """PostgreSQL could not be reached; Vault retries revokes after this."""


class AuthenticationFailedError(DatabaseUnavailableError):
    """PostgreSQL rejected the configured user or password."""


class StatementFailedError(DatabaseError):
    """PostgreSQL rejected a statement; the message carries no secret."""
