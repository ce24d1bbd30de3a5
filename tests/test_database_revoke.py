"""Revocation edge cases: owned objects, open sessions, a stopped server, orphans."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from psycopg import sql

from plugin.database.errors import DatabaseUnavailableError
from plugin.database.postgres import COMMENT_MARKER
from plugin.framework import InMemoryStorage, put_wal
from plugin.logical import BadRequestError, LogicalError, Operation
from tests.support.database import Mount, configure, new_mount
from tests.support.postgres import Cluster, connect, start_cluster
from tests.test_database_creds import READONLY, add_role, login, role_exists

APP_ROLE = (
    """CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' """
    """VALID UNTIL '{{expiration}}';
    GRANT USAGE, CREATE ON SCHEMA app TO "{{name}}";
    GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA app TO "{{name}}";
    GRANT USAGE ON ALL SEQUENCES IN SCHEMA app TO "{{name}}";"""
)


def prepare_app_schema(cluster: Cluster) -> None:
    with connect(cluster) as conn:
        conn.execute("DROP SCHEMA IF EXISTS app CASCADE")
        conn.execute("DROP ROLE IF EXISTS app_owner")
        conn.execute("CREATE ROLE app_owner NOLOGIN")
        conn.execute("CREATE SCHEMA app AUTHORIZATION app_owner")
        conn.execute("CREATE TABLE app.t (id serial PRIMARY KEY, v text)")
        conn.execute("ALTER TABLE app.t OWNER TO app_owner")


def owner_of(cluster: Cluster, table: str) -> Any:
    with connect(cluster) as conn:
        row = conn.execute(
            "SELECT tableowner FROM pg_tables WHERE schemaname = 'app' "
            "AND tablename = %s",
            (table,),
        ).fetchone()
    return None if row is None else row[0]


def test_revoke_reassigns_owned_objects(mount: Mount, pg_cluster: Cluster) -> None:
    prepare_app_schema(pg_cluster)
    configure(mount, pg_cluster, owner_role="app_owner")
    add_role(mount, "app-writer", creation_statements=APP_ROLE)
    response = mount.creds("app-writer", "dev")
    session = login(pg_cluster, response.data)
    session.execute("INSERT INTO app.t (v) VALUES ('x')")
    session.execute("CREATE TABLE app.scratch (n int)")
    assert owner_of(pg_cluster, "scratch") == response.data["username"]

    assert response.secret is not None
    mount.revoke(response.secret)

    assert not role_exists(pg_cluster, response.data["username"])
    assert owner_of(pg_cluster, "scratch") == "app_owner"
    with pytest.raises(psycopg.OperationalError):
        session.execute("SELECT 1")
    session.close()


def create_generated_role(cluster: Cluster, username: str, db_name: str) -> None:
    """Create a role with the COMMENT the plugin writes on the roles it creates."""
    label = COMMENT_MARKER + json.dumps({"db": db_name, "role": "demo-readonly"})
    with connect(cluster) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(username)))
        conn.execute(
            sql.SQL("COMMENT ON ROLE {} IS {}").format(
                sql.Identifier(username), sql.Literal(label)
            )
        )


def test_rollback_drops_orphan(mount: Mount, pg_cluster: Cluster) -> None:
    configure(mount, pg_cluster)
    create_generated_role(pg_cluster, "v-dev-orphan-1", "pg")
    put_wal(
        mount.storage,
        "database-creds",
        {"db_name": "pg", "username": "v-dev-orphan-1", "rollback_statements": []},
    )

    mount.request(Operation.ROLLBACK, "", {"immediate": True})

    assert not role_exists(pg_cluster, "v-dev-orphan-1")
    assert mount.storage.list("wal/") == []


