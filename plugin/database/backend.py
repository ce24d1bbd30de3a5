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
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from plugin.database.config import CONFIG_PREFIX, DatabaseConfig
from plugin.database.pool import ConnectionPool, PoolSettings
from plugin.logical import SystemView

if TYPE_CHECKING:
    import psycopg

logger = logging.getLogger(__name__)


class DatabaseBackend:
    """Pools per connection config, and the lock for read-modify-write updates."""

    def __init__(self, system: Callable[[], SystemView]) -> None:
        self._system = system
        self._pools: dict[str, tuple[str, ConnectionPool]] = {}
        self._pools_lock = threading.Lock()
        # Serialises config and role updates, which merge with stored values.
        self.write_lock = threading.RLock()

    @property
    def system(self) -> SystemView:
        return self._system()

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
