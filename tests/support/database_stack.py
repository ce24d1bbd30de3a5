"""Helpers for database backend tests against the embedded stack.

The tests drive the real OpenBao of the session's `stack` fixture over HTTP.
Each test module works on a database, mounts and JWT roles of its own, so
the stack's `demo` connection, its `demo-readonly` role and its JWT role
`dev` stay as other tests expect them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import hvac
import psycopg
from psycopg import sql

from attestor.client import request_token
from devstack.stack import StackState

PLUGIN = "agent-bridge"
DATABASE_PLUGIN = "postgresql-database-plugin"
# libpq connection parameters, and the creds response field of each.
CREDS_PARAMS = {
    "host": "host",
    "port": "port",
    "dbname": "database",
    "user": "username",
    "password": "password",
}


def admin_client(stack: StackState) -> hvac.Client:
    """Return an hvac client holding the stack's root token."""
    return hvac.Client(url=stack.vault_addr, token=stack.root_token)


def connect(stack: StackState, dbname: str = "postgres") -> psycopg.Connection[Any]:
    """Open an autocommit connection to the stack's cluster as its superuser."""
    return psycopg.connect(
        host="127.0.0.1",
        port=stack.pg_port,
        user=stack.pg_user,
        password=stack.pg_password,
        dbname=dbname,
        autocommit=True,
    )


def login_with(data: dict[str, Any]) -> psycopg.Connection[Any]:
    """Open a connection with the fields of a creds response."""
    params = {param: data[key] for param, key in CREDS_PARAMS.items()}
    return psycopg.connect(**params, autocommit=True)


def query_value(
    stack: StackState, query: str, *params: Any, dbname: str = "postgres"
) -> Any:
    """Return the first column of the first row of `query`, or None."""
    with connect(stack, dbname) as conn:
        row = conn.execute(query.encode(), params).fetchone()
    return None if row is None else row[0]


def role_exists(stack: StackState, username: str) -> bool:
    query = "SELECT 1 FROM pg_roles WHERE rolname = %s"
    return query_value(stack, query, username) is not None


def role_count(stack: StackState) -> int:
    return int(query_value(stack, "SELECT count(*) FROM pg_roles"))


def role_comment(stack: StackState, username: str) -> str:
    query = (
        "SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = %s"
    )
    return str(query_value(stack, query, username) or "")


def valid_until(stack: StackState, username: str) -> datetime:
    """Return the VALID UNTIL of a PostgreSQL role."""
    query = "SELECT rolvaliduntil FROM pg_roles WHERE rolname = %s"
    value = query_value(stack, query, username)
    assert isinstance(value, datetime), f"{username} has no VALID UNTIL"
    return value


@contextlib.contextmanager
def scratch_database(stack: StackState, name: str) -> Iterator[str]:
    """Create database `name` for one module and drop it, sessions and all."""
    ident = sql.Identifier(name)
    with connect(stack) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(ident))
    try:
        yield name
    finally:
        with connect(stack) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(ident))


@contextlib.contextmanager
def plugin_mount(
    admin: hvac.Client, path: str, *, jwt_accessor: str, **config: Any
) -> Iterator[str]:
    """Mount the plugin at `path`, write its identity config, unmount at exit.

    Unmounting revokes the mount's remaining leases through the plugin, so
    the servers they were minted on must still run.
    """
    admin.sys.enable_secrets_engine(PLUGIN, path=path, config=config or None)
    try:
        admin.write(f"{path}/config/identity", jwt_mount_accessor=jwt_accessor)
        yield path
    finally:
        admin.sys.disable_secrets_engine(path)


def jwt_accessor(admin: hvac.Client, path: str = "jwt") -> str:
    return str(admin.sys.list_auth_methods()[f"{path}/"]["accessor"])


def agent_client(
    stack: StackState, admin: hvac.Client, jwt_role: str, policy: str
) -> hvac.Client:
    """Log in as the agent `dev` through the attestor, with `policy` only.

    The JWT role `jwt_role` copies the stack's role `dev` (same bound claims
    and claim mappings, so the same entity alias) with its own policy.
    """
    admin.sys.create_or_update_policy(jwt_role, policy)
    dev = admin.read("auth/jwt/role/dev")["data"]
    role = {key: value for key, value in dev.items() if value is not None}
    role.update(token_policies=[jwt_role], token_ttl=900, token_max_ttl=1800)
    admin.write(f"auth/jwt/role/{jwt_role}", **role)
    client = hvac.Client(url=stack.vault_addr)
    issued = request_token(stack.attestor_socket)
    client.auth.jwt.jwt_login(role=jwt_role, jwt=issued.token, path="jwt")
    return client


def postgres_url(port: int, dbname: str) -> str:
    """Return a connection_url with Vault's credential templates."""
    return f"postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{port}/{dbname}"


def lease_time(lease: dict[str, Any], key: str) -> datetime:
    """Parse `issue_time` or `expire_time` of a `sys/leases/lookup` response."""
    return datetime.fromisoformat(str(lease["data"][key]))
