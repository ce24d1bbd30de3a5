"""The creds read's hot path: one round trip per step, and what keeps it safe.

A creds read sends its creation statements as one query, reuses pooled
connections without a `SELECT 1`, overlaps its calls to Vault on I/O
threads, writes its WAL entry while PostgreSQL runs the statements, and
writes its live record and deletes its WAL entry after the response. These tests pin the
behaviour each shortcut must keep, against a real PostgreSQL.
"""

from __future__ import annotations

import re
import string
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest

from plugin.bridge.storage import StorageError
from plugin.database import path_creds, postgres
from plugin.database.credentials import PASSWORD_ALPHABET, generate_password
from plugin.database.errors import DatabaseUnavailableError
from plugin.framework import InMemoryStorage, put_wal
from plugin.logical import BadRequestError, LogicalError, Operation, Request
from tests.support.database import FakeSystemView, Mount, configure, new_mount
from tests.support.postgres import Cluster, connect
from tests.test_database_creds import READONLY, add_role, login, role_exists


def fetch_one(cluster: Cluster, query: str, *params: Any) -> Any:
    with connect(cluster) as conn:
        return conn.execute(query.encode(), params).fetchone()


def test_password_alphabet_and_classes() -> None:
    passwords = {generate_password() for _ in range(200)}

    assert len(passwords) == 200
    for password in passwords:
        assert len(password) == 32
        assert set(password) <= set(PASSWORD_ALPHABET)
        assert set(password) & set(string.ascii_lowercase)
        assert set(password) & set(string.ascii_uppercase)
        assert set(password) & set(string.digits)
        assert "-" in password


def test_failed_statement_creates_nothing(mount: Mount, pg_cluster: Cluster) -> None:
    configure(mount, pg_cluster)
    broken = READONLY + ' GRANT SELECT ON public.no_such_table TO "{{name}}";'
    add_role(mount, creation_statements=broken)
    before = fetch_one(pg_cluster, "SELECT count(*) FROM pg_roles")

    with pytest.raises(LogicalError, match="no_such_table"):
        mount.creds("demo-readonly", "dev")

    assert fetch_one(pg_cluster, "SELECT count(*) FROM pg_roles") == before
    assert mount.storage.list("wal/") == []
    assert mount.storage.list("database/live/") == []


def test_taken_name_keeps_other_role(mount: Mount, pg_cluster: Cluster) -> None:
    """A mint whose generated name exists fails and leaves that role as it was."""
    configure(mount, pg_cluster, username_template="taken-{{.RoleName}}")
    add_role(mount)
    with connect(pg_cluster) as conn:
        conn.execute('DROP ROLE IF EXISTS "taken-demo-readonly"')
        conn.execute("CREATE ROLE \"taken-demo-readonly\" LOGIN PASSWORD 'kept'")

    with pytest.raises(LogicalError, match="already exists"):
        mount.creds("demo-readonly", "dev")

    query = "SELECT rolcanlogin FROM pg_roles WHERE rolname = 'taken-demo-readonly'"
    assert fetch_one(pg_cluster, query) == (True,)
    assert mount.storage.list("wal/") == []
    with connect(pg_cluster) as conn:
        conn.execute('DROP ROLE "taken-demo-readonly"')


@pytest.mark.parametrize("foreign", [True, False])
def test_failed_commit_rollback_checks_owner(
    mount: Mount,
    pg_cluster: Cluster,
    monkeypatch: pytest.MonkeyPatch,
    foreign: bool,
) -> None:
    """A mint whose COMMIT failed drops its own role, never another's."""
    configure(mount, pg_cluster, username_template="commit-{{.RoleName}}")
    add_role(mount)
    name = "commit-demo-readonly"
    with connect(pg_cluster) as conn:
        conn.execute(f'DROP ROLE IF EXISTS "{name}"')

    def create_then_lose_commit(
        conn: Any, statements: Any, values: Any, comment: Any, before_commit: Any
    ) -> None:
        if foreign:
            # The transaction did not commit, and someone else then took the name.
            with connect(pg_cluster) as other:
                other.execute(f'CREATE ROLE "{name}" LOGIN')
        else:
            # The COMMIT reached PostgreSQL, but its reply was lost.
            postgres.create_user(conn, statements, values, comment)
        before_commit()
        raise DatabaseUnavailableError("connection lost during COMMIT")

    monkeypatch.setattr(path_creds, "create_user", create_then_lose_commit)

    with pytest.raises(DatabaseUnavailableError, match="during COMMIT"):
        mount.creds("demo-readonly", "dev")

    assert role_exists(pg_cluster, name) is foreign
    assert mount.storage.list("wal/") == []
    assert mount.storage.list("database/live/") == []
    with connect(pg_cluster) as conn:
        conn.execute(f'DROP ROLE IF EXISTS "{name}"')


