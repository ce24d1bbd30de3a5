"""Records of live credentials, one per generated user.

Vault tracks leases, but a plugin cannot ask Vault which of its leases are
live. These records let the backend refuse to delete a config whose users
still exist, and let `tidy` tell orphaned roles from leased ones. A record
is written after the credential is handed to Vault and deleted when it is
revoked. It also marks the mint complete: the rollback keeps a user that
has one.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

from plugin.framework import get_json, iter_keys, put_json
from plugin.logical import Storage

LIVE_PREFIX = "database/live/"
# How long past its max TTL a record still counts as live: Vault retries
# failed expiry revokes for about 11 minutes before giving up.
EXPIRED_GRACE = 15 * 60
_COMPLETION = "creds-complete"


class LiveRecord(NamedTuple):
    """The record of one generated user, before it is stored."""

    db_name: str
    username: str
    data: dict[str, Any]


def completion_key(db_name: str, username: str) -> tuple[str, str, str]:
    """Return the key under which a mint's record is written after its response."""
    return (_COMPLETION, db_name, username)


def is_completion_of(key: object, db_name: str) -> bool:
    """Return whether `key` is the completion key of a mint on config `db_name`."""
    return isinstance(key, tuple) and key[:2] == (_COMPLETION, db_name)


def _key(db_name: str, username: str) -> str:
    return f"{LIVE_PREFIX}{db_name}/{username}"


def record_live(
    storage: Storage, db_name: str, username: str, record: dict[str, Any]
) -> None:
    put_json(storage, _key(db_name, username), record)


def forget_live(storage: Storage, db_name: str, username: str) -> None:
    storage.delete(_key(db_name, username))


def is_live(storage: Storage, db_name: str, username: str) -> bool:
    """Return whether a live record exists for the user."""
    return storage.get(_key(db_name, username)) is not None


def load_live(storage: Storage, db_name: str) -> dict[str, dict[str, Any]]:
    """Return the records of `db_name`, keyed by user name."""
    records = {}
    for username in iter_keys(storage, f"{LIVE_PREFIX}{db_name}/"):
        record = get_json(storage, _key(db_name, username))
        if record is not None:
            records[username] = dict(record)
    return records


def is_expired(record: dict[str, Any], now: float | None = None) -> bool:
    """Return whether the record's lease ended long enough ago to be dead."""
    expires_max = float(record.get("expires_max") or 0)
    if not expires_max:
        return False  # a lease without a max TTL never expires by itself
    now = time.time() if now is None else now
    return expires_max + EXPIRED_GRACE < now
