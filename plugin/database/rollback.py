"""Write-ahead-log rollback of half-finished creates and root rotations."""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Any

from plugin.database.backend import DatabaseBackend
from plugin.database.config import load_config, save_config
from plugin.database.errors import AuthenticationFailedError
from plugin.database.leases import forget_live, is_live
from plugin.database.postgres import generated_role_comment, revoke_user, role_exists
from plugin.framework import WALRollbackHandler, delete_wal, get_wal, list_wal
from plugin.logical import Request, Storage

if TYPE_CHECKING:
    import psycopg

logger = logging.getLogger(__name__)

WAL_KIND_CREDS = "database-creds"
WAL_KIND_ROTATE_ROOT = "database-rotate-root"


def users_being_created(storage: Storage, db_name: str = "") -> set[str]:
    """Return the users that creds WAL entries name, of config `db_name` if given.

    A mint's entry exists from before its user is committed until after its
    live record is stored, so these users are new or were left by a crash.
    """
    names = set()
    for entry_id in list_wal(storage):
        entry = get_wal(storage, entry_id)
        if entry is None or entry.kind != WAL_KIND_CREDS:
            continue
        if not db_name or entry.data.get("db_name") == db_name:
            names.add(str(entry.data.get("username")))
    return names


def rollback_handlers(backend: DatabaseBackend) -> dict[str, WALRollbackHandler]:
    """Return the rollback handler of each WAL kind this backend writes."""

    def creds(request: Request, data: dict[str, Any]) -> None:
        roll_back_user(backend, request, data)

    def rotate_root(request: Request, data: dict[str, Any]) -> None:
        finish_root_rotation(backend, request, data)

    return {WAL_KIND_CREDS: creds, WAL_KIND_ROTATE_ROOT: rotate_root}


def roll_back_user(
    backend: DatabaseBackend, request: Request, data: dict[str, Any]
) -> None:
    """Drop a user whose create never completed; a missing user is success."""
    db_name, username = str(data["db_name"]), str(data["username"])
    if is_live(request.storage, db_name, username):
        # The mint completed and only the deferred delete of its entry was
        # lost, so the user belongs to a lease.
        logger.info("rollback found a completed mint: username=%s", username)
        return
    config = load_config(request.storage, db_name)
    if config is None:
        # Without the config there is no password to connect with; retrying
        # forever would not help, so the entry is dropped with this line.
        logger.error(
            "rollback skipped, drop the user by hand: config=%s username=%s",
            db_name,
            username,
        )
        return
    with backend.connection(db_name, config, data.get("connection")) as conn:
        if not created_here(conn, db_name, username):
            # A crash before the create's COMMIT leaves the entry but no
            # role, so a role of that name belongs to someone else, such as
            # a user whose name the username_template repeated.
            logger.warning(
                "rollback left a role this plugin did not create for the "
                "config: config=%s username=%s",
                db_name,
                username,
            )
            return
        existed = revoke_user(
            conn,
            username,
            statements=list(data.get("rollback_statements") or []),
            owner_role=str(data.get("owner_role") or ""),
        )
    forget_live(request.storage, db_name, username)
    logger.info(
        "orphan rolled back: config=%s username=%s existed=%s",
        db_name,
        username,
        existed,
    )


def created_here(conn: psycopg.Connection[Any], db_name: str, username: str) -> bool:
    """Return whether role `username` is missing or this plugin made it for `db_name`.

    Like tidy, it checks that the role's COMMENT carries the plugin's marker
    and names the config. A missing role counts, because dropping it is a no-op.
    """
    comment = generated_role_comment(conn, username)
    if comment is None:
        return not role_exists(conn, username)
    return comment.get("db") == db_name


def finish_root_rotation(
    backend: DatabaseBackend, request: Request, data: dict[str, Any]
) -> None:
    """Store the rotated password if the server took it, else drop the entry."""
    _finish_rotation(backend, request.storage, data)


def finish_pending_rotations(backend: DatabaseBackend, storage: Storage) -> None:
    """Complete the root rotations that a killed plugin process left half done.

    Vault initializes the backend when the mount starts and when it restarts
    a plugin that died, so an entry found then may belong to a rotation cut
    between its ALTER ROLE and the config's save. Until it is completed, the
    config's stored password no longer works, and waiting for the periodic
    rollback would take `WAL_ROLLBACK_MIN_AGE`. A rotation still running in
    this process has acquired `write_lock`, and it deletes its own entry.
    """
    try:
        entries = [get_wal(storage, entry_id) for entry_id in list_wal(storage)]
    except Exception as err:  # a failed Initialize would fail the mount
        logger.warning("pending root rotations not checked: error=%s", err)
        return
    for entry in entries:
        if entry is None or entry.kind != WAL_KIND_ROTATE_ROOT:
            continue
        entry_id = entry.id
        with backend.write_lock:
            try:
                if get_wal(storage, entry_id) is None:
                    continue  # the rotation that wrote it has finished
                _finish_rotation(backend, storage, entry.data)
            except Exception as err:  # the periodic rollback retries it
                logger.warning(
                    "pending root rotation not finished at start-up: wal_id=%s "
                    "config=%s error=%s",
                    entry_id,
                    entry.data.get("name"),
                    err,
                )
                continue
            delete_wal(storage, entry_id)


def _finish_rotation(
    backend: DatabaseBackend, storage: Storage, data: dict[str, Any]
) -> None:
    name = str(data["name"])
    config = load_config(storage, name)
    if config is None or config.password == data["new_password"]:
        return
    candidate = dataclasses.replace(config, password=str(data["new_password"]))
    try:
        backend.verify(name, candidate)
    except AuthenticationFailedError:
        # The server rejected the new password, so the old one is still valid.
        logger.info("root rotation had not applied: config=%s", name)
        return
    with backend.write_lock:
        save_config(storage, name, candidate)
    backend.close_pool(name)
    logger.info("root rotation completed from the WAL: config=%s", name)
