"""Path `database/tidy`: drop generated users that no live lease covers.

A user is an orphan when its COMMENT marks it as created by this plugin
for the config, no WAL entry shows it is being created, and no live
record covers it (or the record's max TTL ended long ago).
"""

from __future__ import annotations

import logging

from plugin.database.backend import DatabaseBackend
from plugin.database.config import list_configs, load_config
from plugin.database.leases import forget_live, is_expired, load_live
from plugin.database.postgres import drop_user, list_generated_roles
from plugin.database.rollback import WAL_KIND_CREDS
from plugin.framework import Field, FieldData, FieldType, Path, get_wal, list_wal
from plugin.logical import Operation, Request, Response, Storage

logger = logging.getLogger(__name__)


def tidy_paths(backend: DatabaseBackend) -> list[Path]:
    """Return the tidy path."""

    def tidy(request: Request, data: FieldData) -> Response:
        names = (
            [data.get("db_name")]
            if data.get("db_name")
            else list_configs(request.storage)
        )
        dropped = {name: tidy_config(backend, request.storage, name) for name in names}
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


def tidy_config(backend: DatabaseBackend, storage: Storage, name: str) -> list[str]:
    """Drop the orphaned users of config `name`; return their names."""
    config = load_config(storage, name)
    if config is None:
        return []
    with backend.connection(name, config) as conn:
        generated = list_generated_roles(conn)
    # Read in this order (server, WAL, records): a user created meanwhile
    # has its WAL entry until its record exists.
    creating = _users_being_created(storage)
    live = load_live(storage, name)
    dropped = []
    for username, comment in sorted(generated.items()):
        if comment.get("db") != name or username in creating:
            continue
        record = live.get(username)
        if record is not None and not is_expired(record):
            continue
        with backend.connection(name, config) as conn:
            drop_user(conn, username, config.owner_role)
        forget_live(storage, name, username)
        dropped.append(username)
        logger.info("tidy dropped orphan: config=%s username=%s", name, username)
    return dropped


def _users_being_created(storage: Storage) -> set[str]:
    names = set()
    for entry_id in list_wal(storage):
        entry = get_wal(storage, entry_id)
        if entry is not None and entry.kind == WAL_KIND_CREDS:
            names.add(str(entry.data.get("username")))
    return names