def test_repeated_name_keeps_first_lease(mount: Mount, pg_cluster: Cluster) -> None:
    """A template without randomness fails the second mint, not the first lease."""
    configure(mount, pg_cluster, username_template="fixed-{{.RoleName}}")
    add_role(mount)
    first = mount.creds("demo-readonly", "dev")

    with pytest.raises(LogicalError, match="already exists"):
        mount.creds("demo-readonly", "dev")

    with login(pg_cluster, first.data) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (
            "fixed-demo-readonly",
        )
    assert mount.storage.list("database/live/pg/") == ["fixed-demo-readonly"]
    assert mount.storage.list("wal/") == []
    assert first.secret is not None
    mount.revoke(first.secret)
    assert not role_exists(pg_cluster, "fixed-demo-readonly")


def test_trailing_comment_keeps_next_statement(
    mount: Mount, pg_cluster: Cluster
) -> None:
    configure(mount, pg_cluster)
    statements = [
        """CREATE ROLE "{{name}}" LOGIN PASSWORD '{{password}}' -- the user""",
        """ALTER ROLE "{{name}}" CONNECTION LIMIT 3 -- then its limit""",
    ]
    add_role(mount, creation_statements=statements)

    response = mount.creds("demo-readonly", "dev")

    query = "SELECT rolconnlimit FROM pg_roles WHERE rolname = %s"
    assert fetch_one(pg_cluster, query, response.data["username"]) == (3,)
    assert response.secret is not None
    mount.revoke(response.secret)


def test_pool_replaces_ended_connection(mount: Mount, pg_cluster: Cluster) -> None:
    configure(mount, pg_cluster)
    add_role(mount)
    first = mount.creds("demo-readonly", "dev")
    # Ends the pool's idle connection, as a server restart would.
    ended = fetch_one(
        pg_cluster,
        "SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity "
        "WHERE usename = 'postgres' AND pid <> pg_backend_pid() "
        "AND backend_type = 'client backend'",
    )
    assert ended is not None and ended[0] >= 1

    second = mount.creds("demo-readonly", "dev")

    for response in (first, second):
        with login(pg_cluster, response.data) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert response.secret is not None
        mount.revoke(response.secret)


def test_rollback_keeps_completed_mint(mount: Mount, pg_cluster: Cluster) -> None:
    configure(mount, pg_cluster)
    add_role(mount)
    response = mount.creds("demo-readonly", "dev")
    username = response.data["username"]
    # A WAL entry whose deferred delete was lost, next to the live record.
    put_wal(
        mount.storage,
        "database-creds",
        {"db_name": "pg", "username": username, "rollback_statements": []},
    )

    mount.request(Operation.ROLLBACK, "", {"immediate": True})

    assert role_exists(pg_cluster, username)
    assert mount.storage.list("wal/") == []
    assert response.secret is not None
    mount.revoke(response.secret)


def test_role_moved_to_other_config(mount: Mount, pg_cluster: Cluster) -> None:
    configure(mount, pg_cluster, name="first")
    configure(mount, pg_cluster, name="second", allowed_roles="")
    add_role(mount, db_name="first")
    first = mount.creds("demo-readonly", "dev")
    add_role(mount, db_name="second")

    # The config name guessed from the previous read is wrong now: the read
    # must use the role's new config, which does not allow the role.
    with pytest.raises(LogicalError, match="not in allowed_roles of config 'second'"):
        mount.creds("demo-readonly", "dev")

    assert first.secret is not None
    mount.revoke(first.secret)


class SlowLiveStorage(InMemoryStorage):
    """Storage whose writes of live records take 0.2 s, and may fail WAL writes."""

    fail_wal = False
    slow_wal = False

    def put(self, key: str, value: bytes) -> None:
        if key.startswith("database/live/") or (
            key.startswith("wal/") and self.slow_wal
        ):
            time.sleep(0.2)
        if key.startswith("wal/") and self.fail_wal:
            raise StorageError(f"storage put of {key!r} failed: test")
        super().put(key, value)


def slow_mount(cluster: Cluster, storage: SlowLiveStorage) -> tuple[Mount, str]:
    """Return a configured mount on `storage`, and the entity id of agent dev."""
    mount = new_mount(storage=storage)
    configure(mount, cluster)
    add_role(mount)
    return mount, mount.system.add_agent("dev")


def test_revoke_waits_for_deferred_live_record(pg_cluster: Cluster) -> None:
    """The live record is written after the response, never after the revoke."""
    mount, entity_id = slow_mount(pg_cluster, SlowLiveStorage())

    response = mount.read("database/creds/demo-readonly", entity_id=entity_id)
    assert response is not None and response.secret is not None
    assert mount.storage.list("database/live/") == []  # still being written
    mount.revoke(response.secret)

    assert not role_exists(pg_cluster, response.data["username"])
    assert mount.storage.list("database/live/") == []
    assert mount.storage.list("wal/") == []
    mount.backend.cleanup()


