"""A small path framework for Vault secrets engines, after Vault's `sdk/framework`.

A backend module declares `Path` objects (pattern, fields, handlers, help),
`SecretType` objects (revoke and renew handlers) and write-ahead-log
rollback handlers, bundles them in an `Extension`, and registers it on a
`FrameworkBackend`, which implements `plugin.logical.Backend`.
"""

from plugin.framework.backend import Extension, FrameworkBackend, WALRollbackHandler
from plugin.framework.errors import (
    FrameworkError,
    InvalidFieldError,
    MissingFieldError,
    OperationNotSupportedError,
    PathNotFoundError,
    UnknownSecretError,
    WALRollbackError,
)
from plugin.framework.field_data import FieldData
from plugin.framework.fields import Field, FieldType, parse_duration
from plugin.framework.lease import effective_ttls, extend_ttl
from plugin.framework.path import Handler, Path, name_group
from plugin.framework.secret import SecretType, renewed
from plugin.framework.storage import (
    InMemoryStorage,
    get_json,
    iter_keys,
    list_entries,
    load_entry,
    put_json,
    save_entry,
)
from plugin.framework.wal import WALEntry, delete_wal, get_wal, list_wal, put_wal

__all__ = [
    "Extension",
    "Field",
    "FieldData",
    "FieldType",
    "FrameworkBackend",
    "FrameworkError",
    "Handler",
    "InMemoryStorage",
    "InvalidFieldError",
    "MissingFieldError",
    "OperationNotSupportedError",
    "Path",
    "PathNotFoundError",
    "SecretType",
    "UnknownSecretError",
    "WALEntry",
    "WALRollbackError",
    "WALRollbackHandler",
    "delete_wal",
    "effective_ttls",
    "extend_ttl",
    "get_json",
    "get_wal",
    "iter_keys",
    "list_entries",
    "list_wal",
    "load_entry",
    "name_group",
    "parse_duration",
    "put_json",
    "put_wal",
    "renewed",
    "save_entry",
]
