"""The database backend's shared state: connection pools and locks.

One `DatabaseBackend` serves the `database/` paths of a mount. Its paths
are built in the `path_*` modules and bundled by `extension()`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any, TypeVar

from plugin.database.config import CONFIG_PREFIX, DatabaseConfig
from plugin.database.errors import ConfigInUseError
from plugin.database.pool import ConnectionPool, PoolSettings
from plugin.logical import Entity, SystemView

if TYPE_CHECKING:
    import psycopg

logger = logging.getLogger(__name__)

# How long the mount's lease TTLs are reused before Vault is asked again.
MOUNT_TTL_CACHE_SECONDS = 10.0
# Threads that overlap this backend's independent calls to Vault.
IO_THREADS = 16
_T = TypeVar("_T")


class DatabaseBackend:
    """Pools per connection config, and the lock for read-modify-write updates."""

    def __init__(self, system: Callable[[], SystemView]) -> None:
        self._system = CachedSystemView(system)
        self._pools: dict[str, tuple[str, ConnectionPool]] = {}
        self._pools_lock = threading.Lock()
        # Serialises config and role updates, which merge with stored values.
        self.write_lock = threading.RLock()
        self._io = ThreadPoolExecutor(IO_THREADS, thread_name_prefix="database-io")
        self._deferred: dict[Hashable, Future[object]] = {}
        self._deferred_lock = threading.Lock()
        # Mints in progress per config, and the configs being deleted.
        self._minting: dict[str, int] = {}
        self._deleting: set[str] = set()
        self._minting_changed = threading.Condition()

    @property
    def system(self) -> SystemView:
        return self._system

    def submit(self, call: Callable[..., _T], *args: Any) -> Future[_T]:
        """Run `call` on an I/O thread, so its round trips overlap the caller's."""
        return self._io.submit(call, *args)

    def defer(
        self, call: Callable[..., object], *args: Any, key: Hashable = None
    ) -> None:
        """Run `call` after the response; a failure is only logged.

        `wait_deferred(key)` waits for a call deferred under `key`.
        """

        def finish(done: Future[object]) -> None:
            if key is not None:
                with self._deferred_lock:
                    if self._deferred.get(key) is done:
                        del self._deferred[key]
            error = done.exception()
            if error is not None:
                logger.warning(
                    "deferred call failed: call=%s error=%s", call.__name__, error
                )

        future = self._io.submit(call, *args)
        if key is not None:
            with self._deferred_lock:
                self._deferred[key] = future
        future.add_done_callback(finish)

    def wait_deferred(self, key: Hashable) -> None:
        """Wait until the call deferred under `key`, if any, has finished."""
        self.wait_deferred_where(lambda k: k == key)

    def wait_deferred_where(self, match: Callable[[Hashable], bool]) -> None:
        """Wait until every deferred call whose key `match`es has finished."""
        with self._deferred_lock:
            futures = [f for k, f in self._deferred.items() if match(k)]
        wait(futures)

    @contextlib.contextmanager
    def minting(self, name: str) -> Iterator[None]:
        """Mark a mint on config `name` in progress; raise if it is being deleted."""
        with self._minting_changed:
            if name in self._deleting:
                raise ConfigInUseError(
                    f"config {name!r} is being deleted; write it again to mint with it"
                )
            self._minting[name] = self._minting.get(name, 0) + 1
        try:
            yield
        finally:
            with self._minting_changed:
                self._minting[name] -= 1
                if not self._minting[name]:
                    del self._minting[name]
                self._minting_changed.notify_all()

    @contextlib.contextmanager
    def deleting(self, name: str, timeout: float = 30.0) -> Iterator[None]:
        """Hold off new mints on config `name` and wait for those in progress."""
        with self._minting_changed:
            self._deleting.add(name)
        try:
            with self._minting_changed:
                if not self._minting_changed.wait_for(
                    lambda: name not in self._minting, timeout
                ):
                    raise ConfigInUseError(
                        f"config {name!r} still has mints in progress after "
                        f"{timeout:.0f} s; retry the delete"
                    )
            yield
        finally:
            with self._minting_changed:
                self._deleting.discard(name)

    @contextlib.contextmanager
    def connection(
        self, name: str, config: DatabaseConfig, params: dict[str, Any] | None = None
    ) -> Iterator[psycopg.Connection[Any]]:
        """Lend a connection for config `name`.

        `params` are the connection parameters a lease recorded. When they
        differ from the config's because the config now points elsewhere, a
        one-off pool reaches the server the lease was minted on.
        """
        if params is None or params == config.conninfo():
            with self._pool(name, config).connection() as conn:
                yield conn
            return
        logger.warning("config changed since the lease was issued: config=%s", name)
        pool = _new_pool(name, config, params)
        try:
            with pool.connection() as conn:
                yield conn
        finally:
            pool.close()

    def verify(self, name: str, config: DatabaseConfig) -> None:
        """Connect with a fresh pool and run `SELECT 1`."""
        pool = _new_pool(name, config, config.conninfo())
        try:
            with pool.connection() as conn:
                conn.execute("SELECT 1")
        finally:
            pool.close()

    def close_pool(self, name: str) -> None:
        with self._pools_lock:
            entry = self._pools.pop(name, None)
        if entry is not None:
            entry[1].close()
            logger.info("closed connection pool: config=%s", name)

    def invalidate(self, key: str) -> None:
        """Drop the pool of a config that changed in storage."""
        if key.startswith(CONFIG_PREFIX):
            self.close_pool(key[len(CONFIG_PREFIX) :])

    def cleanup(self) -> None:
        """Finish deferred calls, then close every pool."""
        self._io.shutdown(wait=True)
        with self._pools_lock:
            names = list(self._pools)
        for name in names:
            self.close_pool(name)

    def _pool(self, name: str, config: DatabaseConfig) -> ConnectionPool:
        # A config written since the pool opened gets a new pool; the
        # fingerprint covers the password, so it is hashed, never stored.
        fingerprint = hashlib.sha256(
            json.dumps(dataclasses.asdict(config), sort_keys=True).encode()
        ).hexdigest()
        with self._pools_lock:
            current = self._pools.get(name)
            if current is not None and current[0] == fingerprint:
                return current[1]
            pool = _new_pool(name, config, config.conninfo())
            self._pools[name] = (fingerprint, pool)
        if current is not None:
            current[1].close()
        return pool


