"""An admin user with CREATEROLE instead of SUPERUSER, on the session's cluster.

The default revoke runs `REASSIGN OWNED BY` the user, which PostgreSQL
allows only to members of the user's role. On the session's cluster
(PostgreSQL 15) a CREATEROLE admin is not a member of the roles it creates
unless the creation statements grant the membership:
`GRANT "{{name}}" TO CURRENT_USER`. tests/test_database_pg_versions.py runs
these cases on PostgreSQL 16 and 18. There the admin's own grant has ADMIN
only, so the same statement is needed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from plugin.logical import LogicalError
from tests.support.database import Mount, configure
from tests.support.postgres import Cluster, connect
from tests.test_database_creds import add_role, login, role_exists

ADMIN = "bridge_createrole"
ADMIN_PASSWORD = "createrole-admin-pw-1"
DATABASE = "createrole_db"
CREATE = (
    """CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' """
    """VALID UNTIL '{{expiration}}';
    GRANT USAGE, CREATE ON SCHEMA public TO "{{name}}";"""
)
MEMBERSHIP = """GRANT "{{name}}" TO CURRENT_USER;"""


@pytest.fixture
def createrole_admin(pg_cluster: Cluster) -> Iterator[str]:
    """The non-superuser ADMIN, with CREATEROLE and its own database DATABASE."""
    with connect(pg_cluster) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        conn.execute(f"DROP ROLE IF EXISTS {ADMIN}")
        conn.execute(
            f"CREATE ROLE {ADMIN} LOGIN CREATEROLE PASSWORD '{ADMIN_PASSWORD}'"
        )
        conn.execute(f"CREATE DATABASE {DATABASE} OWNER {ADMIN}")
    try:
        yield ADMIN
    finally:
        with connect(pg_cluster) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
            conn.execute(f"DROP ROLE IF EXISTS {ADMIN}")


def configure_admin(mount: Mount, cluster: Cluster) -> None:
    url = (
        "postgresql://{{username}}:{{password}}@127.0.0.1:"
        f"{cluster.port}/{DATABASE}"
    )
    configure(
        mount, cluster, connection_url=url, username=ADMIN, password=ADMIN_PASSWORD
    )


def table_owner(cluster: Cluster, table: str) -> Any:
    with connect(cluster, DATABASE) as conn:
        query = "SELECT tableowner FROM pg_tables WHERE tablename = %s"
        row = conn.execute(query, (table,)).fetchone()
    return None if row is None else row[0]


def drop_left_user(cluster: Cluster, username: str) -> None:
    with connect(cluster, DATABASE) as conn:
        conn.execute(f'REASSIGN OWNED BY "{username}" TO {ADMIN}')
        conn.execute(f'DROP OWNED BY "{username}"')
        conn.execute(f'DROP ROLE "{username}"')


def test_createrole_admin_revoke_fails_without_membership(
    mount: Mount, pg_cluster: Cluster, createrole_admin: str
) -> None:
    configure_admin(mount, pg_cluster)
    add_role(mount, "writer", creation_statements=CREATE)
    response = mount.creds("writer", "dev")
    username = response.data["username"]
    with login(pg_cluster, response.data) as session:
        session.execute("CREATE TABLE scratch (n int)")
    assert response.secret is not None

    try:
        with pytest.raises(LogicalError, match="permission denied to reassign"):
            mount.revoke(response.secret)
        assert role_exists(pg_cluster, username)
    finally:
        drop_left_user(pg_cluster, username)


def test_createrole_admin_revokes_with_membership(
    mount: Mount, pg_cluster: Cluster, createrole_admin: str
) -> None:
    configure_admin(mount, pg_cluster)
    add_role(mount, "writer", creation_statements=[CREATE, MEMBERSHIP])
    response = mount.creds("writer", "dev")
    username = response.data["username"]
    session = login(pg_cluster, response.data)
    session.execute("CREATE TABLE scratch (n int)")
    assert response.secret is not None

    mount.revoke(response.secret)

    assert not role_exists(pg_cluster, username)
    assert table_owner(pg_cluster, "scratch") == ADMIN
    with pytest.raises(psycopg.OperationalError):
        session.execute("SELECT 1")
    session.close()


@pytest.fixture
def owner_role(pg_cluster: Cluster, createrole_admin: str) -> Iterator[str]:
    """A NOLOGIN role that receives the objects of revoked users."""
    name = "bridge_objects_owner"
    with connect(pg_cluster) as conn:
        conn.execute(f"DROP ROLE IF EXISTS {name}")
        conn.execute(f"CREATE ROLE {name} NOLOGIN")
    try:
        yield name
    finally:
        with connect(pg_cluster) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
            conn.execute(f"DROP ROLE IF EXISTS {name}")


@pytest.mark.parametrize("member", [False, True])
def test_createrole_admin_owner_role_membership(
    mount: Mount, pg_cluster: Cluster, owner_role: str, member: bool
) -> None:
    """REASSIGN OWNED to owner_role needs the admin's membership in it too."""
    if member:
        with connect(pg_cluster) as conn:
            conn.execute(f"GRANT {owner_role} TO {ADMIN}")
    configure_admin(mount, pg_cluster)
    mount.write("database/config/pg", owner_role=owner_role)
    add_role(mount, "writer", creation_statements=[CREATE, MEMBERSHIP])
    response = mount.creds("writer", "dev")
    username = response.data["username"]
    with login(pg_cluster, response.data) as session:
        session.execute("CREATE TABLE owned_scratch (n int)")
    assert response.secret is not None

    if not member:
        try:
            with pytest.raises(LogicalError, match="permission denied to reassign"):
                mount.revoke(response.secret)
            assert role_exists(pg_cluster, username)
            assert table_owner(pg_cluster, "owned_scratch") == username
        finally:
            drop_left_user(pg_cluster, username)
        return

    mount.revoke(response.secret)

    assert not role_exists(pg_cluster, username)
    assert table_owner(pg_cluster, "owned_scratch") == owner_role
