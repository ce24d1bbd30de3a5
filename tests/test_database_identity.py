"""Creds reads of an entity whose alias changed since its previous read.

The plugin fetches the caller's entity at each creds read: an operator may
rename an alias, remove it or disable the entity between two calls of the
same token, and each login updates the alias metadata. These tests change
the entity between two reads and check what was created.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from psycopg import sql

from plugin.framework import list_wal
from plugin.logical import Entity, EntityAlias, PermissionDeniedError, Response
from tests.support.database import JWT_ACCESSOR, Mount, configure
from tests.support.postgres import Cluster, connect, role_comment
from tests.test_database_creds import add_role

ENTITY = "entity-dev"


def set_alias(mount: Mount, name: str, *, disabled: bool = False, **meta: str) -> None:
    alias = EntityAlias(name, JWT_ACCESSOR, "jwt", meta)
    mount.system.entities[ENTITY] = Entity(ENTITY, "dev", (alias,), disabled=disabled)


def read_creds(mount: Mount) -> Response:
    response = mount.read(
        "database/creds/demo-readonly",
        entity_id=ENTITY,
        client_token_accessor="accessor-second",
    )
    assert response is not None
    mount.wait_live(response)
    return response


def generated_users(cluster: Cluster) -> set[str]:
    with connect(cluster) as conn:
        rows = conn.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE 'v-%'")
        return {row[0] for row in rows}


@dataclass(frozen=True)
class FirstMint:
    username: str  # the user minted for `dev`
    before: set[str]  # the generated users that existed before it

    def new_users(self, cluster: Cluster) -> set[str]:
        return generated_users(cluster) - self.before


@pytest.fixture
def first(mount: Mount, pg_cluster: Cluster) -> Iterator[FirstMint]:
    """Configure the mount and mint once as `dev`, then drop the users made."""
    before = generated_users(pg_cluster)
    configure(mount, pg_cluster)
    add_role(mount, allowed_agents="dev*")
    response = mount.creds("demo-readonly", "dev")
    minted = FirstMint(response.data["username"], before)
    yield minted
    with connect(pg_cluster) as conn:
        for name in minted.new_users(pg_cluster):
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def test_renamed_alias_gets_new_name(
    mount: Mount, pg_cluster: Cluster, first: FirstMint
) -> None:
    set_alias(mount, "dev-two")

    second = read_creds(mount)

    assert second.data["username"].startswith("v-dev-two-demo-readonly-")
    assert first.new_users(pg_cluster) == {first.username, second.data["username"]}
    assert list_wal(mount.storage) == []
    assert role_comment(pg_cluster, second.data["username"])["agent"] == "dev-two"


def test_alias_renamed_out_denied(
    mount: Mount, pg_cluster: Cluster, first: FirstMint
) -> None:
    set_alias(mount, "intruder")

    with pytest.raises(PermissionDeniedError, match="'intruder' is not in allowed"):
        read_creds(mount)

    assert first.new_users(pg_cluster) == {first.username}
    assert list_wal(mount.storage) == []


def test_disabled_entity_denied(
    mount: Mount, pg_cluster: Cluster, first: FirstMint
) -> None:
    set_alias(mount, "dev", disabled=True)

    with pytest.raises(PermissionDeniedError, match=f"entity {ENTITY} is disabled"):
        read_creds(mount)

    assert first.new_users(pg_cluster) == {first.username}
    assert list_wal(mount.storage) == []


def test_removed_alias_denied(
    mount: Mount, pg_cluster: Cluster, first: FirstMint
) -> None:
    mount.system.entities[ENTITY] = Entity(ENTITY, "dev", ())

    with pytest.raises(PermissionDeniedError, match="has no alias on the JWT"):
        read_creds(mount)

    assert first.new_users(pg_cluster) == {first.username}
    # The next read of the entity is checked before anything is created.
    with pytest.raises(PermissionDeniedError, match="has no alias on the JWT"):
        read_creds(mount)


def test_comment_has_latest_metadata(
    mount: Mount, pg_cluster: Cluster, first: FirstMint
) -> None:
    set_alias(mount, "dev", tool="psql", call_id="call-2")

    second = read_creds(mount)

    comment = role_comment(pg_cluster, second.data["username"])
    assert comment["alias_tool"] == "psql"
    assert comment["alias_call_id"] == "call-2"
    assert comment["token_accessor"] == "accessor-second"
    assert role_comment(pg_cluster, first.username)["alias_call_id"] == ""
