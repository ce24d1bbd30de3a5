"""The whole vault-config module with the real plugin and a real PostgreSQL.

The plugin is built once per module with scripts/build-plugin (about 10 s)
and installed into each test's OpenBao dev server. Each test's connection uses
its own superuser in the session's PostgreSQL cluster, so a
rotate-root here changes no password another test relies on.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from psycopg import sql

from devstack import attestor as devstack_attestor
from devstack import openbao, plugin, procs, tfapply
from devstack.tfapply_errors import ConfigError, TfApplyError
from devstack.tfapply_vault import VaultClient
from tests.support.postgres import Cluster, connect, stored_password
from tests.test_vault_config_apply import LOWER24, jwt_variables, login, sign
from tests.test_vault_config_plan import MODULE

ROOT = Path(__file__).resolve().parents[1]
CREATION = [
    """CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' """
    """VALID UNTIL '{{expiration}}';"""
]

pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <function Popen.__del__"
    ":pytest.PytestUnraisableExceptionWarning"
)


def plugin_version() -> str:
    """Return the version the built plugin reports: v + the project version."""
    with open(ROOT / "pyproject.toml", "rb") as file:
        return "v" + str(tomllib.load(file)["project"]["version"])


@pytest.fixture(scope="module")
def built_plugin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("plugin-build")
    result = subprocess.run(
        [str(ROOT / "scripts" / "build-plugin"), "--output-dir", str(output)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, f"scripts/build-plugin failed:\n{result.stderr}"
    return output / "agent-bridge-plugin"


@pytest.fixture
def admin(pg_cluster: Cluster) -> Iterator[tuple[str, str]]:
    """Create a superuser for one test's connection; return name and password."""
    name, password = f"vault_admin_{secrets.token_hex(4)}", secrets.token_urlsafe(16)
    statement = sql.SQL("CREATE ROLE {} WITH SUPERUSER LOGIN PASSWORD {}").format(
        sql.Identifier(name), sql.Literal(password)
    )
    with connect(pg_cluster) as conn:
        conn.execute(statement)
    try:
        yield name, password
    finally:
        with connect(pg_cluster) as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


@dataclass
class Stack:
    vault: VaultClient
    variables: dict[str, Any]
    key: ec.EllipticCurvePrivateKey


@pytest.fixture
def stack(
    tmp_path: Path, built_plugin: Path, pg_cluster: Cluster, admin: tuple[str, str]
) -> Iterator[Stack]:
    """Start OpenBao with the plugin installed; yield it with the variables."""
    server = openbao.start(tmp_path, procs.free_port_pair())
    try:
        shiv_root = tmp_path / "shiv"
        sha256 = plugin.install(built_plugin, server.plugin_dir, shiv_root)
        key = ec.generate_private_key(ec.SECP256R1())
        values = jwt_variables(
            key,
            plugin_sha256=sha256,
            plugin_command=plugin.PLUGIN_NAME,
            plugin_version=plugin_version(),
            plugin_env=[f"SHIV_ROOT={shiv_root}"],
            postgres={
                "host": "127.0.0.1",
                "port": pg_cluster.port,
                "database": "postgres",
                "username": admin[0],
                "sslmode": "disable",
            },
            postgres_password=admin[1],
            database_roles={"demo-readonly": {"creation_statements": CREATION}},
        )
        yield Stack(VaultClient(server.addr, server.root_token), values, key)
    finally:
        procs.stop("openbao", server.pid)


def mint(vault: VaultClient, key: Any, role: str = "demo-readonly") -> dict[str, Any]:
    """Log in as agent dev with a fresh JWT and read credentials of `role`."""
    token, _ = sign(key, "dev")
    agent = VaultClient(vault.addr, login(vault, "dev", token)["client_token"])
    response = agent.read(f"agent-creds/database/creds/{role}")
    assert response is not None
    return response


def role_exists(cluster: Cluster, username: str) -> bool:
    with connect(cluster) as conn:
        row = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (username,))
        return row.fetchone() is not None


def login_works(creds: dict[str, Any]) -> bool:
    with psycopg.connect(
        host=creds["host"],
        port=creds["port"],
        dbname=creds["database"],
        user=creds["username"],
        password=creds["password"],
    ) as conn:
        row = conn.execute("SELECT current_user").fetchone()
        return row == (creds["username"],)


def test_apply_configures_plugin_mount(stack: Stack) -> None:
    vault, variables = stack.vault, stack.variables

    outputs = tfapply.apply(MODULE, variables, vault.addr, vault.token)

    catalog = vault.read(
        "sys/plugins/catalog/secret/agent-bridge",
        query={"version": variables["plugin_version"]},
    )
    assert catalog is not None
    assert catalog["data"]["sha256"] == variables["plugin_sha256"]
    mount = vault.mount_table("mounts")["agent-creds/"]
    assert mount["type"] == "agent-bridge"
    assert mount["accessor"] == outputs["mount_accessor"]
    assert mount["config"]["max_lease_ttl"] == 3600
    identity = vault.read("agent-creds/config/identity")
    assert identity is not None
    assert identity["data"]["jwt_mount_accessor"] == outputs["jwt_accessor"]
    assert outputs["agent_policies"] == {"dev": "agent-dev"}


def test_apply_database_connection_and_role(stack: Stack, pg_cluster: Cluster) -> None:
    vault, variables = stack.vault, stack.variables

    tfapply.apply(MODULE, variables, vault.addr, vault.token)

    config = vault.read("agent-creds/database/config/postgres")
    assert config is not None
    assert config["data"]["plugin_name"] == "postgresql-database-plugin"
    assert config["data"]["allowed_roles"] == ["demo-readonly"]
    details = config["data"]["connection_details"]
    assert details["username"] == variables["postgres"]["username"]
    assert f"127.0.0.1:{pg_cluster.port}/postgres" in details["connection_url"]
    assert "password" not in details
    assert details["password_authentication"] == "scram-sha-256"
    assert details["scram_iterations"] == 1
    role = vault.read("agent-creds/database/roles/demo-readonly")
    assert role is not None
    assert role["data"]["db_name"] == "postgres"
    assert role["data"]["allowed_agents"] == ["dev"]
    assert role["data"]["creation_statements"] == CREATION
    assert role["data"]["default_ttl"] == 300
    assert role["data"]["max_ttl"] == 3600


def test_minted_user_gone_after_destroy(stack: Stack, pg_cluster: Cluster) -> None:
    vault, variables, key = stack.vault, stack.variables, stack.key
    tfapply.apply(MODULE, variables, vault.addr, vault.token)
    creds = mint(vault, key)["data"]
    assert login_works(creds)

    tfapply.destroy(MODULE, variables, vault.addr, vault.token)

    assert not role_exists(pg_cluster, creds["username"])
    assert "agent-creds/" not in vault.mount_table("mounts")
    assert "jwt/" not in vault.mount_table("auth")
    catalog = vault.read("sys/plugins/catalog") or {}
    names = [entry["name"] for entry in catalog["data"]["detailed"]]
    assert "agent-bridge" not in names
    policies = vault.request("LIST", "sys/policies/acl")
    assert policies is not None
    assert sorted(policies["data"]["keys"]) == ["default", "root"]

    tfapply.apply(MODULE, variables, vault.addr, vault.token)
    again = mint(vault, key)["data"]
    assert role_exists(pg_cluster, again["username"])


def test_reapply_keeps_rotated_password(stack: Stack, tmp_path: Path) -> None:
    vault, variables, key = stack.vault, stack.variables, stack.key
    state = tmp_path / "state.json"
    tfapply.apply(MODULE, variables, vault.addr, vault.token, state_path=state)
    vault.write("agent-creds/database/rotate-root/postgres", {})

    # The configured password is stale now; re-sending it would break the
    # connection, so an apply with an unchanged password must not send it.
    tfapply.apply(MODULE, variables, vault.addr, vault.token, state_path=state)

    assert mint(vault, key)["data"]["username"].startswith("v-dev-")


def test_state_file_keeps_no_secret(stack: Stack, tmp_path: Path) -> None:
    vault, variables = stack.vault, stack.variables
    state = tmp_path / "state.json"

    tfapply.apply(MODULE, variables, vault.addr, vault.token, state_path=state)

    text = state.read_text()
    assert variables["postgres_password"] not in text
    assert state.stat().st_mode & 0o077 == 0
    records = {r["address"]: r for r in json.loads(text)["records"]}
    connection = records["vault_database_secret_backend_connection.postgres"]
    assert "password" not in connection["blocks"]["postgresql"][0]
    assert set(connection["digests"]) == {"postgresql.password"}


def test_failed_revoke_stops_destroy(
    stack: Stack,
) -> None:
    vault, variables = stack.vault, stack.variables
    tfapply.apply(MODULE, variables, vault.addr, vault.token)
    variables["vault_cli"] = "/nonexistent/bao"

    with pytest.raises(TfApplyError, match="destroy provisioner exited with status"):
        tfapply.destroy(MODULE, variables, vault.addr, vault.token)

    # Nothing the leases depend on was deleted.
    assert vault.read("agent-creds/database/config/postgres") is not None
    assert vault.read("agent-creds/database/roles/demo-readonly") is not None


def test_unversioned_plugin_rejected_and_removed(stack: Stack) -> None:
    vault, variables = stack.vault, stack.variables
    variables["plugin_version"] = ""

    with pytest.raises(ConfigError, match=r"under the version it reports \(v"):
        tfapply.apply(MODULE, variables, vault.addr, vault.token)

    catalog = vault.read("sys/plugins/catalog") or {}
    names = [entry["name"] for entry in catalog["data"]["detailed"]]
    assert "agent-bridge" not in names


AGENT_EXEC = str(Path(sys.executable).parent / "agent-exec")


@pytest.fixture
def attestor(tmp_path: Path) -> Iterator[devstack_attestor.Attestor]:
    """Start the real attestor with agent dev = this test's uid."""
    server = devstack_attestor.start(tmp_path, procs.free_port())
    try:
        yield server
    finally:
        procs.stop("agent-attestor", server.pid)


def test_killed_agent_exec_then_destroy_leaves_no_user(
    stack: Stack, attestor: devstack_attestor.Attestor, pg_cluster: Cluster
) -> None:
    vault, variables = stack.vault, stack.variables
    variables.pop("jwt_validation_pubkeys")
    variables.update(jwks_url=attestor.jwks_url, bound_issuer=attestor.issuer)
    tfapply.apply(MODULE, variables, vault.addr, vault.token)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("VAULT_", "PG"))
    }
    env.update(VAULT_ADDR=vault.addr, AGENT_ATTESTOR_SOCKET=str(attestor.socket_path))
    script = 'echo "$PGUSER"; sleep 60'
    argv = [AGENT_EXEC, "--role", "demo-readonly", "--", "sh", "-c", script]
    with subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        user = proc.stdout.readline().strip()
        assert user.startswith("v-dev-demo-readonly-")
        assert role_exists(pg_cluster, user)
        proc.kill()
        proc.wait(timeout=10)

    tfapply.destroy(MODULE, variables, vault.addr, vault.token)

    assert not role_exists(pg_cluster, user)
    assert "agent-creds/" not in vault.mount_table("mounts")
    tfapply.apply(MODULE, variables, vault.addr, vault.token)
    result = subprocess.run(
        [AGENT_EXEC, "--role", "demo-readonly", "--", "sh", "-c", 'echo "$PGUSER"'],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith("v-dev-demo-readonly-")


def test_scram_iterations_follow_variable(stack: Stack, pg_cluster: Cluster) -> None:
    vault, variables, key = stack.vault, stack.variables, stack.key
    path = "agent-creds/database/config/postgres"

    def stored_rounds() -> int:
        config = vault.read(path)
        assert config is not None
        return int(config["data"]["connection_details"]["scram_iterations"])

    def minted_verifier() -> str:
        creds = mint(vault, key)["data"]
        return stored_password(pg_cluster, creds["username"])

    tfapply.apply(MODULE, variables, vault.addr, vault.token)
    tfapply.apply(MODULE, variables, vault.addr, vault.token)
    assert stored_rounds() == 1
    assert minted_verifier().startswith("SCRAM-SHA-256$1:")

    variables["postgres"]["scram_iterations"] = 4096
    tfapply.apply(MODULE, variables, vault.addr, vault.token)
    assert stored_rounds() == 4096
    assert minted_verifier().startswith("SCRAM-SHA-256$4096:")

    variables["postgres"]["scram_iterations"] = 100_001
    with pytest.raises(TfApplyError, match="invalid scram_iterations 100001"):
        tfapply.apply(MODULE, variables, vault.addr, vault.token)
    assert stored_rounds() == 4096

    tfapply.destroy(MODULE, variables, vault.addr, vault.token)
    assert vault.read(path) is None


CONFIG_PATH = "agent-creds/database/config/postgres"
# Passwords of LOWER24. The plugin's own passwords are 32 characters long and
# always contain an uppercase letter and a "-", so they never match.
LOWER24_PASSWORD = re.compile(r"[a-z]{24}")
# The postgres fields that make the module write LOWER24 as the policy.
WITH_LOWER24 = {
    "scram_iterations": 4096,
    "password_policy": "pg-lower24",
    "password_policy_rules": LOWER24,
}


def stored_config(vault: VaultClient) -> dict[str, Any]:
    config = vault.read(CONFIG_PATH)
    assert config is not None
    data: dict[str, Any] = config["data"]
    return data


def test_policy_added_and_removed(
    stack: Stack, pg_cluster: Cluster, tmp_path: Path
) -> None:
    vault, variables, key = stack.vault, stack.variables, stack.key
    run = (MODULE, variables, vault.addr, vault.token)
    state = tmp_path / "state.json"

    tfapply.apply(*run, state_path=state)
    assert tfapply.drift(*run, state_path=state) == {}

    variables["postgres"] |= WITH_LOWER24
    tfapply.apply(*run, state_path=state)

    config = stored_config(vault)
    assert config["password_policy"] == "pg-lower24"
    assert config["scram_iterations"] == 4096
    creds = mint(vault, key)["data"]
    assert LOWER24_PASSWORD.fullmatch(creds["password"])
    assert login_works(creds)
    verifier = stored_password(pg_cluster, creds["username"])
    assert verifier.startswith("SCRAM-SHA-256$4096:")
    assert tfapply.drift(*run, state_path=state) == {}

    variables["postgres"] |= {
        "scram_iterations": 1,
        "password_policy": None,
        "password_policy_rules": None,
    }
    tfapply.apply(*run, state_path=state)

    config = stored_config(vault)
    assert config["password_policy"] == ""
    assert config["scram_iterations"] == 1
    assert vault.read("sys/policies/password/pg-lower24") is None
    creds = mint(vault, key)["data"]
    assert len(creds["password"]) == 32
    assert not LOWER24_PASSWORD.fullmatch(creds["password"])
    assert login_works(creds)
    verifier = stored_password(pg_cluster, creds["username"])
    assert verifier.startswith("SCRAM-SHA-256$1:")
    assert tfapply.drift(*run, state_path=state) == {}


def test_drift_shows_policy_changed_in_vault(stack: Stack, tmp_path: Path) -> None:
    vault, variables = stack.vault, stack.variables
    state = tmp_path / "state.json"
    variables["postgres"] |= WITH_LOWER24
    tfapply.apply(MODULE, variables, vault.addr, vault.token, state_path=state)

    vault.write(CONFIG_PATH, {"password_policy": ""})

    # The typed connection reads the cleared policy too, but its
    # ignore_changes leaves password_policy out.
    drifted = tfapply.drift(
        MODULE, variables, vault.addr, vault.token, state_path=state
    )
    assert drifted == {
        "vault_generic_endpoint.connection_scram": ["data_json.password_policy"]
    }


def test_drift_without_ignore_changes_shows_policy(
    stack: Stack, tmp_path: Path
) -> None:
    vault, variables = stack.vault, stack.variables
    module = tmp_path / "vault-config"
    shutil.copytree(MODULE, module)
    database_tf = module / "database.tf"
    lifecycle = "  lifecycle {\n    ignore_changes = [password_policy]\n  }\n"
    assert lifecycle in database_tf.read_text()
    database_tf.write_text(database_tf.read_text().replace(lifecycle, ""))
    variables["postgres"] |= WITH_LOWER24

    tfapply.apply(module, variables, vault.addr, vault.token)

    drifted = tfapply.drift(module, variables, vault.addr, vault.token)
    assert drifted == {
        "vault_database_secret_backend_connection.postgres": ["password_policy"]
    }


def test_policy_managed_elsewhere_is_kept(stack: Stack, tmp_path: Path) -> None:
    vault, variables, key = stack.vault, stack.variables, stack.key
    state = tmp_path / "state.json"
    policy_path = "sys/policies/password/pg-external"
    variables["postgres"] |= {
        "scram_iterations": 4096,
        "password_policy": "pg-external",
    }

    with pytest.raises(TfApplyError, match="invalid password_policy"):
        tfapply.apply(MODULE, variables, vault.addr, vault.token, state_path=state)

    vault.put(policy_path, {"policy": LOWER24})
    tfapply.apply(MODULE, variables, vault.addr, vault.token, state_path=state)
    assert LOWER24_PASSWORD.fullmatch(mint(vault, key)["data"]["password"])

    variables["postgres"] |= {"scram_iterations": 1, "password_policy": None}
    tfapply.apply(MODULE, variables, vault.addr, vault.token, state_path=state)
    assert stored_config(vault)["password_policy"] == ""
    assert vault.read(policy_path) is not None
