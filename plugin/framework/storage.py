"""JSON helpers over `logical.Storage`, and an in-memory storage."""

from __future__ import annotations

import dataclasses
import json
import threading
from typing import Any, TypeVar

from plugin.logical import Storage

EntryT = TypeVar("EntryT")


def get_json(storage: Storage, key: str) -> Any:
    """Return the decoded JSON entry at `key`, or None when absent."""
    raw = storage.get(key)
    if raw is None:
        return None
    return json.loads(raw)


def put_json(storage: Storage, key: str, value: Any) -> None:
    """Store `value` as compact JSON at `key`."""
    storage.put(key, json.dumps(value, separators=(",", ":")).encode())


class InMemoryStorage:
    """A thread-safe `logical.Storage` kept in a dict, for tests and tools.

    `list` follows Vault: it returns the keys directly under `prefix`, with
    a trailing `/` for each folder.
    """

    def __init__(self) -> None:
        self._entries: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            return self._entries.get(key)

    def put(self, key: str, value: bytes) -> None:
        with self._lock:
            self._entries[key] = bytes(value)

    def delete(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def list(self, prefix: str) -> list[str]:
        with self._lock:
            keys = [k for k in self._entries if k.startswith(prefix)]
        children = set()
        for key in keys:
            rest = key[len(prefix) :]
            head, slash, _ = rest.partition("/")
            children.add(head + slash)
        return sorted(children)


def load_entry(storage: Storage, key: str, kind: type[EntryT]) -> EntryT | None:
    """Return the dataclass `kind` stored at `key`, or None when absent.

    Stored fields the dataclass no longer has are ignored, so entries
    written by an older version still load.
    """
    raw = get_json(storage, key)
    if raw is None:
        return None
    known = {f.name for f in dataclasses.fields(kind)}  # type: ignore[arg-type]
    return kind(**{k: v for k, v in raw.items() if k in known})


def save_entry(storage: Storage, key: str, entry: Any) -> None:
    """Store a dataclass instance as JSON at `key`."""
    put_json(storage, key, dataclasses.asdict(entry))


def list_entries(storage: Storage, prefix: str) -> list[str]:
    """Return the names of the entries directly under `prefix`, without folders."""
    return [key for key in storage.list(prefix) if not key.endswith("/")]
