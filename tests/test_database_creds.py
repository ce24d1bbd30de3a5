"""Creds, revoke and renew of the database backend against a real PostgreSQL."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from plugin.logical import PermissionDeniedError
from tests.support.database import Mount, configure
from tests.support.postgres import Cluster, connect

READONLY = (
    """CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' """
    """VALID UNTIL '{{expiration}}'; """
    """GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{{name}}";"""
)


def role_exists(cluster: Cluster, username: str) -> bool:
    with connect(cluster) as conn:
        row = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (username,))
        return row.fetchone() is not None


def login(cluster: Cluster, data: dict[str, Any]) -> psycopg.Connection[Any]:
    return psycopg.connect(
        host=data["host"],
        port=data["port"],
        dbname=data["database"],
        user=data["username"],
        password=data["password"],
        autocommit=True,
    )


def add_role(mount: Mount, name: str = "demo-readonly", **fields: Any) -> None:
    values = {"db_name": "pg", "creation_statements": READONLY, "allowed_agents": "dev"}
    mount.write(f"database/roles/{name}", **{**values, **fields})


def test_creds_login_and_revoke(mount: Mount, pg_cluster: Cluster) -> None:
    configure(mount, pg_cluster)
    add_role(mount)

    response = mount.creds("demo-readonly", "dev")
    data = response.data
    assert data["username"].startswith("v-dev-demo-readonly-")
    assert data["port"] == pg_cluster.port
    assert data["host"] == "127.0.0.1"
    assert data["database"] == "postgres"
    with login(pg_cluster, data) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (data["username"],)

    assert response.secret is not None
    assert "password" not in response.secret.internal_data
    mount.revoke(response.secret)
    assert not role_exists(pg_cluster, data["username"])


def test_revoke_twice_succeeds(mount: Mount, pg_cluster: Cluster) -> None:
    configure(mount, pg_cluster)
    add_role(mount)
    secret = mount.creds("demo-readonly", "dev").secret
    assert secret is not None

    mount.revoke(secret)
    assert mount.revoke(secret) is None


def test_creds_denied_for_other_agent(mount: Mount, pg_cluster: Cluster) -> None:
    configure(mount, pg_cluster)
    add_role(mount, allowed_agents="dev,ops-*")
    with connect(pg_cluster) as conn:
        before = conn.execute("SELECT count(*) FROM pg_roles").fetchone()

    with pytest.raises(
        PermissionDeniedError, match="'intruder' is not in allowed_agents"
    ):
        mount.creds("demo-readonly", "intruder")

    with connect(pg_cluster) as conn:
        after = conn.execute("SELECT count(*) FROM pg_roles").fetchone()
    assert before == after
