"""The database API in the request shapes hvac and Terraform send."""

from __future__ import annotations

import psycopg
import pytest

from plugin.database.config import load_config
from plugin.database.errors import ConfigInUseError
from plugin.framework import put_wal
from plugin.logical import BadRequestError, Operation, PermissionDeniedError
from tests.support.database import Mount, configure
from tests.support.postgres import Cluster
from tests.test_database_creds import READONLY, add_role


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
