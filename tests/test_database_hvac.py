"""hvac's `client.secrets.database` against the real OpenBao and the plugin.

Administrator calls use the stack's root token, creds reads the agent `dev`
logged in through the attestor, all with
`mount_point="agent-creds/database"`, exactly as a user of Vault's database
engine would. The module adds a connection `hvac-e2e` to a database and an
admin role of its own, and removes them at the end. The admin password
contains every character that breaks naive URL or SQL splicing. The stack's
`demo` connection and `demo-readonly` role are left alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import hvac
import hvac.exceptions
import psycopg
import pytest
from psycopg import sql

from devstack.stack import StackState
from tests.support.database_stack import (
    DATABASE_PLUGIN,
    admin_client,
    agent_client,
    connect,
    login_with,
    postgres_url,
    role_count,
    role_exists,
    scratch_database,
)
from tests.test_database_creds import READONLY

pytestmark = pytest.mark.stack

MOUNT = "agent-creds/database"
CONNECTION = "hvac-e2e"
DATABASE = "db_e2e_hvac"
ADMIN_ROLE = "hvac_e2e_admin"
ADMIN_PASSWORD = "Zq{7}*'a@b/c%:d\""
AGENT_POLICY = f'path "{MOUNT}/creds/hvac-*" {{ capabilities = ["read"] }}'


@pytest.fixture(scope="module")
def admin(stack: StackState) -> hvac.Client:
    return admin_client(stack)


@pytest.fixture(scope="module")
def connection(admin: hvac.Client, stack: StackState) -> Iterator[str]:
    """Connection CONNECTION on the stack's mount, as the admin ADMIN_ROLE."""
    with connect(stack) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} SUPERUSER LOGIN PASSWORD {}").format(
                sql.Identifier(ADMIN_ROLE), ADMIN_PASSWORD
            )
        )
    try:
        with scratch_database(stack, DATABASE):
            admin.secrets.database.configure(
                name=CONNECTION,
                plugin_name=DATABASE_PLUGIN,
                verify_connection=True,
                allowed_roles=["hvac-*"],
                connection_url=postgres_url(stack.pg_port, DATABASE),
                username=ADMIN_ROLE,
                password=ADMIN_PASSWORD,
                mount_point=MOUNT,
            )
            yield CONNECTION
            # Leases left by a failed test would keep the delete refused.
            admin.sys.revoke_prefix(f"{MOUNT}/creds/hvac-reader")
            admin.secrets.database.delete_connection(CONNECTION, mount_point=MOUNT)
    finally:
        with connect(stack) as conn:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(ADMIN_ROLE)))


@pytest.fixture(scope="module")
def agent(stack: StackState, admin: hvac.Client, connection: str) -> hvac.Client:
    return agent_client(stack, admin, "db-e2e-hvac", AGENT_POLICY)


@pytest.fixture
def reader(admin: hvac.Client, connection: str) -> Iterator[str]:
    """Role `hvac-reader`: hvac's create_role, then allowed_agents written apart."""
    admin.secrets.database.create_role(
        name="hvac-reader",
        db_name=connection,
        creation_statements=[READONLY],
        default_ttl=300,
        max_ttl=600,
        mount_point=MOUNT,
    )
    # create_role takes no extra keyword arguments, so the extension field
    # goes in a second write, which keeps the fields written above.
    admin.write(f"{MOUNT}/roles/hvac-reader", allowed_agents="dev")
    yield "hvac-reader"
    admin.secrets.database.delete_role("hvac-reader", mount_point=MOUNT)


def generate(client: hvac.Client, role: str) -> dict[str, Any]:
    response: dict[str, Any] = client.secrets.database.generate_credentials(
        name=role, mount_point=MOUNT
    )
    return response


def test_read_and_list_connection(admin: hvac.Client, connection: str) -> None:
    response = admin.secrets.database.read_connection(connection, mount_point=MOUNT)

    data = response["data"]
    assert data["plugin_name"] == DATABASE_PLUGIN
    assert data["allowed_roles"] == ["hvac-*"]
    assert data["connection_details"]["username"] == ADMIN_ROLE
    assert "password" not in data["connection_details"]
    assert ADMIN_PASSWORD not in str(response)
    listed = admin.secrets.database.list_connections(mount_point=MOUNT)
    assert {"demo", connection} <= set(listed["data"]["keys"])


def test_read_list_and_delete_role(admin: hvac.Client, reader: str) -> None:
    response = admin.secrets.database.read_role(reader, mount_point=MOUNT)

    data = response["data"]
    assert data["db_name"] == CONNECTION
    assert data["creation_statements"] == [READONLY]
    assert data["default_ttl"] == 300
    assert data["max_ttl"] == 600
    assert data["allowed_agents"] == ["dev"]
    listed = admin.secrets.database.list_roles(mount_point=MOUNT)
    assert {"demo-readonly", reader} <= set(listed["data"]["keys"])

    admin.secrets.database.create_role(
        name="hvac-doomed",
        db_name=CONNECTION,
        creation_statements=[READONLY],
        mount_point=MOUNT,
    )
    admin.secrets.database.delete_role("hvac-doomed", mount_point=MOUNT)
    with pytest.raises(hvac.exceptions.InvalidPath):
        admin.secrets.database.read_role("hvac-doomed", mount_point=MOUNT)


def test_generate_credentials_and_revoke(
    admin: hvac.Client, agent: hvac.Client, stack: StackState, reader: str
) -> None:
    response = generate(agent, reader)

    data = response["data"]
    assert data["database"] == DATABASE
    assert data["port"] == stack.pg_port
    assert response["lease_duration"] == 300
    with login_with(data) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (data["username"],)

    admin.sys.revoke_lease(response["lease_id"])

    assert not role_exists(stack, data["username"])
    with pytest.raises(psycopg.OperationalError):
        login_with(data)


def test_root_token_denied_creds(
    admin: hvac.Client, stack: StackState, reader: str
) -> None:
    before = role_count(stack)

    with pytest.raises(hvac.exceptions.Forbidden, match="has no identity entity"):
        generate(admin, reader)

    assert role_count(stack) == before


def test_rotate_root_credentials(
    admin: hvac.Client, agent: hvac.Client, stack: StackState, reader: str
) -> None:
    admin.secrets.database.rotate_root_credentials(CONNECTION, mount_point=MOUNT)

    with pytest.raises(psycopg.OperationalError, match="authentication failed"):
        psycopg.connect(
            host="127.0.0.1",
            port=stack.pg_port,
            user=ADMIN_ROLE,
            password=ADMIN_PASSWORD,
            dbname=DATABASE,
        )
    response = generate(agent, reader)
    with login_with(response["data"]) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    admin.sys.revoke_lease(response["lease_id"])
    assert not role_exists(stack, response["data"]["username"])
