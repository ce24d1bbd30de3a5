"""Path `database/rotate-root/<name>`: replace the admin password of a config."""

from __future__ import annotations

import dataclasses
import logging

from plugin.database.backend import DatabaseBackend
from plugin.database.config import require_config, save_config
from plugin.database.credentials import (
    generate_config_password,
    scram_sha256_verifier,
)
from plugin.database.errors import DatabaseUnavailableError, InvalidConfigError
from plugin.database.postgres import rotate_password
from plugin.database.rollback import WAL_KIND_ROTATE_ROOT
from plugin.framework import (
    Field,
    FieldData,
    FieldType,
    Path,
    delete_wal,
    name_group,
    put_wal,
)
from plugin.logical import Operation, Request

logger = logging.getLogger(__name__)


def rotate_paths(backend: DatabaseBackend) -> list[Path]:
    """Return the rotate-root path."""

    def rotate(request: Request, data: FieldData) -> None:
        rotate_root(backend, request, data.get("name"))

    return [
        Path(
            pattern="database/rotate-root/" + name_group("name"),
            fields={"name": Field(FieldType.STRING, "Name of the config; no default.")},
            operations={Operation.UPDATE: rotate},
            help_synopsis="Rotate the admin password of a connection config.",
            help_description=(
                "Sets a new random password for the config's admin user with "
                "root_rotation_statements (default ALTER ROLE ... WITH "
                "PASSWORD) and stores it. Afterwards only the plugin knows it. "
                "The config's password_policy, when set, generates the password."
            ),
        )
    ]


def rotate_root(backend: DatabaseBackend, request: Request, name: str) -> None:
    """Set and store a new admin password, crash-safe through a WAL entry."""
    with backend.write_lock:
        config = require_config(request.storage, name)
        if not config.password:
            raise InvalidConfigError(
                f"config {name!r} has no password to rotate: write one first"
            )
        new_password = generate_config_password(config, backend.system)
        value = (
            scram_sha256_verifier(new_password)
            if config.sends_verifier()
            else new_password
        )
        # If the plugin dies after ALTER ROLE but before storing the password,
        # the rollback finds the new one here and stores it.
        wal_id = put_wal(
            request.storage,
            WAL_KIND_ROTATE_ROOT,
            {"name": name, "new_password": new_password},
        )
        try:
            with backend.connection(name, config) as conn:
                rotate_password(
                    conn, config.admin_user(), value, config.root_rotation_statements
                )
        except DatabaseUnavailableError:
            raise  # the WAL entry stays: the ALTER may have been applied
        except Exception:
            delete_wal(request.storage, wal_id)
            raise
        save_config(
            request.storage, name, dataclasses.replace(config, password=new_password)
        )
        delete_wal(request.storage, wal_id)
    backend.close_pool(name)
    logger.info("root password rotated: config=%s", name)
