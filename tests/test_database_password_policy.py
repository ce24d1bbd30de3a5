"""Passwords from Vault password policies, through OpenBao and the built plugin.

A config's `password_policy` names a policy under `sys/policies/password/`,
and the plugin requests from OpenBao the password of each new user and of
each root rotation. The module mounts the plugin at a path of its own, works
on a database of its own and adds the policy POLICY: 24 characters,
lowercase letters and digits only, at least two digits. The plugin's own
generator always includes an uppercase letter and a `-`, so a password that
matches the policy came from OpenBao.
"""

from __future__ import annotations

import re
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
    jwt_accessor,
    login_with,
    plugin_mount,
    postgres_url,
    role_comment,
    role_exists,
    scratch_database,
)
from tests.test_database_creds import READONLY

pytestmark = pytest.mark.stack

MOUNT = "agent-creds-db-policy"
DATABASE = "db_password_policy"
POLICY = "agent-bridge-test-lower24"
POLICY_HCL = """
length = 24
rule "charset" {
  charset = "abcdefghijklmnopqrstuvwxyz0123456789"
}
rule "charset" {
  charset   = "0123456789"
  min-chars = 2
}
"""
ROTATED_ADMIN = "policy_rotated_admin"
AGENT_POLICY = f'path "{MOUNT}/database/creds/*" {{ capabilities = ["read"] }}'


def follows_policy(password: str) -> bool:
    digits = sum(c.isdigit() for c in password)
    return re.fullmatch(r"[a-z0-9]{24}", password) is not None and digits >= 2


@pytest.fixture(scope="module")
def admin(stack: StackState) -> Iterator[hvac.Client]:
    client = admin_client(stack)
    client.write(f"sys/policies/password/{POLICY}", policy=POLICY_HCL)
    try:
        yield client
    finally:
        client.delete(f"sys/policies/password/{POLICY}")


@pytest.fixture(scope="module")
def mount(admin: hvac.Client, stack: StackState) -> Iterator[str]:
    with (
        scratch_database(stack, DATABASE),
        plugin_mount(admin, MOUNT, jwt_accessor=jwt_accessor(admin)),
    ):
        yield MOUNT


@pytest.fixture(scope="module")
def agent(stack: StackState, admin: hvac.Client, mount: str) -> hvac.Client:
    return agent_client(stack, admin, "db-password-policy", AGENT_POLICY)


def configure(admin: hvac.Client, stack: StackState, name: str, **fields: Any) -> None:
    values = {
        "plugin_name": DATABASE_PLUGIN,
        "connection_url": postgres_url(stack.pg_port, DATABASE),
        "username": stack.pg_user,
        "password": stack.pg_password,
        "allowed_roles": "*",
        "password_policy": POLICY,
    }
    admin.write(f"{MOUNT}/database/config/{name}", **{**values, **fields})


def connect_as(stack: StackState, user: str, password: str) -> psycopg.Connection[Any]:
    return psycopg.connect(
        host="127.0.0.1",
        port=stack.pg_port,
        dbname=DATABASE,
        user=user,
        password=password,
        autocommit=True,
    )


def add_role(admin: hvac.Client, name: str, db_name: str) -> None:
    admin.write(
        f"{MOUNT}/database/roles/{name}",
        db_name=db_name,
        creation_statements=READONLY,
        allowed_agents="dev",
    )


@pytest.mark.parametrize("authentication", ["password", "scram-sha-256"])
def test_creds_password_follows_policy(
    admin: hvac.Client,
    agent: hvac.Client,
    stack: StackState,
    mount: str,
    authentication: str,
) -> None:
    configure(admin, stack, "lower24", password_authentication=authentication)
    add_role(admin, "lower24-reader", "lower24")

    issued = [agent.read(f"{mount}/database/creds/lower24-reader") for _ in "ab"]

    passwords = [response["data"]["password"] for response in issued]
    assert passwords[0] != passwords[1]
    for response, password in zip(issued, passwords, strict=True):
        assert follows_policy(password), password
        username = response["data"]["username"]
        with login_with(response["data"]) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (username,)
        admin.sys.revoke_lease(response["lease_id"])
        assert not role_exists(stack, username)


