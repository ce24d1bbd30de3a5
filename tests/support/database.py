"""Fixtures for the database backend: the backend, a fake system view, requests."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from plugin.backend import new_backend
from plugin.framework import InMemoryStorage, get_wal, list_wal
from plugin.logical import (
    Backend,
    Entity,
    EntityAlias,
    Operation,
    PasswordPolicyError,
    Request,
    Response,
    Secret,
)
from tests.support.postgres import Cluster, start_cluster

JWT_ACCESSOR = "auth_jwt_0123abcd"
HOUR = 3600


@dataclass
class FakeSystemView:
    """The one faked seam: what Vault reports about the mount and entities."""

    default_ttl: int = 768 * HOUR
    max_ttl: int = 768 * HOUR
    entities: dict[str, Entity] = field(default_factory=dict)
    # Password policies by name, each a function that generates one password.
    password_policies: dict[str, Callable[[], str]] = field(default_factory=dict)

    def default_lease_ttl(self) -> int:
        return self.default_ttl

    def max_lease_ttl(self) -> int:
        return self.max_ttl

    def entity_info(self, entity_id: str) -> Entity | None:
        return self.entities.get(entity_id)

    def plugin_env_vault_version(self) -> str:
        return "2.7.2"

    def generate_password_from_policy(self, policy_name: str) -> str:
        generate = self.password_policies.get(policy_name)
        if generate is None:
            raise PasswordPolicyError(f"password policy {policy_name!r} not found")
        return generate()

    def add_agent(self, agent: str, **metadata: str) -> str:
        """Register an entity with a JWT alias named `agent`; return its id."""
        entity_id = f"entity-{agent}"
        alias = EntityAlias(agent, JWT_ACCESSOR, "jwt", metadata)
        self.entities[entity_id] = Entity(entity_id, f"entity_{agent}", (alias,))
        return entity_id


@dataclass
class Mount:
    """A backend with its storage, driven like Vault drives it."""

    backend: Backend
    storage: InMemoryStorage
    system: FakeSystemView

    def request(
        self,
        operation: Operation,
        path: str,
        data: dict[str, Any] | None = None,
        **extra: Any,
    ) -> Response | None:
        request = Request(operation, path, self.storage, data or {}, **extra)
        return self.backend.handle_request(request)

    def write(self, path: str, **data: Any) -> Response | None:
        return self.request(Operation.UPDATE, path, data)

    def read(self, path: str, **extra: Any) -> Response | None:
        return self.request(Operation.READ, path, **extra)

    def creds(self, role: str, agent: str) -> Response:
        entity_id = self.system.add_agent(agent)
        response = self.read(
            f"database/creds/{role}",
            entity_id=entity_id,
            display_name=f"jwt-{agent}",
            client_token_accessor=f"accessor-{agent}",
        )
        assert response is not None and response.secret is not None
        self.wait_live(response)
        return response

    def wait_live(self, response: Response) -> None:
        """Wait for what a mint does after its response: live record, WAL delete."""
        assert response.secret is not None
        internal = response.secret.internal_data
        key = f"database/live/{internal['db_name']}/{internal['username']}"
        deadline = time.monotonic() + 5
        while self.storage.get(key) is None or self._in_wal(internal["username"]):
            assert time.monotonic() < deadline, f"mint of {key} not completed"
            time.sleep(0.001)

    def _in_wal(self, username: str) -> bool:
        for entry_id in list_wal(self.storage):
            entry = get_wal(self.storage, entry_id)
            if entry is not None and entry.data.get("username") == username:
                return True
        return False

    def revoke(self, secret: Secret) -> Response | None:
        return self.request(Operation.REVOKE, "database/creds/x", secret=secret)

    def renew(self, secret: Secret) -> Response | None:
        return self.request(Operation.RENEW, "database/creds/x", secret=secret)


def new_mount(
    system: FakeSystemView | None = None, storage: InMemoryStorage | None = None
) -> Mount:
    system = system or FakeSystemView()
    backend = new_backend()
    backend.setup({}, system)
    storage = storage or InMemoryStorage()
    backend.initialize(storage)
    mount = Mount(backend, storage, system)
    mount.write("config/identity", jwt_mount_accessor=JWT_ACCESSOR)
    return mount


@pytest.fixture(scope="session")
def pg_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A PostgreSQL cluster for the whole session, removed at the end."""
    cluster = start_cluster(tmp_path_factory.mktemp("pg"))
    try:
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture
def mount() -> Iterator[Mount]:
    result = new_mount()
    try:
        yield result
    finally:
        result.backend.cleanup()


def configure(
    mount: Mount, cluster: Cluster, name: str = "pg", **overrides: Any
) -> None:
    """Write a connection config for the cluster's `postgres` database."""
    fields = {
        "plugin_name": "postgresql-database-plugin",
        "connection_url": (
            f"postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{cluster.port}/postgres"
        ),
        "username": "postgres",
        "password": cluster.password,
        "allowed_roles": "*",
    }
    mount.write(f"database/config/{name}", **{**fields, **overrides})
