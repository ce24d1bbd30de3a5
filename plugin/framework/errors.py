"""Errors the path framework raises, one class per failed check.

Each class derives from the `plugin.logical` error of the status it maps
to, so the protocol layer needs no knowledge of the framework.
"""

from __future__ import annotations

from plugin.logical import (
    BadRequestError,
    LogicalError,
    UnsupportedOperationError,
    UnsupportedPathError,
)


class FrameworkError(LogicalError):
    """Base of the framework's errors; a broken backend definition is a 500."""


class InvalidFieldError(BadRequestError):
    """A request field has a value of the wrong type or format."""

    def __init__(self, name: str, value: object, accepted: str) -> None:
        super().__init__(
            f"invalid value {_show(value)} for field {name!r}: expected {accepted}"
        )
        self.field = name


class MissingFieldError(BadRequestError):
    """A required request field is absent or empty."""

    def __init__(self, name: str, hint: str = "") -> None:
        message = f"missing required field {name!r}"
        super().__init__(f"{message}: {hint}" if hint else message)
        self.field = name


class PathNotFoundError(UnsupportedPathError):
    """No path pattern of the backend matches the request path."""

    def __init__(self, path: str) -> None:
        super().__init__(f"unsupported path {path!r}: no route of this mount matches")


class OperationNotSupportedError(UnsupportedOperationError):
    """The matched path defines no handler for the request's operation."""

    def __init__(self, operation: str, path: str, supported: list[str]) -> None:
        listed = ", ".join(supported) or "none"
        super().__init__(
            f"operation {operation!r} is not supported on {path!r}; "
            f"supported operations: {listed}"
        )


class UnknownSecretError(FrameworkError):
    """A renew or revoke names a secret type this backend never issued."""

    def __init__(self, secret_type: object) -> None:
        super().__init__(
            f"secret type {secret_type!r} is not issued by this backend; "
            "the lease cannot be renewed or revoked here"
        )


class WALRollbackError(FrameworkError):
    """One or more write-ahead log entries could not be rolled back."""


def _show(value: object) -> str:
    """Render a rejected value for an error message, shortened."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
