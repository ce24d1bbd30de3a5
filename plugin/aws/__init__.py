"""The AWS backend, with the API of Vault's AWS secrets engine under `aws/`.

`aws_extension` bundles its paths (`aws/config/root`, `config/lease`,
`config/rotate-root`, `roles`, `creds`, `sts`), the `access_keys` secret
type and the rollback handlers for registration on a `FrameworkBackend`.
Nothing here imports boto3 until an `aws/` path is used.
"""

from __future__ import annotations

from collections.abc import Callable

from plugin.aws.backend import AwsBackend
from plugin.aws.path_config_lease import config_lease_paths
from plugin.aws.path_config_root import config_root_paths
from plugin.aws.path_config_rotate_root import config_rotate_root_paths
from plugin.aws.path_creds import creds_paths
from plugin.aws.path_roles import role_paths
from plugin.aws.roles import ROLE_PREFIX
from plugin.aws.rollback import finish_pending_rotations, rollback_handlers
from plugin.aws.secret_access_keys import AccessKeysSecret
from plugin.framework import Extension
from plugin.logical import Storage, SystemView


def aws_extension(system: Callable[[], SystemView]) -> Extension:
    """Build the AWS backend for one mount; `system` returns its system view."""
    backend = AwsBackend(system)
    access_keys = AccessKeysSecret(backend).secret_type()
    paths = [
        *config_root_paths(backend),
        *config_lease_paths(),
        *config_rotate_root_paths(backend),
        *role_paths(backend),
        *creds_paths(backend, access_keys),
    ]
    return Extension(
        paths=paths,
        secrets=[access_keys],
        wal_rollback=rollback_handlers(backend),
        initialize=lambda storage: _start_rollback(backend, storage),
        cleanup=backend.finish_deferred,
        invalidate=backend.invalidate,
        seal_wrap_storage=["aws/config/root"],
        cached_storage=["aws/config/", ROLE_PREFIX],
    )


def _start_rollback(backend: AwsBackend, storage: Storage) -> None:
    finish_pending_rotations(backend, storage)