@pytest.mark.parametrize(
    "comment",
    [None, "", "a role of the application", 'agent-bridge {"db": "other"}'],
)
def test_rollback_leaves_foreign_role(
    mount: Mount,
    pg_cluster: Cluster,
    comment: str | None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    configure(mount, pg_cluster)
    with connect(pg_cluster) as conn:
        conn.execute('DROP ROLE IF EXISTS "v-dev-foreign-1"')
        conn.execute('CREATE ROLE "v-dev-foreign-1" LOGIN')
        conn.execute(
            sql.SQL('COMMENT ON ROLE "v-dev-foreign-1" IS {}').format(
                sql.Literal(comment)
            )
        )
    put_wal(
        mount.storage,
        "database-creds",
        {"db_name": "pg", "username": "v-dev-foreign-1", "rollback_statements": []},
    )

    mount.request(Operation.ROLLBACK, "", {"immediate": True})

    assert role_exists(pg_cluster, "v-dev-foreign-1")
    assert mount.storage.list("wal/") == []
    left = [r for r in caplog.records if "did not create" in r.getMessage()]
    assert len(left) == 1
    assert "username=v-dev-foreign-1" in left[0].getMessage()
    with connect(pg_cluster) as conn:
        conn.execute('DROP ROLE "v-dev-foreign-1"')


def test_rollback_waits_for_min_age(mount: Mount, pg_cluster: Cluster) -> None:
    configure(mount, pg_cluster)
    create_generated_role(pg_cluster, "v-dev-young-1", "pg")
    put_wal(
        mount.storage, "database-creds", {"db_name": "pg", "username": "v-dev-young-1"}
    )

    mount.request(Operation.ROLLBACK, "")

    assert role_exists(pg_cluster, "v-dev-young-1")
    mount.request(Operation.ROLLBACK, "", {"immediate": True})
    assert not role_exists(pg_cluster, "v-dev-young-1")


def test_tidy_drops_unleased_roles(mount: Mount, pg_cluster: Cluster) -> None:
    configure(mount, pg_cluster)
    add_role(mount)
    kept = mount.creds("demo-readonly", "dev")
    orphan = mount.creds("demo-readonly", "dev")
    # Losing the live record stands for a lease Vault never registered.
    mount.storage.delete(f"database/live/pg/{orphan.data['username']}")

    response = mount.write("database/tidy")

    assert response is not None
    assert response.data["dropped"]["pg"] == [orphan.data["username"]]
    assert role_exists(pg_cluster, kept.data["username"])
    assert not role_exists(pg_cluster, orphan.data["username"])
    assert kept.secret is not None
    mount.revoke(kept.secret)


def set_lapsed(cluster: Cluster, username: str) -> None:
    """Move the user's VALID UNTIL far into the past, as the admin."""
    with connect(cluster) as conn:
        conn.execute(
            psycopg.sql.SQL("ALTER ROLE {} VALID UNTIL '2000-01-01'").format(
                psycopg.sql.Identifier(username)
            )
        )


def test_tidy_drops_lapsed_roles(mount: Mount, pg_cluster: Cluster) -> None:
    """A user past its VALID UNTIL is dropped even while its record is live."""
    configure(mount, pg_cluster)
    add_role(mount)
    leased = mount.creds("demo-readonly", "dev")
    lapsed = mount.creds("demo-readonly", "dev")
    set_lapsed(pg_cluster, lapsed.data["username"])

    response = mount.write("database/tidy")

    assert response is not None
    assert response.data["dropped"]["pg"] == [lapsed.data["username"]]
    assert role_exists(pg_cluster, leased.data["username"])
    assert not role_exists(pg_cluster, lapsed.data["username"])
    assert leased.secret is not None
    mount.revoke(leased.secret)


def test_periodic_sweep_drops_only_lapsed(mount: Mount, pg_cluster: Cluster) -> None:
    """The periodic function drops lapsed users; unleased current ones wait for tidy."""
    configure(mount, pg_cluster)
    add_role(mount)
    lapsed = mount.creds("demo-readonly", "dev")
    unleased = mount.creds("demo-readonly", "dev")
    mount.storage.delete(f"database/live/pg/{unleased.data['username']}")
    set_lapsed(pg_cluster, lapsed.data["username"])

    mount.request(Operation.ROLLBACK, "")

    assert not role_exists(pg_cluster, lapsed.data["username"])
    assert role_exists(pg_cluster, unleased.data["username"])
    assert mount.storage.list("database/live/") == []
    assert unleased.secret is not None
    mount.revoke(unleased.secret)


def test_tidy_forgets_dropped_users(mount: Mount, pg_cluster: Cluster) -> None:
    """A record whose user was dropped by hand no longer blocks a config delete."""
    configure(mount, pg_cluster)
    add_role(mount)
    response = mount.creds("demo-readonly", "dev")
    with connect(pg_cluster) as conn:
        conn.execute(
            psycopg.sql.SQL("DROP ROLE {}").format(
                psycopg.sql.Identifier(response.data["username"])
            )
        )
    with pytest.raises(LogicalError, match="still has 1 live credentials"):
        mount.request(Operation.DELETE, "database/config/pg")

    tidied = mount.write("database/tidy")

    assert tidied is not None
    assert tidied.data["dropped"]["pg"] == []
    assert mount.storage.list("database/live/") == []
    mount.request(Operation.DELETE, "database/config/pg")


def test_tidy_rejects_unknown_config(mount: Mount, pg_cluster: Cluster) -> None:
    configure(mount, pg_cluster)

    with pytest.raises(
        BadRequestError, match="invalid value 'pgg' for field 'db_name'"
    ):
        mount.write("database/tidy", db_name="pgg")


class RevokeDuringTidy(InMemoryStorage):
    """Storage that runs `on_live_list` once, when tidy lists the live records."""

    on_live_list: Callable[[], object] | None = None

    def list_page(self, prefix: str, after: str, limit: int) -> list[str]:
        hook = self.on_live_list
        if hook is not None and prefix.startswith("database/live/"):
            self.on_live_list = None
            hook()
        return super().list_page(prefix, after, limit)


def test_tidy_omits_user_revoked_meanwhile(pg_cluster: Cluster) -> None:
    """A user revoked between tidy's listing and its drop is not reported."""
    storage = RevokeDuringTidy()
    mount = new_mount(storage=storage)
    configure(mount, pg_cluster)
    add_role(mount)
    response = mount.creds("demo-readonly", "dev")
    assert response.secret is not None
    secret = response.secret
    storage.on_live_list = lambda: mount.revoke(secret)

    tidied = mount.write("database/tidy")

    assert tidied is not None
    assert tidied.data["dropped"]["pg"] == []
    assert not role_exists(pg_cluster, response.data["username"])
    assert mount.storage.list("database/live/") == []
    mount.backend.cleanup()


def test_tidy_spanning_rotate_root_succeeds(pg_cluster: Cluster) -> None:
    """A rotate-root between tidy's listing and its drops changes nothing for it."""
    with connect(pg_cluster) as conn:
        conn.execute("DROP ROLE IF EXISTS tidy_admin")
        conn.execute("CREATE ROLE tidy_admin SUPERUSER LOGIN PASSWORD 'tidy-pw-1'")
    storage = RevokeDuringTidy()
    mount = new_mount(storage=storage)
    configure(mount, pg_cluster, username="tidy_admin", password="tidy-pw-1")
    create_generated_role(pg_cluster, "v-dev-rotated-1", "pg")
    storage.on_live_list = lambda: mount.write("database/rotate-root/pg")

    tidied = mount.write("database/tidy")

    assert tidied is not None
    assert tidied.data["dropped"]["pg"] == ["v-dev-rotated-1"]
    assert not role_exists(pg_cluster, "v-dev-rotated-1")
    again = mount.write("database/tidy")
    assert again is not None
    assert again.data["dropped"]["pg"] == []
    # The rotation did run: the first password no longer logs in.
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(
            **{**pg_cluster.conninfo(), "user": "tidy_admin", "password": "tidy-pw-1"}
        )
    mount.backend.cleanup()


@pytest.fixture
def own_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A cluster this test may stop and start without disturbing the others."""
    cluster = start_cluster(tmp_path_factory.mktemp("pg-down"))
    try:
        yield cluster
    finally:
        cluster.remove()


def test_revoke_retries_after_outage(own_cluster: Cluster) -> None:
    mount = new_mount()
    configure(mount, own_cluster)
    add_role(mount)
    response = mount.creds("demo-readonly", "dev")
    assert response.secret is not None

    own_cluster.stop()
    with pytest.raises(LogicalError, match="unable to connect") as failure:
        mount.revoke(response.secret)
    assert failure.value.kind.value == "internal"

    own_cluster.start()
    mount.revoke(response.secret)
    assert not role_exists(own_cluster, response.data["username"])
    mount.backend.cleanup()


def test_concurrent_mint_and_revoke(mount: Mount, pg_cluster: Cluster) -> None:
    configure(mount, pg_cluster, max_open_connections=3)
    add_role(mount)

    def cycle(_: int) -> str:
        response = mount.creds("demo-readonly", "dev")
        assert response.secret is not None
        mount.revoke(response.secret)
        return str(response.data["username"])

    with ThreadPoolExecutor(max_workers=8) as pool:
        names = list(pool.map(cycle, range(24)))

    assert len(set(names)) == 24
    assert not any(role_exists(pg_cluster, name) for name in names)
    assert mount.storage.list("database/live/") == []


def test_concurrent_grants_on_one_database(mount: Mount, pg_cluster: Cluster) -> None:
    # GRANT CONNECT ON DATABASE from concurrent mints, and DROP OWNED from
    # concurrent revokes, update the database's one catalog row; PostgreSQL
    # fails the loser with "tuple concurrently updated" unless it is retried.
    configure(mount, pg_cluster, max_open_connections=8)
    statements = [
        "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' "
        "VALID UNTIL '{{expiration}}';",
        'GRANT CONNECT ON DATABASE postgres TO "{{name}}";',
        'GRANT USAGE ON SCHEMA public TO "{{name}}";',
    ]
    add_role(mount, "granting", creation_statements=statements)

    def cycle(_: int) -> str:
        response = mount.creds("granting", "dev")
        assert response.secret is not None
        mount.revoke(response.secret)
        return str(response.data["username"])

    with ThreadPoolExecutor(max_workers=8) as pool:
        names = list(pool.map(cycle, range(40)))

    assert len(set(names)) == 40
    assert not any(role_exists(pg_cluster, name) for name in names)


def kill_backend_running(cluster: Cluster, text: str) -> None:
    """SIGKILL the server process whose query contains `text`, once it runs.

    A killed backend closes its socket without a message, so the client
    sees a lost connection with no SQLSTATE.
    """
    deadline = time.monotonic() + 10
    with connect(cluster) as conn:
        while True:
            row = conn.execute(
                "SELECT pid FROM pg_stat_activity "
                "WHERE query LIKE %s AND pid <> pg_backend_pid()",
                (f"%{text}%",),
            ).fetchone()
            if row is not None:
                break
            assert time.monotonic() < deadline, f"no backend runs {text!r}"
            time.sleep(0.05)
    os.kill(row[0], signal.SIGKILL)


def test_lost_connection_names_libpq_reason(own_cluster: Cluster) -> None:
    mount = new_mount()
    configure(mount, own_cluster)
    add_role(mount, creation_statements=[READONLY, "SELECT pg_sleep(60)"])
    entity_id = mount.system.add_agent("dev")

    with ThreadPoolExecutor(max_workers=1) as pool:
        minting = pool.submit(
            mount.read, "database/creds/demo-readonly", entity_id=entity_id
        )
        kill_backend_running(own_cluster, "pg_sleep(60)")
        with pytest.raises(DatabaseUnavailableError) as err:
            minting.result(timeout=30)
    mount.backend.cleanup()

    message = str(err.value)
    assert message.startswith("PostgreSQL unavailable: config 'pg': ")
    assert "OperationalError: consuming input failed: " in message
    assert "server closed the connection unexpectedly" in message
    assert message.endswith("(SQLSTATE none)")
    assert own_cluster.password not in message