def test_read_returns_password_policy(
    admin: hvac.Client, stack: StackState, mount: str
) -> None:
    configure(admin, stack, "lower24")

    data = admin.read(f"{mount}/database/config/lower24")["data"]

    assert data["password_policy"] == POLICY


@pytest.fixture
def rotated_admin(stack: StackState) -> Iterator[str]:
    """A superuser of the test's own, whose password rotate-root replaces."""
    with connect(stack) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} SUPERUSER LOGIN PASSWORD 'first-pw-1'").format(
                sql.Identifier(ROTATED_ADMIN)
            )
        )
    try:
        yield ROTATED_ADMIN
    finally:
        with connect(stack) as conn:
            conn.execute(
                sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(ROTATED_ADMIN))
            )


def test_rotate_root_password_follows_policy(
    admin: hvac.Client, stack: StackState, mount: str, rotated_admin: str
) -> None:
    # The second statement records the new password where the test can read it.
    statements = [
        "ALTER ROLE {{name}} WITH PASSWORD {{password}}",
        "COMMENT ON ROLE {{name}} IS {{password}}",
    ]
    configure(
        admin,
        stack,
        "rotating",
        username=rotated_admin,
        password="first-pw-1",
        root_rotation_statements=statements,
    )

    admin.write(f"{mount}/database/rotate-root/rotating")

    password = role_comment(stack, rotated_admin)
    assert follows_policy(password), password
    with connect_as(stack, rotated_admin, password) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (rotated_admin,)
    with pytest.raises(psycopg.OperationalError):
        connect_as(stack, rotated_admin, "first-pw-1")
    admin.write(f"{mount}/database/reset/rotating")
    admin.delete(f"{mount}/database/config/rotating")


def test_unknown_policy_fails_config_write(
    admin: hvac.Client, stack: StackState, mount: str
) -> None:
    with pytest.raises(hvac.exceptions.InvalidRequest) as raised:
        configure(admin, stack, "typo", password_policy="no-such-policy")

    message = str(raised.value)
    assert "invalid password_policy" in message
    assert "password policy 'no-such-policy'" in message
    assert "bao write sys/policies/password/no-such-policy" in message
    assert admin.read(f"{mount}/database/config/typo") is None


def test_unknown_policy_fails_creds_and_rotate(
    admin: hvac.Client,
    agent: hvac.Client,
    stack: StackState,
    mount: str,
    rotated_admin: str,
) -> None:
    # Without verify_connection the config is stored, as Vault's engine does.
    configure(
        admin,
        stack,
        "unchecked",
        username=rotated_admin,
        password="first-pw-1",
        password_policy="no-such-policy",
        verify_connection=False,
    )
    add_role(admin, "unchecked-reader", "unchecked")

    with pytest.raises(hvac.exceptions.InvalidRequest) as creds_error:
        agent.read(f"{mount}/database/creds/unchecked-reader")
    with pytest.raises(hvac.exceptions.InvalidRequest) as rotate_error:
        admin.write(f"{mount}/database/rotate-root/unchecked")

    for raised in (creds_error, rotate_error):
        message = str(raised.value)
        assert "password policy 'no-such-policy'" in message
        assert "bao write sys/policies/password/no-such-policy" in message
    stored = admin.read(f"{mount}/database/config/unchecked")["data"]
    assert stored["password_policy"] == "no-such-policy"
    # The failed rotation changed nothing: the old password still works.
    with connect_as(stack, rotated_admin, "first-pw-1") as conn:
        assert conn.execute("SELECT current_user").fetchone() == (rotated_admin,)
    admin.delete(f"{mount}/database/roles/unchecked-reader")
    admin.delete(f"{mount}/database/config/unchecked")
