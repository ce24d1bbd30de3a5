"""The database API in the request shapes hvac and Terraform send."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from cryptography.hazmat.primitives import serialization

from plugin.database.config import load_config
from plugin.database.errors import ConfigInUseError
from plugin.framework import put_wal
from plugin.logical import BadRequestError, Operation, PermissionDeniedError
from tests.support.database import Mount, configure
from tests.support.postgres import Cluster, stored_password
from tests.test_database_creds import READONLY, add_role, login
from tests.test_database_tls import Pki, key_body, new_pki


def test_hvac_configure_and_read(mount: Mount, pg_cluster: Cluster) -> None:
    # hvac's configure(): plugin_name, allowed_roles, verify_connection,
    # root_rotation_statements, plus connection fields as keyword arguments.
    mount.write(
        "database/config/pg",
        plugin_name="postgresql-database-plugin",
        allowed_roles=["demo-readonly", "app-*"],
        verify_connection=True,
        connection_url=(
            f"postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{pg_cluster.port}"
            "/postgres?sslmode=disable"
        ),
        username="postgres",
        password=pg_cluster.password,
    )

    response = mount.read("database/config/pg")

    assert response is not None
    data = response.data
    assert data["plugin_name"] == "postgresql-database-plugin"
    assert data["allowed_roles"] == ["demo-readonly", "app-*"]
    assert data["verify_connection"] is True
    assert data["connection_details"]["username"] == "postgres"
    assert "password" not in data["connection_details"]
    assert pg_cluster.password not in str(data)
    listed = mount.request(Operation.LIST, "database/config/")
    assert listed is not None and listed.data["keys"] == ["pg"]


def test_unsupported_plugin_name_rejected(mount: Mount, pg_cluster: Cluster) -> None:
    with pytest.raises(BadRequestError, match="supported plugins are postgresql"):
        configure(mount, pg_cluster, plugin_name="mysql-database-plugin")


def test_wrong_password_rejected_on_verify(mount: Mount, pg_cluster: Cluster) -> None:
    with pytest.raises(BadRequestError, match="error verifying the connection") as err:
        configure(mount, pg_cluster, password="wrong-password-123")
    assert "wrong-password-123" not in str(err.value)
    assert mount.read("database/config/pg") is None


def test_password_in_url_rejected(mount: Mount, pg_cluster: Cluster) -> None:
    url = f"postgresql://postgres:secret-pw@127.0.0.1:{pg_cluster.port}/postgres"
    with pytest.raises(BadRequestError, match="connection_url contains 'password'"):
        configure(mount, pg_cluster, connection_url=url)


def test_hvac_create_and_read_role(mount: Mount, pg_cluster: Cluster) -> None:
    configure(mount, pg_cluster)
    # hvac's create_role() sends statements as lists and TTLs as given.
    mount.write(
        "database/roles/demo-readonly",
        db_name="pg",
        creation_statements=[READONLY],
        default_ttl="1h",
        max_ttl=86400,
        revocation_statements=['DROP ROLE IF EXISTS "{{name}}"'],
    )

    response = mount.read("database/roles/demo-readonly")

    assert response is not None
    data = response.data
    assert data["db_name"] == "pg"
    assert data["creation_statements"] == [READONLY]
    assert data["default_ttl"] == 3600
    assert data["max_ttl"] == 86400
    assert data["revocation_statements"] == ['DROP ROLE IF EXISTS "{{name}}"']
    assert data["allowed_agents"] == []
    listed = mount.request(Operation.LIST, "database/roles")
    assert listed is not None and listed.data["keys"] == ["demo-readonly"]
    mount.request(Operation.DELETE, "database/roles/demo-readonly")
    assert mount.read("database/roles/demo-readonly") is None


def test_role_update_keeps_other_fields(mount: Mount, pg_cluster: Cluster) -> None:
    configure(mount, pg_cluster)
    # Terraform's typed role resource, then a generic write of allowed_agents.
    mount.write(
        "database/roles/r", db_name="pg", creation_statements=[READONLY], max_ttl=600
    )
    mount.write("database/roles/r", allowed_agents="dev,ops-*")
    mount.write("database/roles/r", db_name="pg", creation_statements=[READONLY])

    response = mount.read("database/roles/r")

    assert response is not None
    assert response.data["allowed_agents"] == ["dev", "ops-*"]
    assert response.data["max_ttl"] == 600


def test_role_create_starts_from_defaults(mount: Mount, pg_cluster: Cluster) -> None:
    configure(mount, pg_cluster)
    add_role(mount, "r", max_ttl=600)

    mount.request(
        Operation.CREATE,
        "database/roles/r",
        {"db_name": "pg", "creation_statements": READONLY},
    )

    response = mount.read("database/roles/r")
    assert response is not None
    assert response.data["max_ttl"] == 0
    assert response.data["allowed_agents"] == []


def test_role_rejects_default_above_max(mount: Mount) -> None:
    with pytest.raises(BadRequestError, match="default_ttl 7200 s is greater"):
        mount.write(
            "database/roles/r",
            db_name="pg",
            creation_statements=READONLY,
            default_ttl="2h",
            max_ttl="1h",
        )


def test_invalid_ttl_names_field(mount: Mount) -> None:
    with pytest.raises(BadRequestError, match="'soon' for field 'max_ttl'"):
        mount.write(
            "database/roles/r",
            db_name="pg",
            creation_statements=READONLY,
            max_ttl="soon",
        )


@pytest.mark.parametrize("field", ["default_ttl", "max_ttl"])
def test_role_rejects_ttl_above_go_max(mount: Mount, field: str) -> None:
    with pytest.raises(BadRequestError) as err:
        mount.write(
            "database/roles/r",
            db_name="pg",
            creation_statements=READONLY,
            **{field: 1e300},
        )

    assert f"invalid value 1e+300 for field {field!r}" in str(err.value)
    assert "at most 9223372036 s (about 292 years)" in str(err.value)
    assert mount.read("database/roles/r") is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_open_connections", 1e30),
        ("max_idle_connections", 2**63),
        ("max_connection_lifetime", 1e300),
    ],
)
def test_config_rejects_huge_values(
    mount: Mount, pg_cluster: Cluster, field: str, value: float
) -> None:
    with pytest.raises(BadRequestError, match=f"for field '{field}'"):
        configure(mount, pg_cluster, **{field: value})

    assert mount.read("database/config/pg") is None


def test_unknown_field_warns(mount: Mount) -> None:
    response = mount.write(
        "database/roles/r", db_name="pg", creation_statements=READONLY, colour="red"
    )

    assert response is not None
    assert response.warnings == [
        "Endpoint ignored these unrecognized parameters: ['colour']"
    ]


def test_delete_config_refused_while_live(mount: Mount, pg_cluster: Cluster) -> None:
    configure(mount, pg_cluster)
    add_role(mount)
    secret = mount.creds("demo-readonly", "dev").secret
    assert secret is not None

    with pytest.raises(ConfigInUseError, match="1 live credentials"):
        mount.request(Operation.DELETE, "database/config/pg")

    mount.revoke(secret)
    mount.request(Operation.DELETE, "database/config/pg")
    assert mount.read("database/config/pg") is None


def test_role_outside_allowed_roles_denied(mount: Mount, pg_cluster: Cluster) -> None:
    configure(mount, pg_cluster, allowed_roles="other")
    add_role(mount)

    with pytest.raises(
        PermissionDeniedError, match="not in allowed_roles of config 'pg'"
    ):
        mount.creds("demo-readonly", "dev")


def test_rotate_root_changes_password(mount: Mount, pg_cluster: Cluster) -> None:
    with psycopg.connect(**pg_cluster.conninfo(), autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS rotated_admin")
        conn.execute("CREATE ROLE rotated_admin SUPERUSER LOGIN PASSWORD 'first-pw-1'")
    configure(mount, pg_cluster, username="rotated_admin", password="first-pw-1")
    add_role(mount)

    mount.write("database/rotate-root/pg")

    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(
            **{
                **pg_cluster.conninfo(),
                "user": "rotated_admin",
                "password": "first-pw-1",
            }
        )
    secret = mount.creds("demo-readonly", "dev").secret
    assert secret is not None
    mount.revoke(secret)
    assert mount.storage.list("wal/") == []


def test_reset_reconnects(mount: Mount, pg_cluster: Cluster) -> None:
    configure(mount, pg_cluster)

    assert mount.write("database/reset/pg") is None
    with pytest.raises(BadRequestError, match="config 'missing' not found"):
        mount.write("database/reset/missing")


def test_rotate_root_rollback_keeps_old(mount: Mount, pg_cluster: Cluster) -> None:
    configure(mount, pg_cluster)
    # A rotation that died before ALTER ROLE ran: the old password stays.
    put_wal(
        mount.storage,
        "database-rotate-root",
        {"name": "pg", "new_password": "never-applied-1"},
    )

    mount.request(Operation.ROLLBACK, "", {"immediate": True})

    stored = load_config(mount.storage, "pg")
    assert stored is not None and stored.password == pg_cluster.password
    assert mount.storage.list("wal/") == []


def test_initialize_finishes_cut_rotation(mount: Mount, pg_cluster: Cluster) -> None:
    """A rotation killed between ALTER ROLE and the save is completed at start-up."""
    with psycopg.connect(**pg_cluster.conninfo(), autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS cut_admin")
        conn.execute("CREATE ROLE cut_admin SUPERUSER LOGIN PASSWORD 'before-cut-1'")
    configure(mount, pg_cluster, username="cut_admin", password="before-cut-1")
    add_role(mount)
    # The state a SIGKILL leaves: the WAL entry, and the server's new password.
    put_wal(
        mount.storage,
        "database-rotate-root",
        {"name": "pg", "new_password": "after-cut-1"},
    )
    put_wal(mount.storage, "other-kind", {"kept": True})
    with psycopg.connect(**pg_cluster.conninfo(), autocommit=True) as conn:
        conn.execute("ALTER ROLE cut_admin PASSWORD 'after-cut-1'")
    mount.backend.invalidate("database/config/pg")

    mount.backend.initialize(mount.storage)

    stored = load_config(mount.storage, "pg")
    assert stored is not None
    assert stored.password == "after-cut-1"
    assert len(mount.storage.list("wal/")) == 1
    secret = mount.creds("demo-readonly", "dev").secret
    assert secret is not None
    mount.revoke(secret)


def test_initialize_keeps_unapplied_rotation(mount: Mount, pg_cluster: Cluster) -> None:
    configure(mount, pg_cluster)
    # A rotation killed before ALTER ROLE ran: the stored password stays.
    put_wal(
        mount.storage,
        "database-rotate-root",
        {"name": "pg", "new_password": "never-applied-2"},
    )

    mount.backend.initialize(mount.storage)

    stored = load_config(mount.storage, "pg")
    assert stored is not None
    assert stored.password == pg_cluster.password
    assert mount.storage.list("wal/") == []


def test_role_update_with_null_clears(mount: Mount, pg_cluster: Cluster) -> None:
    configure(mount, pg_cluster)
    add_role(mount, max_ttl=600, renew_statements=["SELECT 1"])
    # Terraform sends null for an optional attribute the user removed.
    mount.request(
        Operation.UPDATE,
        "database/roles/demo-readonly",
        {"allowed_agents": None, "renew_statements": None, "max_ttl": None},
    )

    response = mount.read("database/roles/demo-readonly")

    assert response is not None
    assert response.data["allowed_agents"] == []
    assert response.data["renew_statements"] == []
    # A null duration counts as absent, as in Vault: the stored value stays.
    assert response.data["max_ttl"] == 600
    assert response.data["creation_statements"] == [READONLY]


def test_config_update_with_null_clears(mount: Mount, pg_cluster: Cluster) -> None:
    configure(mount, pg_cluster, max_open_connections=2, owner_role="postgres")

    mount.request(
        Operation.UPDATE,
        "database/config/pg",
        {"allowed_roles": None, "owner_role": None, "max_open_connections": None},
    )

    response = mount.read("database/config/pg")
    assert response is not None
    assert response.data["allowed_roles"] == []
    details = response.data["connection_details"]
    assert details["owner_role"] == ""
    # 0, and so null, means the default of 4, as in Vault's SQL plugins.
    assert details["max_open_connections"] == 4
    assert details["username"] == "postgres"


def config_details(mount: Mount) -> dict[str, Any]:
    response = mount.read("database/config/pg")
    assert response is not None
    details: dict[str, Any] = response.data["connection_details"]
    return details


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"max_idle_connections": -5}, "invalid max_idle_connections -5: expected 0"),
        ({"max_open_connections": -1}, "invalid max_open_connections -1: expected 1"),
        ({"max_connection_lifetime": -5}, "-5 for field 'max_connection_lifetime'"),
        ({"max_connection_lifetime": "-5s"}, "'-5s' for field 'max_connection_lif"),
    ],
)
def test_negative_pool_limit_rejected(
    mount: Mount, pg_cluster: Cluster, fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(BadRequestError, match=message):
        configure(mount, pg_cluster, **fields)

    assert mount.read("database/config/pg") is None


def test_idle_above_open_accepted(mount: Mount, pg_cluster: Cluster) -> None:
    # Vault caps max_idle_connections at max_open_connections when it
    # connects, and returns the written value on read.
    configure(mount, pg_cluster, max_open_connections=2, max_idle_connections=10)
    add_role(mount)

    secret = mount.creds("demo-readonly", "dev").secret

    details = config_details(mount)
    assert details["max_open_connections"] == 2
    assert details["max_idle_connections"] == 10
    assert secret is not None
    mount.revoke(secret)


@pytest.mark.parametrize(
    ("template", "offset"),
    [("{{bad", 0), ("x{{", 1), ("v-{{.RoleName}}-{{random 4", 16)],
)
def test_unclosed_username_template_rejected(
    mount: Mount, pg_cluster: Cluster, template: str, offset: int
) -> None:
    with pytest.raises(BadRequestError) as raised:
        configure(mount, pg_cluster, username_template=template)

    message = str(raised.value)
    assert f"invalid username_template {template!r}" in message
    assert f"unclosed action at offset {offset}" in message
    assert mount.read("database/config/pg") is None


def test_closing_braces_are_template_text(mount: Mount, pg_cluster: Cluster) -> None:
    # Go's text/template reads a }} outside an action as text.
    configure(mount, pg_cluster, username_template="}}x-{{.RoleName}}-{{random 8}}")
    add_role(mount)

    response = mount.creds("demo-readonly", "dev")

    assert response.data["username"].startswith("--x-demo-readonly-")
    assert response.secret is not None
    mount.revoke(response.secret)


SCRAM = {"password_authentication": "scram-sha-256"}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"scram_iterations": 1}, "scram_iterations 1 needs password_authentication"),
        ({**SCRAM, "scram_iterations": -1}, "invalid scram_iterations -1: expected 1"),
        ({**SCRAM, "scram_iterations": 2**31}, "invalid scram_iterations 2147483648"),
        (
            {**SCRAM, "scram_iterations": 1000, "password_policy": "short"},
            "scram_iterations 1000 is below 4096 with password_policy 'short'",
        ),
    ],
)
def test_unusable_scram_iterations_rejected(
    mount: Mount, pg_cluster: Cluster, fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(BadRequestError, match=message):
        configure(mount, pg_cluster, **fields)

    assert mount.read("database/config/pg") is None


def test_scram_iterations_reset_to_default(mount: Mount, pg_cluster: Cluster) -> None:
    configure(mount, pg_cluster, **SCRAM, scram_iterations=1)
    assert config_details(mount)["scram_iterations"] == 1
    response = mount.read("database/config/pg")
    assert response is not None
    assert response.data["scram_iterations"] == 1
    with pytest.raises(BadRequestError, match="needs password_authentication"):
        mount.request(
            Operation.UPDATE,
            "database/config/pg",
            {"password_authentication": "password"},
        )

    # JSON null, like 0, means the default, as for Vault's integer fields.
    mount.request(Operation.UPDATE, "database/config/pg", {"scram_iterations": None})

    assert config_details(mount)["scram_iterations"] == 4096
    mount.request(
        Operation.UPDATE, "database/config/pg", {"password_authentication": "password"}
    )
    assert config_details(mount)["password_authentication"] == "password"


@pytest.mark.parametrize("value", [None, ""])
def test_empty_password_authentication_is_password(
    mount: Mount, pg_cluster: Cluster, value: str | None
) -> None:
    # Vault's PostgreSQL plugin reads an empty password_authentication as
    # password; Terraform sends null for the attribute left unset.
    configure(mount, pg_cluster, password_authentication="scram-sha-256")
    mount.request(
        Operation.UPDATE, "database/config/pg", {"password_authentication": value}
    )
    add_role(mount)

    response = mount.creds("demo-readonly", "dev")

    assert config_details(mount)["password_authentication"] == "password"
    # The server hashed the plaintext with its own fresh salt.
    verifier = stored_password(pg_cluster, response.data["username"])
    assert verifier.startswith("SCRAM-SHA-256$")
    with login(pg_cluster, response.data) as session:
        assert session.execute("SELECT 1").fetchone() == (1,)
    assert response.secret is not None
    mount.revoke(response.secret)


@pytest.mark.parametrize(
    ("field", "statement", "message"),
    [
        (
            "creation_statements",
            'CREATE ROLE "{{nope}}"',
            "unknown placeholder {{nope}} in creation_statements: the known "
            "placeholders are {{name}}, {{username}}, {{password}}, {{expiration}}",
        ),
        (
            "creation_statements",
            """CREATE ROLE "{{name}}" LOGIN PASSWORD '{{pasword}}'""",
            "unknown placeholder {{pasword}} in creation_statements",
        ),
        (
            "revocation_statements",
            'DROP ROLE "{{ user }}"',
            "unknown placeholder {{ user }} in revocation_statements: the known "
            "placeholders are {{name}}, {{username}}, {{password}}, {{expiration}}; "
            "revocation_statements can use {{name}}, {{username}}",
        ),
        (
            "revocation_statements",
            "ALTER ROLE {{name}} PASSWORD {{password}}",
            "placeholder {{password}} has no value in revocation_statements",
        ),
        (
            "rollback_statements",
            "DO $$ BEGIN EXECUTE 'DROP ROLE {{.Name}}'; END $$",
            "unknown placeholder {{.Name}} in rollback_statements",
        ),
        (
            "renew_statements",
            "ALTER ROLE {{name}} VALID UNTIL {{expiry}}",
            "unknown placeholder {{expiry}} in renew_statements",
        ),
    ],
)
def test_role_placeholder_rejected(
    mount: Mount, field: str, statement: str, message: str
) -> None:
    fields = {"db_name": "pg", "creation_statements": READONLY, field: [statement]}

    with pytest.raises(BadRequestError) as raised:
        mount.write("database/roles/r", **fields)

    assert message in str(raised.value)
    assert mount.read("database/roles/r") is None


def test_braces_that_are_not_placeholders(mount: Mount, pg_cluster: Cluster) -> None:
    # Array literals and a JSON value in quotes and in a dollar-quoted body:
    # none has the form {{word}}, so none is a placeholder.
    statements = [
        READONLY,
        "SELECT '{{1,2},{3,4}}'::int[], '{{a,b},{c,d}}'::text[]",
        """DO $$ BEGIN PERFORM '{"k": {"v": "{{}}"}}'::jsonb; END $$""",
    ]
    configure(mount, pg_cluster)
    add_role(mount, creation_statements=statements)

    response = mount.creds("demo-readonly", "dev")

    assert response.secret is not None
    mount.revoke(response.secret)


def test_root_rotation_placeholder_rejected(mount: Mount, pg_cluster: Cluster) -> None:
    statement = "ALTER ROLE {{name}} VALID UNTIL {{expiration}}"

    with pytest.raises(BadRequestError) as raised:
        configure(mount, pg_cluster, root_rotation_statements=[statement])

    assert "invalid placeholder {{expiration}} in root_rotation_statements" in str(
        raised.value
    )
    assert mount.read("database/config/pg") is None


@pytest.fixture(scope="module")
def pki() -> Pki:
    return new_pki()


def test_tls_fields_stored_when_valid(
    mount: Mount, pg_cluster: Cluster, pki: Pki
) -> None:
    configure(
        mount,
        pg_cluster,
        verify_connection=False,
        tls_ca=pki.ca + pki.other_ca,
        tls_certificate=pki.client_cert,
        private_key=pki.client_key,
    )

    details = config_details(mount)
    assert details["tls_ca"] == pki.ca + pki.other_ca
    assert details["tls_certificate"] == pki.client_cert
    assert "private_key" not in details


def test_tls_ca_garbage_rejected(mount: Mount, pg_cluster: Cluster) -> None:
    with pytest.raises(BadRequestError, match="invalid tls_ca 'garbage': expected"):
        configure(mount, pg_cluster, verify_connection=False, tls_ca="garbage")

    assert mount.read("database/config/pg") is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"private_key": "key"}, "missing tls_certificate: private_key is set"),
        ({"tls_certificate": "cert"}, "missing private_key: tls_certificate is set"),
        (
            {"tls_certificate": "garbage", "private_key": "key"},
            "invalid tls_certificate 'garbage': expected one or more PEM",
        ),
        (
            {"tls_certificate": "key", "private_key": "key"},
            "invalid tls_certificate starting '-----BEGIN PRIVATE KEY-----'",
        ),
        ({"tls_certificate": "cert", "private_key": "cert"}, "expected an unencrypted"),
        ({"tls_certificate": "cert", "private_key": "other"}, "not the key of the"),
        ({"tls_certificate": "cert", "private_key": "locked"}, "the key is encrypted"),
    ],
)
def test_tls_client_pair_rejected(
    mount: Mount,
    pg_cluster: Cluster,
    pki: Pki,
    fields: dict[str, str],
    message: str,
) -> None:
    pem = {
        "cert": pki.client_cert,
        "key": pki.client_key,
        "other": pki.server_key,
        "locked": encrypted(pki.client_key),
        "garbage": "garbage",
    }
    values = {name: pem[value] for name, value in fields.items()}

    with pytest.raises(BadRequestError, match=message) as raised:
        configure(mount, pg_cluster, verify_connection=False, **values)

    for key in (pki.client_key, pki.server_key):
        assert key_body(key) not in str(raised.value)
    assert mount.read("database/config/pg") is None


def encrypted(key_pem: str) -> str:
    key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"key-password-1"),
    ).decode()
