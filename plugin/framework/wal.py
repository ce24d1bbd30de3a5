"""Write-ahead log entries, as Vault's `framework.PutWAL` keeps them.

A backend writes an entry before it creates something outside Vault and
deletes it once the result is safely recorded. An entry still present
after `WAL_ROLLBACK_MIN_AGE` belongs to an operation that crashed or
failed half-way. The periodic rollback request passes it to the rollback
handler registered for its kind.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from plugin.framework.storage import get_json, iter_keys, put_json
from plugin.logical import Storage

WAL_PREFIX = "wal/"

# Vault's framework default: longer than any create should take.
WAL_ROLLBACK_MIN_AGE = 600


@dataclass(frozen=True)
class WALEntry:
    """One write-ahead log entry; `created_at` is a Unix timestamp."""

    id: str
    kind: str
    data: dict[str, Any]
    created_at: float


def put_wal(storage: Storage, kind: str, data: dict[str, Any]) -> str:
    """Store a new entry of `kind` and return its id."""
    entry_id = uuid.uuid4().hex
    record = {"kind": kind, "data": data, "created_at": time.time()}
    put_json(storage, WAL_PREFIX + entry_id, record)
    return entry_id


def get_wal(storage: Storage, entry_id: str) -> WALEntry | None:
    """Return the entry with `entry_id`, or None when it is gone."""
    record = get_json(storage, WAL_PREFIX + entry_id)
    if record is None:
        return None
    return WALEntry(
        id=entry_id,
        kind=str(record["kind"]),
        data=dict(record["data"]),
        created_at=float(record["created_at"]),
    )


def list_wal(storage: Storage) -> list[str]:
    """Return the ids of all entries."""
    return [key for key in iter_keys(storage, WAL_PREFIX) if not key.endswith("/")]


def delete_wal(storage: Storage, entry_id: str) -> None:
    """Delete an entry; deleting a missing entry is not an error."""
    storage.delete(WAL_PREFIX + entry_id)
