"""Hard cases of the database backend, through OpenBao's HTTP API.

Every request goes through the real OpenBao of the session's stack, the
built plugin and a real PostgreSQL: creds are read by the agent `dev`
logged in through the attestor, leases are revoked and renewed with
`sys/leases/*`. The plugin is mounted a second time at a path of this
module's own, with a default lease TTL of 768h, and works on a database of
its own, so the stack's `agent-creds/` mount is left as other tests expect.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import hvac
import hvac.exceptions
import jwt
import psycopg
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from devstack.stack import StackState
from tests.support.database_stack import (
    DATABASE_PLUGIN,
    admin_client,
    agent_client,
    connect,
    jwt_accessor,
    lease_time,
    login_with,
    plugin_mount,
    postgres_url,
    query_value,
    role_comment,
    role_exists,
    scratch_database,
    valid_until,
)
from tests.support.postgres import Cluster
from tests.test_agent_exec_stack import run_exec
from tests.test_database_creds import READONLY

# own_cluster: a PostgreSQL cluster of the test's own, which it may stop.
from tests.test_database_revoke import APP_ROLE, own_cluster  # noqa: F401

pytestmark = pytest.mark.stack

MOUNT = "agent-creds-db-e2e"
DATABASE = "db_e2e_issues"
AGENT_POLICY = f'path "{MOUNT}/database/creds/*" {{ capabilities = ["read"] }}'
APP_SCHEMA = """
CREATE SCHEMA app AUTHORIZATION app_owner;
CREATE TABLE app.t (id serial PRIMARY KEY);
ALTER TABLE app.t OWNER TO app_owner;
"""


@pytest.fixture(scope="module")
def admin(stack: StackState) -> hvac.Client:
    return admin_client(stack)


@pytest.fixture(scope="module")
def database(stack: StackState) -> Iterator[str]:
    """A database with table `app.t` owned by the NOLOGIN role `app_owner`."""
    with connect(stack) as conn:
        conn.execute("CREATE ROLE app_owner NOLOGIN")
    try:
        with scratch_database(stack, DATABASE) as name:
            with connect(stack, name) as conn:
                conn.execute(APP_SCHEMA)
            yield name
    finally:
        with connect(stack) as conn:
            conn.execute("DROP ROLE app_owner")


@pytest.fixture(scope="module")
def mount(admin: hvac.Client, stack: StackState, database: str) -> Iterator[str]:
    """The plugin at MOUNT, whose default lease TTL is 768h, with config `issues`."""
    with plugin_mount(
        admin,
        MOUNT,
        jwt_accessor=jwt_accessor(admin),
        default_lease_ttl="768h",
        max_lease_ttl="768h",
    ):
        configure(admin, stack, "issues", database, owner_role="app_owner")
        yield MOUNT


@pytest.fixture(scope="module")
def agent(stack: StackState, admin: hvac.Client, mount: str) -> hvac.Client:
    return agent_client(stack, admin, "db-e2e-issues", AGENT_POLICY)


def configure(
    admin: hvac.Client, stack: StackState, name: str, dbname: str, **fields: Any
) -> None:
    admin.write(
        f"{MOUNT}/database/config/{name}",
        plugin_name=DATABASE_PLUGIN,
        connection_url=postgres_url(stack.pg_port, dbname),
        username=stack.pg_user,
        password=stack.pg_password,
        allowed_roles="*",
        **fields,
    )


def add_role(admin: hvac.Client, name: str, db_name: str, **fields: Any) -> None:
    admin.write(
        f"{MOUNT}/database/roles/{name}",
        db_name=db_name,
        creation_statements=fields.pop("creation_statements", READONLY),
        allowed_agents="dev",
        **fields,
    )


def creds(client: hvac.Client, path: str, **params: str) -> dict[str, Any]:
    response: dict[str, Any] = client.adapter.get(f"/v1/{path}", params=params)
    return response


def owner_of(stack: StackState, table: str) -> Any:
    query = (
        "SELECT tableowner FROM pg_tables WHERE schemaname = 'app' AND tablename = %s"
    )
    return query_value(stack, query, table, dbname=DATABASE)


def test_revoke_reassigns_and_ends_session(
    admin: hvac.Client, agent: hvac.Client, stack: StackState, mount: str
) -> None:
    add_role(admin, "app-writer", "issues", creation_statements=APP_ROLE)
    issued = creds(agent, f"{mount}/database/creds/app-writer")
    username = issued["data"]["username"]
    session = login_with(issued["data"])
    session.execute("INSERT INTO app.t DEFAULT VALUES")
    session.execute("CREATE TABLE app.scratch (n int)")
    assert owner_of(stack, "scratch") == username

    admin.sys.revoke_lease(issued["lease_id"])

    assert not role_exists(stack, username)
    assert owner_of(stack, "scratch") == "app_owner"
    with pytest.raises(psycopg.OperationalError):
        session.execute("SELECT 1")
    session.close()
    assert admin.sys.revoke_lease(issued["lease_id"]).status_code == 204


def test_max_ttl_caps_lease_and_renew(
    admin: hvac.Client, agent: hvac.Client, stack: StackState, mount: str
) -> None:
    """A role's max_ttl of 10m caps the lease, a renewal and VALID UNTIL.

    The mount's default lease TTL is 768h and the role sets no default_ttl.
    Waiting until the renewal would pass the cap takes minutes, so the test
    renews at once with a 1h increment and checks the cap. OpenBao computes
    TTLs in whole seconds, so its expiry may pass issue time + 600 s by up to
    one second. VALID UNTIL is the lease end plus 5 s, as in Vault.
    """
    add_role(admin, "short-lived", "issues", max_ttl="10m")
    issued = creds(agent, f"{mount}/database/creds/short-lived")
    lease_id, username = issued["lease_id"], issued["data"]["username"]
    assert 0 < issued["lease_duration"] <= 600

    renewed = admin.sys.renew_lease(lease_id, increment=3600)

    assert renewed["lease_duration"] <= 600
    lease = admin.sys.read_lease(lease_id)
    cap = lease_time(lease, "issue_time") + timedelta(seconds=600)
    assert lease_time(lease, "expire_time") <= cap + timedelta(seconds=1)
    assert valid_until(stack, username) <= cap + timedelta(seconds=5)
    admin.sys.revoke_lease(lease_id)
    assert not role_exists(stack, username)


def test_creds_ttl_shortens_lease(
    admin: hvac.Client, agent: hvac.Client, stack: StackState, mount: str
) -> None:
    add_role(admin, "hour-long", "issues", default_ttl="1h", max_ttl="2h")
    before = time.time()

    issued = creds(agent, f"{mount}/database/creds/hour-long", ttl="30s")

    assert 0 < issued["lease_duration"] <= 30
    ends = valid_until(stack, issued["data"]["username"]).timestamp()
    assert ends <= before + 30 + 5 + 1
    admin.sys.revoke_lease(issued["lease_id"])


def test_creds_ttl_capped_at_max(
    admin: hvac.Client, agent: hvac.Client, mount: str
) -> None:
    add_role(admin, "hour-long", "issues", default_ttl="1h", max_ttl="2h")

    issued = creds(agent, f"{mount}/database/creds/hour-long", ttl="5h")

    assert issued["lease_duration"] == 7200
    admin.sys.revoke_lease(issued["lease_id"])


def test_creds_invalid_ttl_rejected(
    admin: hvac.Client, agent: hvac.Client, stack: StackState, mount: str
) -> None:
    add_role(admin, "hour-long", "issues", default_ttl="1h", max_ttl="2h")

    with pytest.raises(hvac.exceptions.InvalidRequest, match="'soon' for field 'ttl'"):
        creds(agent, f"{mount}/database/creds/hour-long", ttl="soon")


def test_agent_exec_ttl_for_database_role(stack: StackState) -> None:
    # The stack's demo-readonly role has a default_ttl of 5 minutes.
    query = (
        "SELECT extract(epoch FROM rolvaliduntil - now())::int FROM pg_roles "
        "WHERE rolname = current_user"
    )
    result = run_exec(
        stack, "--role", "demo-readonly", "--ttl", "30", "--", "psql", "-Atc", query
    )

    assert result.returncode == 0, result.stderr
    assert 0 < int(result.stdout.strip()) <= 30 + 5


def test_delete_config_refused_while_live(
    admin: hvac.Client, agent: hvac.Client, stack: StackState, mount: str
) -> None:
    configure(admin, stack, "in-use", DATABASE)
    add_role(admin, "in-use-reader", "in-use")
    issued = creds(agent, f"{mount}/database/creds/in-use-reader")

    with pytest.raises(hvac.exceptions.InvalidRequest) as refused:
        admin.delete(f"{mount}/database/config/in-use")

    message = str(refused.value)
    assert "still has 1 live credentials" in message
    assert f"`bao lease revoke -prefix` on {mount}/database/creds/in-use-reader" in (
        message
    )
    assert admin.read(f"{mount}/database/config/in-use") is not None
    admin.sys.revoke_lease(issued["lease_id"])
    admin.delete(f"{mount}/database/config/in-use")
    assert admin.read(f"{mount}/database/config/in-use") is None


def test_cancelled_read_leaves_no_user(
    admin: hvac.Client, agent: hvac.Client, stack: StackState, mount: str
) -> None:
    """A client that gives up during the read gets no user created for it."""
    configure(admin, stack, "cancel", DATABASE)
    slow = READONLY + " SELECT pg_sleep(0.8);"
    add_role(admin, "slow-reader", "cancel", creation_statements=slow)
    url = f"{agent.url}/v1/{mount}/database/creds/slow-reader"

    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(url, headers={"X-Vault-Token": agent.token}, timeout=0.3)
    time.sleep(1.5)  # the plugin finishes the read that Vault cancelled

    query = "SELECT count(*) FROM pg_roles WHERE rolname LIKE %s"
    assert query_value(stack, query, "v-dev-slow-reader-%") == 0
    admin.delete(f"{mount}/database/config/cancel")  # no live record, no WAL entry
    assert admin.read(f"{mount}/database/config/cancel") is None


def test_revoke_fails_while_postgres_down(
    admin: hvac.Client,
    agent: hvac.Client,
    mount: str,
    own_cluster: Cluster,  # noqa: F811
) -> None:
    admin.write(
        f"{mount}/database/config/outage",
        plugin_name=DATABASE_PLUGIN,
        connection_url=postgres_url(own_cluster.port, "postgres"),
        username="postgres",
        password=own_cluster.password,
        allowed_roles="*",
    )
    add_role(admin, "outage-reader", "outage")
    issued = creds(agent, f"{mount}/database/creds/outage-reader")
    lease_id, username = issued["lease_id"], issued["data"]["username"]

    own_cluster.stop()
    try:
        with pytest.raises(hvac.exceptions.VaultError, match="unable to connect"):
            admin.sys.revoke_lease(lease_id)
        assert admin.sys.read_lease(lease_id)["data"]["id"] == lease_id
    finally:
        own_cluster.start()

    admin.sys.revoke_lease(lease_id)
    with pytest.raises(hvac.exceptions.InvalidRequest):
        admin.sys.read_lease(lease_id)
    with psycopg.connect(**own_cluster.conninfo()) as conn:
        row = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (username,))
        assert row.fetchone() is None
    admin.delete(f"{mount}/database/config/outage")


def test_null_clears_config_and_role_fields(
    admin: hvac.Client, stack: StackState, mount: str
) -> None:
    configure(admin, stack, "nulls", DATABASE)
    add_role(admin, "nulls-reader", "nulls", max_ttl="10m")
    # The raw JSON bodies Terraform sends for removed attributes.
    bodies = {
        f"{mount}/database/config/nulls": '{"allowed_roles": null}',
        f"{mount}/database/roles/nulls-reader": (
            '{"allowed_agents": null, "max_ttl": null}'
        ),
    }
    for path, body in bodies.items():
        reply = requests.post(
            f"{stack.vault_addr}/v1/{path}",
            headers={"X-Vault-Token": stack.root_token},
            data=body,
            timeout=30,
        )
        assert reply.status_code == 204, reply.text

    config = admin.read(f"{mount}/database/config/nulls")["data"]
    assert config["allowed_roles"] == []
    assert config["connection_details"]["username"] == stack.pg_user
    role = admin.read(f"{mount}/database/roles/nulls-reader")["data"]
    assert role["allowed_agents"] == []
    # A null duration counts as absent, as in Vault: the stored value stays.
    assert role["max_ttl"] == 600
    assert role["db_name"] == "nulls"
    admin.delete(f"{mount}/database/roles/nulls-reader")
    admin.delete(f"{mount}/database/config/nulls")


LONG_JWT = "jwt-db-e2e-long"
LONG_MOUNT = "agent-creds-db-e2e-long"
LONG_AGENT = "agent-" + "x" * 61


@pytest.fixture(scope="module")
def long_agent(admin: hvac.Client, stack: StackState) -> Iterator[hvac.Client]:
    """An agent named LONG_AGENT (67 characters), on a JWT mount of its own.

    The attestor's agents are fixed by the stack, so this JWT mount trusts
    a key made here, and a plugin mount of its own names agents by it.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    admin.sys.enable_auth_method("jwt", path=LONG_JWT)
    try:
        admin.write(
            f"auth/{LONG_JWT}/config",
            jwt_validation_pubkeys=[public_pem.decode()],
            bound_issuer="db-e2e",
        )
        policy = f'path "{LONG_MOUNT}/database/creds/*" {{ capabilities = ["read"] }}'
        admin.sys.create_or_update_policy("db-e2e-long", policy)
        admin.write(
            f"auth/{LONG_JWT}/role/long",
            role_type="jwt",
            user_claim="sub",
            bound_audiences=["db-e2e"],
            token_policies=["db-e2e-long"],
            token_ttl=300,
        )
        with plugin_mount(
            admin, LONG_MOUNT, jwt_accessor=jwt_accessor(admin, LONG_JWT)
        ):
            yield _login_long_agent(stack, key)
    finally:
        admin.sys.disable_auth_method(LONG_JWT)


