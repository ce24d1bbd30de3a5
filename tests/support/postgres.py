"""A throwaway PostgreSQL cluster for the database backend's tests.

It reuses the embedded stack's cluster code (run as the non-root user
`agentbridge-pg`, scram-sha-256 authentication, a free port on 127.0.0.1),
and adds stop and restart for tests of an unreachable server.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devstack import postgres as stack_postgres
from devstack.procs import free_port


@dataclass
class Cluster:
    """A running cluster; `admin` is its superuser's connection parameters."""

    state_dir: Path
    port: int
    server: stack_postgres.Postgres

    @property
    def password(self) -> str:
        return self.server.password

    def conninfo(self, dbname: str = "postgres") -> dict[str, Any]:
        return dict(self.server.conninfo(dbname))

    def stop(self) -> None:
        stack_postgres.stop(self.server.pid, self.server.data_dir)

    def remove(self) -> None:
        """Stop the cluster and delete its files."""
        self.stop()
        stack_postgres.remove(self.state_dir)

    def start(self) -> None:
        """Start again on the same port, with the same data."""
        self.server = stack_postgres.start(self.state_dir, self.port)


def start_cluster(state_dir: Path) -> Cluster:
    port = free_port()
    return Cluster(state_dir, port, stack_postgres.start(state_dir, port))


def connect(cluster: Cluster, dbname: str = "postgres", **params: Any) -> Any:
    """Open an autocommit psycopg connection; `params` override the superuser's."""
    import psycopg

    return psycopg.connect(**{**cluster.conninfo(dbname), **params}, autocommit=True)
