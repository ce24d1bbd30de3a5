"""JSON helpers over `logical.Storage`, an in-memory storage and a read cache."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Iterator, Sequence
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

    def list_page(self, prefix: str, after: str, limit: int) -> list[str]:
        keys = [key for key in self.list(prefix) if key > after]
        return keys[:limit] if limit > 0 else keys

    def list(self, prefix: str) -> list[str]:
        with self._lock:
            keys = [k for k in self._entries if k.startswith(prefix)]
        children = set()
        for key in keys:
            rest = key[len(prefix) :]
            head, slash, _ = rest.partition("/")
            children.add(head + slash)
        return sorted(children)


class CachingStorage:
    """A `logical.Storage` that keeps the entries under some prefixes in memory.

    A plugin's storage calls are round trips to Vault (about 0.25-0.45 ms
    each), and every credential read needs its role and config. Entries
    under `prefixes` are kept after the first `get`. This is safe because
    the mount's entries change only through its own backend, whose writes
    pass through this object and drop the cached copy, or on another node,
    which Vault reports with `invalidate`. An entry changed behind Vault's
    back (`sys/raw`) stays stale until the plugin restarts, as Vault's own
    engines' caches do.

    A `get` that overlapped a write or an invalidation returns what it read
    but does not cache it, so a value read before a write can never be
    cached after it.
    """

    def __init__(
        self, storage: Storage, prefixes: Sequence[str], max_entries: int = 4096
    ) -> None:
        self.inner = storage
        self._prefixes = tuple(prefixes)
        self._max_entries = max_entries
        self._entries: dict[str, bytes | None] = {}
        # Counts writes and invalidations of cached prefixes.
        self._generation = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        if not key.startswith(self._prefixes):
            return self.inner.get(key)
        with self._lock:
            if key in self._entries:
                return self._entries[key]
            generation = self._generation
        value = self.inner.get(key)
        with self._lock:
            if generation == self._generation:
                if len(self._entries) >= self._max_entries:
                    del self._entries[next(iter(self._entries))]
                self._entries[key] = value
        return value

    def put(self, key: str, value: bytes) -> None:
        try:
            self.inner.put(key, value)
        finally:
            self.invalidate(key)

    def delete(self, key: str) -> None:
        try:
            self.inner.delete(key)
        finally:
            self.invalidate(key)

    def list_page(self, prefix: str, after: str, limit: int) -> list[str]:
        return self.inner.list_page(prefix, after, limit)

    def list(self, prefix: str) -> list[str]:
        return self.inner.list(prefix)

    def invalidate(self, key: str) -> None:
        """Forget `key`, which changed in Vault's storage."""
        if not key.startswith(self._prefixes):
            return
        with self._lock:
            self._generation += 1
            self._entries.pop(key, None)


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


# Keys per ListPage call of `iter_keys`: far below gRPC's 4 MiB default
# message size even for long keys.
LIST_PAGE_SIZE = 1000


def iter_keys(
    storage: Storage, prefix: str, page_size: int = LIST_PAGE_SIZE
) -> Iterator[str]:
    """Yield the keys directly under `prefix`, one ListPage call per page.

    A single List of a prefix with many entries returns them in one
    message, which may exceed the transport's message size.
    """
    after = ""
    while True:
        page = storage.list_page(prefix, after, page_size)
        yield from page
        if len(page) < page_size:
            return
        after = page[-1]


def list_entries(storage: Storage, prefix: str) -> list[str]:
    """Return the names of the entries directly under `prefix`, without folders."""
    return [key for key in storage.list(prefix) if not key.endswith("/")]