def _login_long_agent(stack: StackState, key: ec.EllipticCurvePrivateKey) -> Any:
    now = int(time.time())
    claims = {"sub": LONG_AGENT, "iss": "db-e2e", "aud": "db-e2e"}
    token = jwt.encode(
        {**claims, "iat": now, "nbf": now, "exp": now + 60}, key, algorithm="ES256"
    )
    client = hvac.Client(url=stack.vault_addr)
    client.auth.jwt.jwt_login(role="long", jwt=token, path=LONG_JWT)
    return client


def test_long_agent_name_through_openbao(
    admin: hvac.Client, long_agent: hvac.Client, stack: StackState
) -> None:
    admin.write(
        f"{LONG_MOUNT}/database/config/pg",
        plugin_name=DATABASE_PLUGIN,
        connection_url=postgres_url(stack.pg_port, "postgres"),
        username=stack.pg_user,
        password=stack.pg_password,
        allowed_roles="*",
    )
    admin.write(
        f"{LONG_MOUNT}/database/roles/reader",
        db_name="pg",
        creation_statements=READONLY,
        allowed_agents="agent-*",
    )
    display_name = long_agent.lookup_token()["data"]["display_name"]
    assert LONG_AGENT in display_name

    issued = [long_agent.read(f"{LONG_MOUNT}/database/creds/reader") for _ in "ab"]

    names = [response["data"]["username"] for response in issued]
    assert names[0] != names[1]
    for response, name in zip(issued, names, strict=True):
        assert len(name.encode()) <= 63
        assert re.fullmatch(r"v-agent-x+-reader-[a-z0-9]{16}", name)
        with login_with(response["data"]) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (name,)
        assert f'"agent": "{LONG_AGENT}"' in role_comment(stack, name)
        admin.sys.revoke_lease(response["lease_id"])
        assert not role_exists(stack, name)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"max_idle_connections": -5}, "invalid max_idle_connections -5"),
        ({"username_template": "{{bad"}, "unclosed action at offset 0"),
        ({"tls_ca": "garbage"}, "invalid tls_ca 'garbage'"),
        ({"private_key": "not-a-key-7f3a"}, "missing tls_certificate"),
    ],
)
def test_config_write_rejects_bad_value(
    admin: hvac.Client,
    stack: StackState,
    mount: str,
    fields: dict[str, Any],
    message: str,
) -> None:
    with pytest.raises(hvac.exceptions.InvalidRequest) as raised:
        configure(admin, stack, "rejected", DATABASE, **fields)

    assert message in str(raised.value)
    assert "not-a-key-7f3a" not in str(raised.value)
    assert admin.read(f"{mount}/database/config/rejected") is None


def test_role_write_rejects_unknown_placeholder(admin: hvac.Client, mount: str) -> None:
    with pytest.raises(hvac.exceptions.InvalidRequest) as raised:
        add_role(
            admin,
            "bad-placeholder",
            "issues",
            revocation_statements='DROP ROLE "{{nope}}"',
        )

    assert "unknown placeholder {{nope}} in revocation_statements" in str(raised.value)
    assert admin.read(f"{mount}/database/roles/bad-placeholder") is None


def test_null_password_authentication_is_password(
    admin: hvac.Client, stack: StackState, mount: str
) -> None:
    configure(admin, stack, "null-auth", DATABASE)
    reply = requests.post(
        f"{stack.vault_addr}/v1/{mount}/database/config/null-auth",
        headers={"X-Vault-Token": stack.root_token},
        data='{"password_authentication": null}',
        timeout=30,
    )

    assert reply.status_code == 204, reply.text
    config = admin.read(f"{mount}/database/config/null-auth")["data"]
    assert config["connection_details"]["password_authentication"] == "password"
    admin.delete(f"{mount}/database/config/null-auth")
