"""The scram_iterations connection field: accepted values, mints and rotate-root."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from plugin.database.config import load_config
from plugin.logical import BadRequestError, Operation
from tests.support.database import FakeSystemView, Mount, configure, new_mount
from tests.support.postgres import Cluster, connect, stored_password
from tests.test_database_creds import add_role, login

SCRAM = {"password_authentication": "scram-sha-256"}


def stored_fields(mount: Mount) -> tuple[str, int, str]:
    config = load_config(mount.storage, "pg")
    assert config is not None
    return (
        config.password_authentication,
        config.scram_iterations,
        config.password_policy,
    )


@pytest.fixture
def policy_mount() -> Iterator[Mount]:
    """A mount whose Vault has the password policy `short`."""
    system = FakeSystemView()
    system.password_policies["short"] = lambda: "Ab-1"
    result = new_mount(system)
    try:
        yield result
    finally:
        result.backend.cleanup()


@pytest.mark.parametrize(
    ("update", "message"),
    [
        (
            {"scram_iterations": "abc"},
            "invalid value 'abc' for field 'scram_iterations'",
        ),
        ({"scram_iterations": 1.5}, "invalid value 1.5 for field 'scram_iterations'"),
        ({"scram_iterations": True}, "invalid value True for field 'scram_iterations'"),
        (
            {"scram_iterations": [1]},
            r"invalid value \[1\] for field 'scram_iterations'",
        ),
        ({"scram_iterations": -1}, "invalid scram_iterations -1: expected 1 to 100000"),
        (
            {"scram_iterations": 100_001},
            "invalid scram_iterations 100001: expected 1 to 100000",
        ),
        (
            {"scram_iterations": 2**31 - 1},
            "invalid scram_iterations 2147483647: expected 1 to 100000",
        ),
        # Inside int64 but above the plugin's maximum: the config's own check.
        (
            {"scram_iterations": 2**63 - 1},
            r"invalid scram_iterations 92233720\.\.\. \(19 digits\): expected 1",
        ),
        (
            {"scram_iterations": -(2**63)},
            r"invalid scram_iterations -9223372\.\.\. \(19 digits\): expected 1",
        ),
        # Outside int64: the field parser rejects them first.
        (
            {"scram_iterations": 2**63},
            "invalid value 9223372036854775808 for field 'scram_iterations': "
            "expected a 64-bit integer, from -9223372036854775808 to "
            "9223372036854775807",
        ),
        (
            {"scram_iterations": 1e300},
            r"invalid value 1e\+300 for field 'scram_iterations': expected a "
            "64-bit integer",
        ),
        pytest.param(
            {"scram_iterations": -(10**400)},
            r"invalid value -10000000000\d*\.\.\. for field 'scram_iterations'",
            id="401-digits",
        ),
        (
            {"password_authentication": "password"},
            "scram_iterations 1 needs password_authentication=scram-sha-256",
        ),
        (
            {"password_authentication": None},
            "scram_iterations 1 needs password_authentication=scram-sha-256",
        ),
        (
            {"password_policy": "short", "verify_connection": False},
            "scram_iterations 1 is below 4096 with password_policy 'short'",
        ),
    ],
)
def test_bad_update_keeps_stored_config(
    policy_mount: Mount, pg_cluster: Cluster, update: dict[str, Any], message: str
) -> None:
    configure(policy_mount, pg_cluster, **SCRAM, scram_iterations=1)

    with pytest.raises(BadRequestError, match=message) as raised:
        policy_mount.request(Operation.UPDATE, "database/config/pg", update)

    assert len(str(raised.value)) < 400
    assert stored_fields(policy_mount) == ("scram-sha-256", 1, "")


def test_policy_with_enough_rounds_accepted(
    policy_mount: Mount, pg_cluster: Cluster
) -> None:
    configure(policy_mount, pg_cluster, **SCRAM, scram_iterations=1)

    policy_mount.request(
        Operation.UPDATE,
        "database/config/pg",
        {"password_policy": "short", "scram_iterations": 4096},
    )

    assert stored_fields(policy_mount) == ("scram-sha-256", 4096, "short")


def test_max_rounds_creds_login_renew_revoke(mount: Mount, pg_cluster: Cluster) -> None:
    configure(mount, pg_cluster, **SCRAM, scram_iterations=100_000)
    add_role(mount)

    response = mount.creds("demo-readonly", "dev")
    username = response.data["username"]

    assert stored_password(pg_cluster, username).startswith("SCRAM-SHA-256$100000:")
    with login(pg_cluster, response.data) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (username,)
    assert response.secret is not None
    renewed = mount.renew(response.secret)
    assert renewed is not None and renewed.secret is not None
    assert renewed.secret.lease.ttl > 0
    mount.revoke(response.secret)
    with connect(pg_cluster) as conn:
        row = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (username,))
        assert row.fetchone() is None


def test_rotate_root_keeps_default_rounds(mount: Mount, pg_cluster: Cluster) -> None:
    with connect(pg_cluster) as conn:
        conn.execute("DROP ROLE IF EXISTS scram_admin")
        conn.execute("CREATE ROLE scram_admin SUPERUSER LOGIN PASSWORD 'first-pw-1'")
    configure(
        mount,
        pg_cluster,
        username="scram_admin",
        password="first-pw-1",
        **SCRAM,
        scram_iterations=1,
    )

    mount.write("database/rotate-root/pg")

    config = load_config(mount.storage, "pg")
    assert config is not None
    assert stored_password(pg_cluster, "scram_admin").startswith("SCRAM-SHA-256$4096:")
    with connect(pg_cluster, user="scram_admin", password=config.password) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("scram_admin",)
    with pytest.raises(psycopg.OperationalError, match="password authentication"):
        connect(pg_cluster, user="scram_admin", password="first-pw-1").close()
    read = mount.read("database/config/pg")
    assert read is not None
    assert read.data["connection_details"]["scram_iterations"] == 1
    assert config.password not in str(read.data)
    add_role(mount)
    response = mount.creds("demo-readonly", "dev")
    assert stored_password(pg_cluster, response.data["username"]).startswith(
        "SCRAM-SHA-256$1:"
    )
    assert response.secret is not None
    mount.revoke(response.secret)
