"""The contract between the plugin protocol and the backends.

These types mirror Vault's `sdk/logical` package in plain Python. The protocol
layer (`plugin.bridge`) turns gRPC messages into these objects and back; the
path framework and the backends never see protobuf or gRPC. Durations are
seconds (`int`) here; the bridge converts to and from Vault's nanoseconds.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


class Operation(enum.StrEnum):
    """Operations Vault sends to a secrets engine (`logical.Operation`)."""

    CREATE = "create"
    READ = "read"
    UPDATE = "update"
    PATCH = "patch"
    DELETE = "delete"
    LIST = "list"
    HELP = "help"
    ALIAS_LOOKAHEAD = "alias-lookahead"
    RESOLVE_ROLE = "resolve-role"
    HEADER_OPERATION = "header"
    REVOKE = "revoke"
    RENEW = "renew"
    ROLLBACK = "rollback"
    RESOLVE_PATH = "resolve-path"


class ErrorKind(enum.Enum):
    """Error kind that sets the HTTP status Vault returns (`err_type`)."""

    INTERNAL = "internal"  # 500
    BAD_REQUEST = "bad_request"  # 400
    PERMISSION_DENIED = "permission_denied"  # 403
    UNSUPPORTED_OPERATION = "unsupported_operation"  # 405
    UNSUPPORTED_PATH = "unsupported_path"  # 404


class LogicalError(Exception):
    """An error a handler raises to end a request.

    `kind` decides the status Vault returns; the message reaches the caller
    verbatim, so it must never contain a secret.
    """

    kind: ErrorKind = ErrorKind.INTERNAL

    def __init__(self, message: str, *, kind: ErrorKind | None = None) -> None:
        super().__init__(message)
        if kind is not None:
            self.kind = kind


class BadRequestError(LogicalError):
    kind = ErrorKind.BAD_REQUEST


class PermissionDeniedError(LogicalError):
    kind = ErrorKind.PERMISSION_DENIED


class UnsupportedOperationError(LogicalError):
    kind = ErrorKind.UNSUPPORTED_OPERATION


class UnsupportedPathError(LogicalError):
    kind = ErrorKind.UNSUPPORTED_PATH


class PasswordPolicyError(BadRequestError):
    """Vault generated no password from a password policy.

    The policy does not exist, or its rules cannot be met: Vault reports
    both the same way.
    """


class Storage(Protocol):
    """The mount's barrier-encrypted storage (`logical.Storage`)."""

    def get(self, key: str) -> bytes | None: ...

    def put(self, key: str, value: bytes) -> None: ...

    def delete(self, key: str) -> None: ...

    def list_page(self, prefix: str, after: str, limit: int) -> list[str]:
        """Return up to `limit` keys of `list(prefix)` sorted after `after`.

        A `limit` of 0 or less returns all of them, as Vault's ListPage does.
        """
        ...

    def list(self, prefix: str) -> list[str]: ...


@dataclass(frozen=True)
class EntityAlias:
    name: str
    mount_accessor: str
    mount_type: str
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Entity:
    id: str
    name: str
    aliases: tuple[EntityAlias, ...] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)
    disabled: bool = False


class SystemView(Protocol):
    """Vault's view of the mount and its callers (`logical.SystemView`)."""

    def default_lease_ttl(self) -> int: ...

    def max_lease_ttl(self) -> int: ...

    def entity_info(self, entity_id: str) -> Entity | None: ...

    def plugin_env_vault_version(self) -> str: ...

    def generate_password_from_policy(self, policy_name: str) -> str:
        """Return a password generated from Vault's password policy `policy_name`.

        Raises PasswordPolicyError when Vault cannot generate one from it.
        """
        ...


@dataclass
class LeaseOptions:
    """Lease timing, in seconds; `issue_time` is a Unix timestamp."""

    ttl: int = 0
    max_ttl: int = 0
    renewable: bool = False
    increment: int = 0
    issue_time: float = 0.0


@dataclass
class Secret:
    """A leased secret: what a creds read returns and what revoke receives.

    `internal_data` must hold everything revocation needs, because revoke
    and expiry requests carry no identity and may arrive after the role
    that minted the secret was deleted. Never put a secret in it.
    """

    lease: LeaseOptions = field(default_factory=LeaseOptions)
    internal_data: dict[str, Any] = field(default_factory=dict)
    lease_id: str = ""


@dataclass
class Connection:
    remote_addr: str = ""
    remote_port: int = 0


@dataclass
class Request:
    """One request from Vault, already decoded.

    `path` is relative to the mount. `data` is the decoded JSON body merged
    with query parameters, as Vault sends it. `storage` is the mount's own
    storage; with multiplexing, each mount has its own.
    """

    operation: Operation
    path: str
    storage: Storage
    data: dict[str, Any] = field(default_factory=dict)
    secret: Secret | None = None
    id: str = ""
    mount_point: str = ""
    mount_accessor: str = ""
    display_name: str = ""
    entity_id: str = ""
    client_token_accessor: str = ""
    connection: Connection | None = None
    headers: dict[str, list[str]] = field(default_factory=dict)
    # Returns True once Vault has cancelled the request (its client went
    # away), so no response will reach Vault.
    is_cancelled: Callable[[], bool] = field(default=lambda: False, repr=False)


@dataclass
class Response:
    """A handler's result. `data` is JSON-serialisable."""

    data: dict[str, Any] = field(default_factory=dict)
    secret: Secret | None = None
    warnings: list[str] = field(default_factory=list)
    redirect: str = ""


class Backend(Protocol):
    """Secrets engine that the protocol layer drives, one instance per mount.

    `setup` receives the mount's config (`BackendConfig.Config`, e.g. the
    plugin env) and a handle to its storage and system view; it must not
    touch storage, because registration calls Setup with no usable storage.
    `initialize` runs once storage works. All methods may be called from
    several threads at once.
    """

    def setup(self, config: Mapping[str, str], system: SystemView) -> None: ...

    def initialize(self, storage: Storage) -> None: ...

    def handle_request(self, request: Request) -> Response | None: ...

    def handle_existence_check(self, request: Request) -> tuple[bool, bool]:
        """Return (check_found, exists) for a `create` or `update` request.

        Vault calls `HandleExistenceCheck` before a write to choose between
        the `create` and `update` operations (and ACL capabilities). A path
        without a check returns (False, False), so Vault sends `update`.
        """
        ...

    def special_paths(self) -> dict[str, list[str]]: ...

    def invalidate(self, key: str) -> None: ...

    def cleanup(self) -> None: ...

    def backend_type(self) -> int: ...
