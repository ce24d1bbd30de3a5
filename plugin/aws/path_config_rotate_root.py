"""Path `aws/config/rotate-root`: replace the access key of config/root.

The order keeps a working key stored at every step: a WAL entry, a new key,
a check that it authenticates, the config saved with it, and only then the
old key deleted. The rollback of an interrupted rotation deletes whichever
key is not stored.
"""

from __future__ import annotations

import dataclasses
import logging
import time

from plugin.aws.backend import AwsBackend
from plugin.aws.client import (
    NOT_FOUND,
    KeyPair,
    aws_errors,
    describe,
    error_code,
    failure,
    is_transient,
)
from plugin.aws.config import RootConfig, require_root, save_root
from plugin.aws.creds_iam_user import wait_until_key_works
from plugin.aws.errors import AwsUnavailableError, InvalidConfigError
from plugin.aws.rollback import WAL_KIND_ROTATE_ROOT
from plugin.framework import FieldData, Path, delete_wal, put_wal
from plugin.logical import Operation, Request, Response

logger = logging.getLogger(__name__)

# The new key gets at least this long to authenticate, even when creds reads
# are configured not to wait.
MIN_ROTATION_WAIT = 30


def config_rotate_root_paths(backend: AwsBackend) -> list[Path]:
    """Return the `aws/config/rotate-root` path."""

    def rotate(request: Request, data: FieldData) -> Response:
        with backend.write_lock:
            return rotate_root(backend, request)

    return [
        Path(
            pattern="aws/config/rotate-root",
            operations={Operation.UPDATE: rotate, Operation.CREATE: rotate},
            help_synopsis="Rotate the access key of aws/config/root.",
            help_description=(
                "Creates a new access key for the IAM user of aws/config/root, "
                "waits until it authenticates, stores it, then deletes the old "
                "key. The user must have a free key slot (AWS allows two keys). "
                "Afterwards only the plugin knows the secret key. Returns the new "
                "access_key."
            ),
        )
    ]


def rotate_root(backend: AwsBackend, request: Request) -> Response:
    """Rotate the root key; the caller holds the backend's write lock."""
    config = require_root(request.storage)
    if not config.access_key or not config.secret_key:
        raise InvalidConfigError(
            "aws/config/root has no access_key and secret_key to rotate: write them "
            "first"
        )
    iam = backend.clients(request.storage).iam
    try:
        username = iam.get_user()["User"]["UserName"]
    except aws_errors() as err:
        raise failure(err, "finding the IAM user of the root key") from err

    wal = {
        "username": username,
        "old_access_key": config.access_key,
        "started_at": time.time(),
    }
    wal_id = put_wal(request.storage, WAL_KIND_ROTATE_ROOT, wal)
    try:
        created = iam.create_access_key(UserName=username)["AccessKey"]
    except aws_errors() as err:
        # A transport failure may hide a created key: the WAL entry stays
        # so the rollback can find and delete it.
        if not is_transient(err):
            delete_wal(request.storage, wal_id)
        raise failure(err, f"creating an access key for {username!r}") from err
    new = KeyPair(created["AccessKeyId"], created["SecretAccessKey"])
    # The entry now names the new key, so a rollback keeps whichever is stored.
    new_wal_id = put_wal(
        request.storage,
        WAL_KIND_ROTATE_ROOT,
        {**wal, "new_access_key": new.access_key},
    )
    delete_wal(request.storage, wal_id)
    return _switch(
        backend, request, config, username=username, new=new, wal_id=new_wal_id
    )


def _switch(
    backend: AwsBackend,
    request: Request,
    config: RootConfig,
    *,
    username: str,
    new: KeyPair,
    wal_id: str,
) -> Response:
    wait = max(config.key_ready_timeout, MIN_ROTATION_WAIT)
    if not wait_until_key_works(config, new, wait):
        backend.clients(request.storage).iam.delete_access_key(
            UserName=username, AccessKeyId=new.access_key
        )
        delete_wal(request.storage, wal_id)
        raise AwsUnavailableError(
            f"the new access key did not authenticate within {wait} s, so it was "
            "deleted and the old key kept; try the rotation again"
        )
    rotated = dataclasses.replace(
        config, access_key=new.access_key, secret_key=new.secret_key
    )
    save_root(request.storage, rotated)
    backend.reset_clients()
    response = Response(data={"access_key": new.access_key})
    failed = _delete_old_key(backend, request, username, config.access_key)
    if failed:
        response.warnings.append(
            f"the new key is stored, but deleting the old key {config.access_key} "
            f"failed ({failed}); the periodic rollback retries"
        )
        return response
    delete_wal(request.storage, wal_id)
    logger.info(
        "root key rotated: username=%s old=%s new=%s",
        username,
        config.access_key,
        new.access_key,
    )
    return response


def _delete_old_key(
    backend: AwsBackend, request: Request, username: str, old_key: str
) -> str:
    """Delete the old key, signed with the new one; return why it failed, or ""."""
    try:
        backend.clients(request.storage).iam.delete_access_key(
            UserName=username, AccessKeyId=old_key
        )
    except aws_errors() as err:
        if error_code(err) == NOT_FOUND:
            return ""
        logger.error(
            "old root key not deleted, rollback retries: username=%s access_key=%s "
            "error=%s",
            username,
            old_key,
            describe(err),
        )
        return describe(err)
    return ""
