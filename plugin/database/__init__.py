"""The PostgreSQL backend, with the API of Vault's database secrets engine.

`database_extension` bundles its paths (`database/config`, `roles`,
`creds`, `rotate-root`, `reset`, `tidy`), the `creds` secret type and the
rollback handlers for registration on a `FrameworkBackend`.
"""

from __future__ import annotations

from collections.abc import Callable

from plugin.database.backend import DatabaseBackend
from plugin.database.config import CONFIG_PREFIX
from plugin.database.path_config import config_paths
from plugin.database.path_creds import creds_paths
from plugin.database.path_roles import role_paths
from plugin.database.path_rotate import rotate_paths
from plugin.database.path_tidy import LapsedUserSweep, tidy_paths
from plugin.database.roles import ROLE_PREFIX
from plugin.database.rollback import finish_pending_rotations, rollback_handlers
from plugin.database.secret_creds import CredsSecret
from plugin.framework import Extension
from plugin.logical import SystemView


def database_extension(system: Callable[[], SystemView]) -> Extension:
    """Build the database backend for one mount; `system` returns its system view."""
    backend = DatabaseBackend(system)
    creds = CredsSecret(backend).secret_type()
    paths = [
        *config_paths(backend),
        *role_paths(backend),
        *creds_paths(backend, creds),
        *rotate_paths(backend),
        *tidy_paths(backend),
    ]
    return Extension(
        paths=paths,
        secrets=[creds],
        wal_rollback=rollback_handlers(backend),
        periodic=LapsedUserSweep(backend),
        initialize=lambda storage: finish_pending_rotations(backend, storage),
        cleanup=backend.cleanup,
        invalidate=backend.invalidate,
        seal_wrap_storage=["database/config/*"],
        cached_storage=[CONFIG_PREFIX, ROLE_PREFIX],
    )
