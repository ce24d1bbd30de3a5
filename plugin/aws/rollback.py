"""Write-ahead-log rollback of half-created users and half-done root rotations."""

from __future__ import annotations

import functools
import logging
import threading
from typing import TYPE_CHECKING, Any

from plugin.aws.client import NOT_FOUND, aws_errors, error_code
from plugin.aws.config import load_root
from plugin.aws.iam import delete_user
from plugin.framework import (
    WALEntry,
    WALRollbackHandler,
    delete_wal,
    get_wal,
    list_wal,
)
from plugin.logical import Request, Storage

if TYPE_CHECKING:
    from plugin.aws.backend import AwsBackend, Clients

logger = logging.getLogger(__name__)

WAL_KIND_USER = "aws-user"
WAL_KIND_ROTATE_ROOT = "aws-rotate-root"
# Keys created this long before a rotation started are never its own.
_CLOCK_MARGIN = 5


def rollback_handlers(backend: AwsBackend) -> dict[str, WALRollbackHandler]:
    """Return the rollback handler of each WAL kind this backend writes."""

    def user(request: Request, data: dict[str, Any]) -> None:
        roll_back_user(backend, request, data)

    def rotate_root(request: Request, data: dict[str, Any]) -> None:
        roll_back_rotation(backend, request, data)

    return {WAL_KIND_USER: user, WAL_KIND_ROTATE_ROOT: rotate_root}


def roll_back_user(backend: AwsBackend, request: Request, data: dict[str, Any]) -> None:
    """Delete a user whose creation never completed; a missing user is success.

    Entries are at least 10 minutes old here, far past IAM's propagation
    delay, so NoSuchEntity means the user really does not exist.
    """
    username = str(data["username"])
    if load_root(request.storage) is None:
        logger.error(
            "rollback skipped, delete the IAM user by hand: username=%s", username
        )
        return
    existed = backend.with_clients(
        request.storage, lambda clients: delete_user(clients.iam, username)
    )
    logger.info("orphan rolled back: username=%s existed=%s", username, existed)


def roll_back_rotation(
    backend: AwsBackend, request: Request, data: dict[str, Any]
) -> None:
    """Delete the one key of an interrupted rotation that is not stored.

    The stored key is never deleted, so the plugin keeps a working key
    whichever step the rotation stopped at.
    """
    if load_root(request.storage) is None:
        return
    backend.with_clients(
        request.storage, lambda clients: _delete_unwanted_key(clients, data)
    )


def finish_pending_rotations(
    backend: AwsBackend, storage: Storage
) -> threading.Thread | None:
    """Roll back, on a background thread, rotations a killed process left half done.

    Vault initializes the backend when the mount starts and when it restarts
    a plugin that died. An entry found then belongs to a rotation that
    stopped, and its extra key takes one of the user's two key slots, so a
    new rotation fails with LimitExceeded until the periodic rollback, 10
    minutes on, deletes it. IAM calls can take up to botocore's timeouts, so
    Initialize does not wait for them. Returns the thread, if one started.
    """
    try:
        entries = [get_wal(storage, entry_id) for entry_id in list_wal(storage)]
    except Exception as err:  # a failed Initialize would fail the mount
        logger.warning("pending root rotations not checked: error=%s", err)
        return None
    pending = [e for e in entries if e is not None and e.kind == WAL_KIND_ROTATE_ROOT]
    if not pending:
        return None
    thread = threading.Thread(
        target=_roll_back_pending,
        args=(backend, storage, pending),
        name="aws-rotation-rollback",
        daemon=True,
    )
    thread.start()
    return thread


def _roll_back_pending(
    backend: AwsBackend, storage: Storage, pending: list[WALEntry]
) -> None:
    for entry in pending:
        # A rotation in this process holds the lock and deletes its own entry.
        with backend.write_lock:
            try:
                if get_wal(storage, entry.id) is None or load_root(storage) is None:
                    continue
                backend.with_clients(
                    storage, functools.partial(_delete_unwanted_key, data=entry.data)
                )
            except Exception as err:  # the periodic rollback retries it
                logger.warning(
                    "pending root rotation not rolled back at start-up: wal_id=%s "
                    "error=%s",
                    entry.id,
                    err,
                )
                continue
            delete_wal(storage, entry.id)


def _delete_unwanted_key(clients: Clients, data: dict[str, Any]) -> None:
    config, iam = clients.config, clients.iam
    username = str(data["username"])
    old, new = str(data["old_access_key"]), str(data.get("new_access_key") or "")
    if new:
        unwanted = [old] if config.access_key == new else [new]
    else:
        # The rotation stopped before it saw the new key's secret: a key
        # created since it started is unusable and takes one of two slots.
        started = float(data["started_at"]) - _CLOCK_MARGIN
        listed = iam.list_access_keys(UserName=username)["AccessKeyMetadata"]
        unwanted = [
            key["AccessKeyId"]
            for key in listed
            if key["CreateDate"].timestamp() >= started
            and key["AccessKeyId"] != config.access_key
        ]
    for key_id in unwanted:
        if key_id == config.access_key:
            continue
        try:
            iam.delete_access_key(UserName=username, AccessKeyId=key_id)
        except aws_errors() as err:
            if error_code(err) != NOT_FOUND:
                raise
        logger.info(
            "rotation rolled back: username=%s deleted_key=%s", username, key_id
        )
