"""Path `database/tidy`: drop generated users that no live lease covers.

A user is an orphan when its COMMENT marks it as created by this plugin
for the config, no WAL entry shows it is being created, and either no live
record covers it, the record's max TTL ended long ago, or the user's VALID
UNTIL passed more than 5 minutes ago. Tidy also deletes the live records of
users that no longer exist.
"""

from __future__ import annotations

import logging
import time
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from plugin.database.backend import DatabaseBackend
from plugin.database.config import list_configs, load_config
from plugin.database.errors import AuthenticationFailedError, ConfigNotFoundError
from plugin.database.leases import forget_live, is_expired, load_live
from plugin.database.postgres import drop_user, list_generated_roles, role_exists
from plugin.database.rollback import users_being_created
from plugin.framework import Field, FieldData, FieldType, Path
from plugin.logical import Operation, Request, Response, Storage

if TYPE_CHECKING:
    import psycopg

logger = logging.getLogger(__name__)

# How long after its VALID UNTIL a generated user counts as lapsed, by the
# database server's clock. The margin covers clock skew between the plugin's
# host, which computed VALID UNTIL, and the server.
LAPSE_GRACE = 300


def tidy_paths(backend: DatabaseBackend) -> list[Path]:
    """Return the tidy path."""

    def tidy(request: Request, data: FieldData) -> Response:
        name = data.get("db_name")
        if name and load_config(request.storage, name) is None:
            raise ConfigNotFoundError(
                f"invalid value {name!r} for field 'db_name': no database config "
                "has that name. database/config/ lists the configs, and an empty "
                "db_name tidies them all"
            )
        names = [name] if name else list_configs(request.storage)
        dropped = {n: tidy_config(backend, request.storage, n) for n in names}
        return Response(data={"dropped": dropped})

    return [
        Path(
            pattern="database/tidy",
            fields={
                "db_name": Field(
                    FieldType.STRING, "Config to tidy; default empty, meaning all."
                )
            },
            operations={Operation.UPDATE: tidy},
            help_synopsis="Drop generated users that no live lease covers.",
            help_description=__doc__ or "",
        )
    ]


class LapsedUserSweep:
    """Drop lapsed users from the periodic function, at most every `interval` s.

    A user whose credential never reached Vault (the client gave up on the
    creds read, or Vault failed to store the lease) has no lease to end it.
    Its VALID UNTIL stops new logins, and this sweep drops the user soon
    after, so no operator has to run `database/tidy` for it.
    """

    def __init__(self, backend: DatabaseBackend, interval: float = 600.0) -> None:
        self.backend = backend
        self.interval = interval
        self._last = float("-inf")

    def __call__(self, request: Request) -> None:
        now = time.monotonic()
        if now - self._last < self.interval:
            return
        self._last = now
        for name in list_configs(request.storage):
            try:
                tidy_config(self.backend, request.storage, name, lapsed_only=True)
            except Exception as err:  # one unreachable server must not stop the rest
                logger.warning(
                    "lapsed-user sweep failed: config=%s error=%s", name, err
                )


def tidy_config(
    backend: DatabaseBackend, storage: Storage, name: str, *, lapsed_only: bool = False
) -> list[str]:
    """Drop the orphaned users of config `name`; return their names.

    With `lapsed_only`, drop only users whose VALID UNTIL passed more than
    LAPSE_GRACE seconds ago.
    """
    try:
        return _tidy_config(backend, storage, name, lapsed_only)
    except AuthenticationFailedError:
        # A rotate-root may have changed the admin password after this tidy
        # read the config. It keeps write_lock until the new one is stored.
        with backend.write_lock:
            pass
        logger.info("tidy retried after a rejected password: config=%s", name)
        return _tidy_config(backend, storage, name, lapsed_only)


def _tidy_config(
    backend: DatabaseBackend, storage: Storage, name: str, lapsed_only: bool
) -> list[str]:
    if load_config(storage, name) is None:
        return []
    with _connection(backend, storage, name) as conn:
        generated = list_generated_roles(conn, LAPSE_GRACE)
    # Read in this order (server, WAL, records): a user created meanwhile
    # has its WAL entry until its record exists.
    creating = users_being_created(storage)
    live = load_live(storage, name)
    dropped = []
    for username, role in sorted(generated.items()):
        if role.comment.get("db") != name or username in creating:
            continue
        record = live.get(username)
        if lapsed_only and not role.lapsed:
            continue
        if record is not None and not is_expired(record) and not role.lapsed:
            continue
        with _connection(backend, storage, name) as conn:
            existed = drop_user(conn, username, _owner_role(storage, name))
        forget_live(storage, name, username)
        if not existed:
            continue  # a revoke dropped it and its record after the listing
        dropped.append(username)
        logger.info("tidy dropped orphan: config=%s username=%s", name, username)
    _forget_dropped(backend, storage, name, set(live) - set(generated))
    return dropped


def _connection(
    backend: DatabaseBackend, storage: Storage, name: str
) -> AbstractContextManager[psycopg.Connection[Any]]:
    """Return a connection made with the config as stored now.

    A tidy of many users outlasts a rotate-root, and a connection opened
    with the config read before it would replace the pool of the new
    password with one of the rejected old password.
    """
    config = load_config(storage, name)
    if config is None:
        raise ConfigNotFoundError(f"config {name!r} was deleted during the tidy")
    return backend.connection(name, config)


def _owner_role(storage: Storage, name: str) -> str:
    config = load_config(storage, name)
    return config.owner_role if config is not None else ""


def _forget_dropped(
    backend: DatabaseBackend, storage: Storage, name: str, candidates: set[str]
) -> None:
    """Delete the live records of users that no longer exist on the server.

    A record is written only after its user is committed, so a user still
    missing after its record was read was dropped (by hand, or by a revoke
    whose record delete was lost). The check runs again here because the
    server was listed before the records were read.
    """
    if not candidates:
        return
    with _connection(backend, storage, name) as conn:
        missing = [u for u in sorted(candidates) if not role_exists(conn, u)]
    for username in missing:
        forget_live(storage, name, username)
        logger.info("tidy forgot a dropped user: config=%s username=%s", name, username)