class CachedSystemView:
    """The mount's system view, with its lease TTLs reused for a few seconds.

    Each TTL is one call to Vault, and every creds read needs them. A stale
    value is safe: Vault caps every lease at the mount's current max TTL
    itself, and a role's VALID UNTIL computed from a larger stale TTL only
    outlives its lease, which revocation ends. So a tune of the mount's TTLs
    reaches new leases within MOUNT_TTL_CACHE_SECONDS.
    """

    def __init__(self, system: Callable[[], SystemView]) -> None:
        self._system = system
        self._ttls = (0, 0)
        self._fetched_at = float("-inf")

    def default_lease_ttl(self) -> int:
        return self._mount_ttls()[0]

    def max_lease_ttl(self) -> int:
        return self._mount_ttls()[1]

    def entity_info(self, entity_id: str) -> Entity | None:
        return self._system().entity_info(entity_id)

    def plugin_env_vault_version(self) -> str:
        return self._system().plugin_env_vault_version()

    def generate_password_from_policy(self, policy_name: str) -> str:
        return self._system().generate_password_from_policy(policy_name)

    def _mount_ttls(self) -> tuple[int, int]:
        # Threads may race to refresh; each stores a correct pair.
        if time.monotonic() - self._fetched_at > MOUNT_TTL_CACHE_SECONDS:
            system = self._system()
            self._ttls = (system.default_lease_ttl(), system.max_lease_ttl())
            self._fetched_at = time.monotonic()
        return self._ttls


def _new_pool(
    name: str, config: DatabaseConfig, params: dict[str, Any]
) -> ConnectionPool:
    settings = PoolSettings(
        max_open=config.max_open_connections,
        max_idle=config.max_idle_connections,
        max_lifetime=config.max_connection_lifetime,
    )
    tls = {
        "sslrootcert": config.tls_ca,
        "sslcert": config.tls_certificate,
        "sslkey": config.private_key,
    }
    return ConnectionPool(name, params, config.password, settings, tls)
