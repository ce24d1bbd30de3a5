"""The generic backend: routes Vault's requests to paths and secret types.

A backend module (database, AWS) contributes an `Extension`: its paths,
secret types, rollback handlers and life-cycle hooks. `FrameworkBackend`
implements `plugin.logical.Backend` over any number of extensions, so one
mount serves every path from one list.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from plugin.framework.errors import (
    FrameworkError,
    OperationNotSupportedError,
    PathNotFoundError,
    UnknownSecretError,
    WALRollbackError,
)
from plugin.framework.field_data import FieldData
from plugin.framework.path import Path, help_response
from plugin.framework.secret import SECRET_TYPE_KEY, SecretType
from plugin.framework.storage import CachingStorage
from plugin.framework.wal import WAL_ROLLBACK_MIN_AGE, delete_wal, get_wal, list_wal
from plugin.logical import (
    BadRequestError,
    Operation,
    Request,
    Response,
    Storage,
    SystemView,
)

logger = logging.getLogger(__name__)

WALRollbackHandler = Callable[[Request, dict[str, Any]], None]

# `logical.TypeLogical`: a secrets engine, as opposed to an auth method.
BACKEND_TYPE_LOGICAL = 1


@dataclass
class Extension:
    """The paths, secret types and hooks one backend module adds to a mount."""

    paths: list[Path]
    secrets: list[SecretType] = field(default_factory=list)
    wal_rollback: dict[str, WALRollbackHandler] = field(default_factory=dict)
    periodic: Callable[[Request], None] | None = None
    initialize: Callable[[Storage], None] | None = None
    cleanup: Callable[[], None] | None = None
    invalidate: Callable[[str], None] | None = None
    seal_wrap_storage: list[str] = field(default_factory=list)
    # Storage prefixes whose entries change only through this mount's own
    # writes (configs, roles), kept in memory after the first read.
    cached_storage: list[str] = field(default_factory=list)


class FrameworkBackend:
    """A `plugin.logical.Backend` built from extensions; one per mount."""

    def __init__(self, help_text: str, *, wal_min_age: int = WAL_ROLLBACK_MIN_AGE):
        self.help_text = help_text
        self.wal_min_age = wal_min_age
        self.extensions: list[Extension] = []
        self.paths: list[Path] = []
        self.secrets: dict[str, SecretType] = {}
        self.wal_rollback: dict[str, WALRollbackHandler] = {}
        self.config: dict[str, str] = {}
        self._system: SystemView | None = None
        self._storage: CachingStorage | None = None

    def register(self, extension: Extension) -> None:
        """Add an extension's paths, secret types and rollback handlers."""
        self.extensions.append(extension)
        self.paths.extend(extension.paths)
        for secret in extension.secrets:
            if secret.name in self.secrets:
                raise FrameworkError(f"secret type {secret.name!r} registered twice")
            self.secrets[secret.name] = secret
        self.wal_rollback.update(extension.wal_rollback)

    @property
    def system(self) -> SystemView:
        """The mount's system view; available once Vault called `setup`."""
        if self._system is None:
            raise FrameworkError("backend used before setup: no system view yet")
        return self._system

    def setup(self, config: Mapping[str, str], system: SystemView) -> None:
        self.config = dict(config)
        self._system = system

    def initialize(self, storage: Storage) -> None:
        storage = self._cached(storage)
        for extension in self.extensions:
            if extension.initialize is not None:
                extension.initialize(storage)

    def _cached(self, storage: Storage) -> Storage:
        """Return the mount's storage behind the cache of the extensions' prefixes.

        The protocol layer passes one storage object per mount, so one
        cache serves every request; another object gets a cache of its own.
        """
        cache = self._storage
        if cache is None or cache.inner is not storage:
            prefixes = [p for ext in self.extensions for p in ext.cached_storage]
            cache = self._storage = CachingStorage(storage, prefixes)
        return cache

    def special_paths(self) -> dict[str, list[str]]:
        wrapped = [p for ext in self.extensions for p in ext.seal_wrap_storage]
        return {"seal_wrap_storage": wrapped}

    def invalidate(self, key: str) -> None:
        if self._storage is not None:
            self._storage.invalidate(key)
        for extension in self.extensions:
            if extension.invalidate is not None:
                extension.invalidate(key)

    def cleanup(self) -> None:
        for extension in self.extensions:
            if extension.cleanup is not None:
                extension.cleanup()

    def backend_type(self) -> int:
        return BACKEND_TYPE_LOGICAL

    def route(self, request_path: str) -> tuple[Path, dict[str, str]]:
        """Return the first path matching `request_path` and its captures."""
        for path in self.paths:
            captures = path.match(request_path)
            if captures is not None:
                return path, captures
        raise PathNotFoundError(request_path)

    def handle_existence_check(self, request: Request) -> tuple[bool, bool]:
        """Return (check_found, exists) for a create or update request.

        Vault calls this before a write to decide whether the write is a
        `create` or an `update`; a path without a check is always updated.
        """
        if request.operation not in (Operation.CREATE, Operation.UPDATE):
            raise BadRequestError(
                f"existence check requires a create or update, not "
                f"{request.operation.value!r}"
            )
        path, captures = self.route(request.path)
        request.storage = self._cached(request.storage)
        if path.existence_check is None:
            return False, False
        # Only the path's captures: OpenBao turns any error of an existence
        # check into a 500, so an invalid body value must wait for the
        # operation's handler, which rejects it with a 400 naming the field.
        fields = FieldData(path.fields, {}, captures)
        return True, path.existence_check(request, fields)

    def handle_request(self, request: Request) -> Response | None:
        operation = request.operation
        request.storage = self._cached(request.storage)
        if operation in (Operation.RENEW, Operation.REVOKE):
            return self._handle_secret(request)
        if operation is Operation.ROLLBACK:
            return self._handle_rollback(request)
        if operation is Operation.HELP and request.path == "":
            return help_response(self._root_help())

        path, captures = self.route(request.path)
        if operation is Operation.RESOLVE_PATH:
            # OpenBao reads `path` as the canonical request path; every path
            # here is canonical already, so it is returned unchanged.
            return Response(data={"path": request.path, "pattern": path.pattern})
        if operation is Operation.HELP:
            return path.help_response(request.path)

        handler = path.operations.get(operation)
        if handler is None:
            supported = sorted(op.value for op in path.operations)
            raise OperationNotSupportedError(operation.value, request.path, supported)
        data = path.field_data(request, captures)
        response = handler(request, data)
        return _with_field_warnings(response, data.unknown, data.replaced)

    def _handle_secret(self, request: Request) -> Response | None:
        if request.secret is None:
            raise BadRequestError(f"{request.operation.value} request has no secret")
        secret_type = request.secret.internal_data.get(SECRET_TYPE_KEY)
        secret = self.secrets.get(str(secret_type))
        if secret is None:
            raise UnknownSecretError(secret_type)
        if request.operation is Operation.REVOKE:
            return secret.revoke(request)
        if secret.renew is None:
            raise BadRequestError(f"secrets of type {secret.name!r} are not renewable")
        return secret.renew(request)

    def _handle_rollback(self, request: Request) -> Response | None:
        failures: list[str] = []
        for extension in self.extensions:
            if extension.periodic is None:
                continue
            try:
                extension.periodic(request)
            except Exception as err:  # one extension must not stop the others
                logger.error("periodic function failed: error=%s", err)
                failures.append(f"periodic function: {err}")
        failures += self._roll_back_wal(request)
        if failures:
            raise WALRollbackError("rollback failed: " + "; ".join(failures))
        return None

    def _roll_back_wal(self, request: Request) -> list[str]:
        # Vault sends `immediate` on unmount: roll back everything now.
        min_age = 0 if "immediate" in request.data else self.wal_min_age
        failures = []
        for entry_id in list_wal(request.storage):
            entry = get_wal(request.storage, entry_id)
            if entry is None or time.time() - entry.created_at < min_age:
                continue
            handler = self.wal_rollback.get(entry.kind)
            if handler is None:
                logger.warning(
                    "no rollback handler: wal_id=%s kind=%s", entry_id, entry.kind
                )
                continue
            try:
                handler(request, entry.data)
            except Exception as err:  # the entry stays and is retried next time
                logger.error(
                    "rollback failed: wal_id=%s kind=%s error=%s",
                    entry_id,
                    entry.kind,
                    err,
                )
                failures.append(f"{entry.kind} entry {entry_id}: {err}")
                continue
            delete_wal(request.storage, entry_id)
            logger.info("rolled back: wal_id=%s kind=%s", entry_id, entry.kind)
        return failures

    def _root_help(self) -> str:
        lines = ["## DESCRIPTION", "", self.help_text.strip(), "", "## PATHS", ""]
        lines.append(
            "The following paths are supported by this backend. To view help "
            "for any of them, use the help command with a path matching its "
            "pattern."
        )
        lines.append("")
        for path in sorted(self.paths, key=lambda p: p.pattern):
            lines.append(f"    {path.pattern}")
            lines.append(f"        {path.help_synopsis.strip()}")
            lines.append("")
        return "\n".join(lines)


def _with_field_warnings(
    response: Response | None, unknown: list[str], replaced: list[str]
) -> Response | None:
    """Report ignored and replaced parameters as warnings, as Vault does."""
    warnings = []
    if unknown:
        warnings.append(f"Endpoint ignored these unrecognized parameters: {unknown}")
    if replaced:
        warnings.append(
            "Endpoint replaced the value of these parameters with the values "
            f"captured from the endpoint's path: {replaced}"
        )
    if not warnings:
        return response
    if response is None:
        response = Response()
    response.warnings.extend(warnings)
    return response