def test_failed_wal_write_creates_nothing(pg_cluster: Cluster) -> None:
    """The creation statements commit only once the WAL entry is stored."""
    storage = SlowLiveStorage()
    mount = new_mount(storage=storage)
    configure(mount, pg_cluster)
    add_role(mount)
    before = fetch_one(pg_cluster, "SELECT count(*) FROM pg_roles")
    storage.fail_wal = True

    with pytest.raises(LogicalError, match="storage put of 'wal/"):
        mount.creds("demo-readonly", "dev")

    assert fetch_one(pg_cluster, "SELECT count(*) FROM pg_roles") == before
    storage.fail_wal = False
    response = mount.creds("demo-readonly", "dev")  # the pooled connection works
    assert response.secret is not None
    mount.revoke(response.secret)
    mount.backend.cleanup()


def test_config_delete_waits_for_live_record(pg_cluster: Cluster) -> None:
    """A delete right after a mint counts the user whose record is being written."""
    mount, entity_id = slow_mount(pg_cluster, SlowLiveStorage())
    response = mount.read("database/creds/demo-readonly", entity_id=entity_id)
    assert response is not None and response.secret is not None

    with pytest.raises(BadRequestError, match="still has 1 live credentials"):
        mount.request(Operation.DELETE, "database/config/pg")

    mount.revoke(response.secret)
    mount.request(Operation.DELETE, "database/config/pg")
    assert mount.read("database/config/pg") is None
    mount.backend.cleanup()


def test_config_delete_waits_for_mint(pg_cluster: Cluster) -> None:
    """A delete during a mint waits for it, then counts its user."""
    storage = SlowLiveStorage()
    mount, entity_id = slow_mount(pg_cluster, storage)
    storage.slow_wal = True

    with ThreadPoolExecutor(1) as pool:
        minting = pool.submit(
            mount.read, "database/creds/demo-readonly", entity_id=entity_id
        )
        time.sleep(0.1)  # the mint is waiting for its WAL write
        with pytest.raises(BadRequestError, match="still has 1 live credentials"):
            mount.request(Operation.DELETE, "database/config/pg")
        response = minting.result(10)

    assert response is not None and response.secret is not None
    assert role_exists(pg_cluster, response.data["username"])
    mount.revoke(response.secret)
    mount.backend.cleanup()


def test_failed_grant_logs_no_password(mount: Mount, pg_cluster: Cluster) -> None:
    """PostgreSQL logs the failed query; the password is in another one."""
    configure(mount, pg_cluster)
    broken = READONLY + ' GRANT SELECT ON public.no_such_table_log TO "{{name}}";'
    add_role(mount, creation_statements=broken)
    log_path = pg_cluster.server.data_dir.parent / "server.log"
    start = log_path.stat().st_size

    with pytest.raises(LogicalError, match="no_such_table_log"):
        mount.creds("demo-readonly", "dev")

    logged = log_path.read_bytes()[start:].decode(errors="replace")
    assert "no_such_table_log" in logged
    assert "PASSWORD" not in logged.upper()


def test_unknown_role_reported_before_caller(mount: Mount) -> None:
    with pytest.raises(BadRequestError, match="unknown role 'missing'"):
        mount.read("database/creds/missing")


@dataclass
class CountingSystemView(FakeSystemView):
    """The fake system view, counting the mount TTL lookups."""

    ttl_lookups: int = 0

    def max_lease_ttl(self) -> int:
        self.ttl_lookups += 1
        return self.max_ttl


def test_mount_ttls_reused(pg_cluster: Cluster) -> None:
    system = CountingSystemView()
    mount = new_mount(system)
    configure(mount, pg_cluster)
    add_role(mount, default_ttl="5m")

    responses = [mount.creds("demo-readonly", "dev") for _ in range(3)]

    assert system.ttl_lookups == 1
    for response in responses:
        assert response.secret is not None
        assert response.secret.lease.ttl == 300
        mount.revoke(response.secret)
    mount.backend.cleanup()


def test_ttl_field_shortens_lease(mount: Mount, pg_cluster: Cluster) -> None:
    configure(mount, pg_cluster)
    add_role(mount, default_ttl="1h", max_ttl="2h")
    entity_id = mount.system.add_agent("dev")

    def read(ttl: str) -> int:
        request = Request(
            Operation.READ,
            "database/creds/demo-readonly",
            mount.storage,
            {"ttl": ttl},
            entity_id=entity_id,
        )
        response = mount.backend.handle_request(request)
        assert response is not None and response.secret is not None
        mount.revoke(response.secret)
        return response.secret.lease.ttl

    assert read("30s") == 30
    assert read("5h") == 7200
    assert read("0") == 3600
    with pytest.raises(BadRequestError, match=re.escape("'soon' for field 'ttl'")):
        read("soon")
