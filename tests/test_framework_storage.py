"""The storage cache of a mount: what it keeps, and when it reads again."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from plugin.framework import Extension, FrameworkBackend, Path
from plugin.framework.storage import CachingStorage, InMemoryStorage, iter_keys
from plugin.logical import Operation, Request, Response


class CountingStorage(InMemoryStorage):
    """An in-memory storage that counts its gets, per key."""

    def __init__(self) -> None:
        super().__init__()
        self.gets: dict[str, int] = {}

    def get(self, key: str) -> bytes | None:
        self.gets[key] = self.gets.get(key, 0) + 1
        return super().get(key)


def test_entries_under_prefix_read_once() -> None:
    inner = CountingStorage()
    inner.put("roles/a", b"1")
    cache = CachingStorage(inner, ["roles/"])

    assert [cache.get("roles/a") for _ in range(3)] == [b"1", b"1", b"1"]
    assert [cache.get("roles/missing") for _ in range(2)] == [None, None]

    assert inner.gets == {"roles/a": 1, "roles/missing": 1}


def test_other_keys_read_every_time() -> None:
    inner = CountingStorage()
    inner.put("wal/1", b"x")
    cache = CachingStorage(inner, ["roles/"])

    cache.get("wal/1")
    cache.get("wal/1")

    assert inner.gets == {"wal/1": 2}


def test_put_and_delete_replace_cached_value() -> None:
    inner = CountingStorage()
    cache = CachingStorage(inner, ["roles/"])
    assert cache.get("roles/a") is None

    cache.put("roles/a", b"new")
    assert cache.get("roles/a") == b"new"
    cache.delete("roles/a")
    assert cache.get("roles/a") is None

    assert inner.gets == {"roles/a": 3}


def test_invalidate_reads_again() -> None:
    inner = CountingStorage()
    inner.put("roles/a", b"old")
    cache = CachingStorage(inner, ["roles/"])
    assert cache.get("roles/a") == b"old"

    inner.put("roles/a", b"changed on another node")
    assert cache.get("roles/a") == b"old"
    cache.invalidate("roles/a")

    assert cache.get("roles/a") == b"changed on another node"


def test_get_overlapping_put_is_not_cached() -> None:
    """A value read before a write must not be cached after the write."""
    reading = threading.Event()
    written = threading.Event()

    class SlowStorage(InMemoryStorage):
        def get(self, key: str) -> bytes | None:
            value = super().get(key)  # the value before the write
            reading.set()
            written.wait(5)
            return value

    inner = SlowStorage()
    inner.put("roles/a", b"old")
    cache = CachingStorage(inner, ["roles/"])
    with ThreadPoolExecutor(1) as pool:
        stale = pool.submit(cache.get, "roles/a")
        assert reading.wait(5)
        cache.put("roles/a", b"new")
        written.set()
        assert stale.result(5) == b"old"

    reading.clear()
    written.set()
    assert cache.get("roles/a") == b"new"


def test_oldest_entry_evicted_at_limit() -> None:
    inner = CountingStorage()
    cache = CachingStorage(inner, ["roles/"], max_entries=2)
    for name in ("a", "b", "c"):
        cache.get("roles/" + name)

    cache.get("roles/c")
    cache.get("roles/a")

    assert inner.gets == {"roles/a": 2, "roles/b": 1, "roles/c": 1}


def test_backend_requests_share_one_cache() -> None:
    """Requests on one storage object see each other's writes, and invalidate."""

    def read(request: Request, data: object) -> Response:
        return Response(
            data={"value": (request.storage.get("roles/a") or b"").decode()}
        )

    def write(request: Request, data: object) -> None:
        request.storage.put("roles/a", str(request.data["value"]).encode())

    backend = FrameworkBackend("test")
    backend.register(
        Extension(
            paths=[
                Path(
                    pattern="value",
                    fields={},
                    operations={Operation.READ: read, Operation.UPDATE: write},
                    help_synopsis="",
                    help_description="",
                )
            ],
            cached_storage=["roles/"],
        )
    )
    inner = CountingStorage()

    def value() -> object:
        response = backend.handle_request(Request(Operation.READ, "value", inner))
        assert response is not None
        return response.data["value"]

    backend.handle_request(Request(Operation.UPDATE, "value", inner, {"value": "1"}))
    assert [value(), value()] == ["1", "1"]
    inner.put("roles/a", b"2")  # a write Vault reports with InvalidateKey
    assert value() == "1"
    backend.invalidate("roles/a")

    assert value() == "2"
    assert inner.gets == {"roles/a": 2}


def test_list_page_after_and_limit() -> None:
    storage = InMemoryStorage()
    for key in ("p/a", "p/b", "p/c/x", "p/d", "q/e"):
        storage.put(key, b"1")

    assert storage.list_page("p/", "", 2) == ["a", "b"]
    assert storage.list_page("p/", "b", 2) == ["c/", "d"]
    assert storage.list_page("p/", "d", 2) == []
    assert storage.list_page("p/", "a", 0) == ["b", "c/", "d"]


def test_iter_keys_pages_through_all() -> None:
    inner = InMemoryStorage()
    names = [f"k{i:03d}" for i in range(7)]
    for name in names:
        inner.put("p/" + name, b"1")
    pages: list[tuple[str, int]] = []

    class PageLog(InMemoryStorage):
        def list_page(self, prefix: str, after: str, limit: int) -> list[str]:
            pages.append((after, limit))
            return inner.list_page(prefix, after, limit)

    assert list(iter_keys(PageLog(), "p/", page_size=3)) == names
    assert pages == [("", 3), ("k002", 3), ("k005", 3)]
