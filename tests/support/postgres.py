"""A throwaway PostgreSQL cluster for the database backend's tests.

It reuses the embedded stack's cluster code (run as the non-root user
`agentbridge-pg`, scram-sha-256 authentication, a free port on 127.0.0.1),
and adds stop and restart for tests of an unreachable server.
"""

from __future__ import annotations

import json
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


def stored_password(cluster: Cluster, role: str) -> str:
    """Return `role`'s `pg_authid.rolpassword`: a SCRAM verifier on these clusters."""
    with connect(cluster) as conn:
        row = conn.execute(
            "SELECT rolpassword FROM pg_authid WHERE rolname = %s", (role,)
        ).fetchone()
    assert row is not None, f"role {role!r} not found"
    return str(row[0])


def role_comment(cluster: Cluster, role: str) -> dict[str, str]:
    """Return the JSON label the plugin puts in `role`'s comment."""
    with connect(cluster) as conn:
        row = conn.execute(
            "SELECT shobj_description(oid, 'pg_authid') FROM pg_roles "
            "WHERE rolname = %s",
            (role,),
        ).fetchone()
    assert row is not None, f"role {role!r} not found"
    comment: dict[str, str] = json.loads(row[0].removeprefix("agent-bridge "))
    return comment
