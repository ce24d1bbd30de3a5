"""Creds, revoke and renew of the database backend against a real PostgreSQL."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import sql

from plugin.database.credentials import saslprep, scram_sha256_verifier
from plugin.database.errors import StatementFailedError
from plugin.logical import (
    BadRequestError,
    Entity,
    EntityAlias,
    LogicalError,
    PermissionDeniedError,
)
from tests.support.database import (
    HOUR,
    JWT_ACCESSOR,
    FakeSystemView,
    Mount,
    configure,
    new_mount,
)
from tests.support.postgres import Cluster, connect, role_comment, stored_password

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
    assert response.secret.internal_data["token_accessor"] == "accessor-dev"
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


def test_creds_denied_without_entity(mount: Mount, pg_cluster: Cluster) -> None:
    configure(mount, pg_cluster)
    add_role(mount)

    with pytest.raises(PermissionDeniedError, match="no identity entity"):
        mount.read("database/creds/demo-readonly")


def test_empty_allowed_agents_denies_all(mount: Mount, pg_cluster: Cluster) -> None:
    configure(mount, pg_cluster)
    add_role(mount, allowed_agents=[])

    with pytest.raises(PermissionDeniedError, match="allows no agents"):
        mount.creds("demo-readonly", "dev")


def test_alias_on_other_mount_denied(mount: Mount, pg_cluster: Cluster) -> None:
    configure(mount, pg_cluster)
    add_role(mount)
    entity_id = mount.system.add_agent("dev")
    entity = mount.system.entities[entity_id]
    other = EntityAlias("dev", "auth_userpass_1", "userpass")
    mount.system.entities[entity_id] = Entity(entity.id, entity.name, (other,))

    with pytest.raises(PermissionDeniedError, match="no alias on the JWT auth mount"):
        mount.read("database/creds/demo-readonly", entity_id=entity_id)
    # The same denial follows a config/identity that names another mount.
    mount.write("config/identity", jwt_mount_accessor="auth_jwt_00000000")
    with pytest.raises(PermissionDeniedError, match="config/identity names that"):
        mount.creds("demo-readonly", "dev")


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("jwt/", "not an auth mount accessor"),
        ("jwt", "not an auth mount accessor"),
        ("auth_jwt_74F2EEFB", "not an auth mount accessor"),
        ("auth_jwt_74f2eef", "not an auth mount accessor"),
        (" auth_jwt_74f2eefb", "not an auth mount accessor"),
        ("auth_token_b011cc9e", "token auth mount"),
    ],
)
def test_identity_rejects_bad_accessor(mount: Mount, value: str, problem: str) -> None:
    with pytest.raises(BadRequestError) as caught:
        mount.write("config/identity", jwt_mount_accessor=value)

    message = str(caught.value)
    assert f"invalid jwt_mount_accessor {value!r}" in message
    assert problem in message
    assert "bao auth list" in message
    assert mount.read("config/identity").data == {"jwt_mount_accessor": JWT_ACCESSOR}


@pytest.mark.parametrize(
    "value", ["auth_jwt_74f2eefb", "auth_oidc_0a1b2c3d", "auth_my-jwt.v2_00000000"]
)
def test_identity_accepts_accessor(mount: Mount, value: str) -> None:
    mount.write("config/identity", jwt_mount_accessor=value)
    assert mount.read("config/identity").data == {"jwt_mount_accessor": value}


def test_nasty_admin_password_works(mount: Mount, pg_cluster: Cluster) -> None:
    nasty = "Zq{7}*'a@b/c%:d\""
    with connect(pg_cluster) as conn:
        conn.execute("DROP ROLE IF EXISTS nasty_admin")
        conn.execute(
            sql.SQL("CREATE ROLE nasty_admin SUPERUSER LOGIN PASSWORD {}").format(nasty)
        )
    configure(mount, pg_cluster, username="nasty_admin", password=nasty)
    add_role(mount)

    response = mount.creds("demo-readonly", "dev")
    with login(pg_cluster, response.data) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert response.secret is not None
    mount.revoke(response.secret)
    assert not role_exists(pg_cluster, response.data["username"])


def test_scram_verifier_login_works(mount: Mount, pg_cluster: Cluster) -> None:
    configure(mount, pg_cluster, password_authentication="scram-sha-256")
    add_role(mount)

    response = mount.creds("demo-readonly", "dev")
    verifier = stored_password(pg_cluster, response.data["username"])
    assert verifier.startswith("SCRAM-SHA-256$4096:")
    with login(pg_cluster, response.data) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert response.secret is not None
    mount.revoke(response.secret)


def test_one_round_scram_verifier_login_works(
    mount: Mount, pg_cluster: Cluster
) -> None:
    configure(
        mount, pg_cluster, password_authentication="scram-sha-256", scram_iterations=1
    )
    add_role(mount)

    response = mount.creds("demo-readonly", "dev")
    verifier = stored_password(pg_cluster, response.data["username"])
    assert verifier.startswith("SCRAM-SHA-256$1:")
    with login(pg_cluster, response.data) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (
            response.data["username"],
        )
    with pytest.raises(psycopg.OperationalError, match="password authentication"):
        login(pg_cluster, {**response.data, "password": "wrong"}).close()
    assert response.secret is not None
    mount.revoke(response.secret)


# Passwords a password policy with a non-ASCII charset may produce, and the
# text SASLprep turns each into before SCRAM hashes it.
UNICODE_PASSWORDS = [
    ("pass\u00a0word-\u00e91", "pass word-\u00e91"),  # no-break space: a space
    ("\uff50\uff41\uff53\uff53-\uff11", "pass-1"),  # full-width forms: NFKC
    ("soft\u00adhyphen-\u00fc", "softhyphen-\u00fc"),  # soft hyphen: dropped
    ("\ufb01x-\u210c-\u00f6", "fix-H-\u00f6"),  # ligature, letterlike symbol
    ("tab\there-\u00fc", "tab\there-\u00fc"),  # control character: kept as is
    ("\u0627abc", "\u0627abc"),  # right-to-left next to left-to-right: as is
]


@pytest.mark.parametrize(("password", "prepared"), UNICODE_PASSWORDS)
def test_scram_verifier_of_unicode_password(
    pg_cluster: Cluster, password: str, prepared: str
) -> None:
    verifier = scram_sha256_verifier(password)
    with connect(pg_cluster) as conn:
        conn.execute("DROP ROLE IF EXISTS unicode_pw")
        conn.execute(
            sql.SQL("CREATE ROLE unicode_pw LOGIN PASSWORD {}").format(verifier)
        )

    assert saslprep(password) == prepared
    # libpq prepares the password the same way before it proves it.
    with connect(pg_cluster, user="unicode_pw", password=password) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("unicode_pw",)
    with connect(pg_cluster) as conn:
        conn.execute("DROP ROLE unicode_pw")


def test_policy_password_with_scram(pg_cluster: Cluster) -> None:
    system = FakeSystemView()
    system.password_policies["unicode"] = lambda: "\uff50\uff57-\u00a0\u00e9-42"
    mount = new_mount(system)
    configure(
        mount,
        pg_cluster,
        password_policy="unicode",
        password_authentication="scram-sha-256",
    )
    add_role(mount)

    response = mount.creds("demo-readonly", "dev")

    assert response.data["password"] == "\uff50\uff57-\u00a0\u00e9-42"
    with login(pg_cluster, response.data) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (
            response.data["username"],
        )
    assert response.secret is not None
    mount.revoke(response.secret)
    mount.backend.cleanup()


def test_unknown_policy_rejected(mount: Mount, pg_cluster: Cluster) -> None:
    with pytest.raises(BadRequestError, match="invalid password_policy"):
        configure(mount, pg_cluster, password_policy="missing")

    configure(mount, pg_cluster, password_policy="missing", verify_connection=False)
    add_role(mount)
    with pytest.raises(BadRequestError, match="password policy 'missing' not found"):
        mount.creds("demo-readonly", "dev")


def test_long_agent_names_unique(mount: Mount, pg_cluster: Cluster) -> None:
    configure(mount, pg_cluster)
    agent = "agent-" + "x" * 61
    assert len(agent) == 67
    add_role(mount, allowed_agents="agent-*")

    first = mount.creds("demo-readonly", agent)
    second = mount.creds("demo-readonly", agent)
    names = [first.data["username"], second.data["username"]]
    assert names[0] != names[1]
    for response in (first, second):
        name = response.data["username"]
        assert len(name.encode()) <= 63
        assert re.fullmatch(r"[a-z0-9_-]+", name)
        with login(pg_cluster, response.data) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (name,)
        assert response.secret is not None
        mount.revoke(response.secret)


def test_role_comment_names_agent(mount: Mount, pg_cluster: Cluster) -> None:
    configure(mount, pg_cluster)
    add_role(mount)

    response = mount.creds("demo-readonly", "dev")
    comment = role_comment(pg_cluster, response.data["username"])
    assert comment["agent"] == "dev"
    assert comment["role"] == "demo-readonly"
    assert comment["token_accessor"] == "accessor-dev"
    assert response.secret is not None
    mount.revoke(response.secret)


def test_max_ttl_caps_lease_and_renew(pg_cluster: Cluster) -> None:
    mount = new_mount(FakeSystemView(default_ttl=768 * HOUR, max_ttl=768 * HOUR))
    configure(mount, pg_cluster)
    add_role(mount, max_ttl="10m")

    response = mount.creds("demo-readonly", "dev")
    secret = response.secret
    assert secret is not None
    assert secret.lease.ttl <= 600
    assert secret.lease.max_ttl == 600

    secret.lease.issue_time = time.time() - 590
    secret.lease.increment = 3600
    renewed = mount.renew(secret)
    assert renewed is not None and renewed.secret is not None
    assert 0 < renewed.secret.lease.ttl <= 10
    with connect(pg_cluster) as conn:
        row = conn.execute(
            "SELECT rolvaliduntil FROM pg_roles WHERE rolname = %s",
            (response.data["username"],),
        ).fetchone()
    assert row is not None
    assert row[0].timestamp() <= time.time() + 10 + 5 + 1

    secret.lease.issue_time = time.time() - 601
    with pytest.raises(BadRequestError, match="max TTL"):
        mount.renew(secret)
    mount.revoke(secret)
    mount.backend.cleanup()


def test_role_default_ttl_sets_lease(mount: Mount, pg_cluster: Cluster) -> None:
    configure(mount, pg_cluster)
    add_role(mount, default_ttl="5m", max_ttl="1h")

    secret = mount.creds("demo-readonly", "dev").secret
    assert secret is not None
    assert secret.lease.ttl == 300
    assert secret.lease.max_ttl == 3600
    assert secret.lease.renewable
    assert secret.lease.issue_time > 0
    mount.revoke(secret)


def test_revoke_without_config_fails_clearly(mount: Mount, pg_cluster: Cluster) -> None:
    configure(mount, pg_cluster)
    add_role(mount)
    secret = mount.creds("demo-readonly", "dev").secret
    assert secret is not None
    # Deleted behind the API's check, as a restore or another node would.
    mount.storage.delete("database/config/pg")
    mount.backend.invalidate("database/config/pg")

    with pytest.raises(LogicalError, match="database config 'pg' was deleted"):
        mount.revoke(secret)

    configure(mount, pg_cluster)
    mount.revoke(secret)


# A generated password with the characters SQL escapes: a quote and a backslash.
LEAKY_PASSWORD = "Leak'y\\Pw-9x7Q"
FAILING_STATEMENTS = [
    # PostgreSQL quotes the value: invalid input syntax for type integer: "...".
    "SELECT '{{password}}'::int",
    # A syntax error quotes the token, the literal in its escaped form.
    "SELECT 1 '{{password}}'",
]


def leaky_mount() -> Mount:
    system = FakeSystemView()
    system.password_policies["leaky"] = lambda: LEAKY_PASSWORD
    return new_mount(system)


def assert_password_hidden(text: str) -> None:
    assert LEAKY_PASSWORD not in text
    assert LEAKY_PASSWORD.replace("'", "''") not in text
    assert "Leak" not in text
    assert "SCRAM-SHA-256$" not in text


def fail_create(mount: Mount, cluster: Cluster, statement: str) -> None:
    configure(mount, cluster, password_policy="leaky")
    add_role(mount, creation_statements=[READONLY, statement])
    mount.creds("demo-readonly", "dev")


def fail_create_with_verifier(mount: Mount, cluster: Cluster, statement: str) -> None:
    """Fail a create whose {{password}} is the SCRAM verifier of the password."""
    configure(
        mount,
        cluster,
        password_policy="leaky",
        password_authentication="scram-sha-256",
    )
    add_role(mount, creation_statements=[READONLY, statement])
    mount.creds("demo-readonly", "dev")


def fail_rotation(mount: Mount, cluster: Cluster, statement: str) -> None:
    configure(
        mount, cluster, password_policy="leaky", root_rotation_statements=[statement]
    )
    mount.write("database/rotate-root/pg")


@pytest.mark.parametrize("statement", FAILING_STATEMENTS)
@pytest.mark.parametrize(
    "action", [fail_create, fail_create_with_verifier, fail_rotation]
)
def test_failed_statement_hides_password(
    pg_cluster: Cluster,
    action: Callable[[Mount, Cluster, str], None],
    statement: str,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    mount = leaky_mount()
    try:
        with pytest.raises(StatementFailedError) as err:
            action(mount, pg_cluster, statement)
    finally:
        mount.backend.cleanup()

    assert "<redacted>" in str(err.value)
    assert_password_hidden(str(err.value))
    assert_password_hidden(caplog.text)
    assert_password_hidden(capfd.readouterr().err)
