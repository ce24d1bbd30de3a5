"""Servers for scripts/bench-database: one OpenBao, one PostgreSQL, the engines.

Every engine gets the same connection (the cluster's superuser, four pooled
connections), the same creation statements and the same TTLs, and each
keeps its own default revocation. The engines are OpenBao's built-in
`database` engine and the plugin, plus optionally a second build of the
plugin (a baseline), registered under its own catalog name. The creds
reads of all use one token from a JWT login, because the plugin only mints
for an agent (an entity alias on the JWT mount named in its
`config/identity`). The JWT mount trusts a key made here, so no attestor
runs.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from devstack import openbao, plugin, postgres
from devstack.procs import free_port, free_port_pair, stop

ROLE = "bench"
AGENT = "bench-agent"
CREATION = [
    "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' "
    "VALID UNTIL '{{expiration}}';",
    'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{{name}}";',
]
ROLE_TTLS = {"default_ttl": "1h", "max_ttl": "24h"}
MOUNT_TTLS = {"default_lease_ttl": "1h", "max_lease_ttl": "24h"}
# Engine name -> mount path of each build of the plugin.
PLUGIN_MOUNTS = {"agent-bridge": "ours", "baseline": "baseline"}


class VaultHttp:
    """One kept-alive HTTP connection to Vault, for one thread."""

    def __init__(self, addr: str, token: str) -> None:
        host, port = addr.removeprefix("http://").split(":")
        self.connection = http.client.HTTPConnection(host, int(port), timeout=60)
        self.token = token

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"X-Vault-Token": self.token, "Content-Type": "application/json"}
        self.connection.request(method, f"/v1/{path}", payload, headers)
        response = self.connection.getresponse()
        raw = response.read()
        if response.status >= 400:
            raise RuntimeError(f"{method} {path} failed ({response.status}): {raw!r}")
        return json.loads(raw) if raw else None

    def close(self) -> None:
        self.connection.close()


@dataclass(frozen=True)
class Servers:
    addr: str
    root_token: str
    agent_token: str
    creds_paths: dict[str, str]  # engine name -> creds path
    openbao_pid: int
    pg_conninfo: dict[str, str | int]  # the cluster's superuser, for psycopg
    pg_pid: int  # the postmaster


@contextlib.contextmanager
def running_servers(
    folder: Path,
    password_authentication: str,
    plugin_file: Path | None = None,
    baseline_file: Path | None = None,
    plugin_connection: dict[str, Any] | None = None,
) -> Iterator[Servers]:
    """Start PostgreSQL and OpenBao in `folder`, configure the engines.

    `password_authentication` is the connection's field of that name, the
    same for every engine: `password` or `scram-sha-256`. `plugin_file` is a
    built plugin to measure; by default one is built from this checkout.
    `baseline_file`, another build, becomes the engine `baseline`.
    `plugin_connection` holds connection fields that only the engine
    `agent-bridge` gets, over the common ones.
    """
    files = {"agent-bridge": plugin_file or _build_plugin(folder / "build")}
    if baseline_file is not None:
        files["baseline"] = baseline_file
    pg = postgres.start(folder, free_port())
    bao = None
    try:
        bao = openbao.start(folder, free_port_pair())
        root = VaultHttp(bao.addr, bao.root_token)
        _register(root, files, bao.plugin_dir, folder / "shiv")
        accessor, agent_token = _agent_login(root)
        paths = _configure(
            root,
            pg,
            password_authentication,
            list(files),
            accessor,
            plugin_connection=plugin_connection or {},
        )
        root.close()
        yield Servers(
            bao.addr,
            bao.root_token,
            agent_token,
            paths,
            bao.pid,
            pg.conninfo(),
            pg.pid,
        )
    finally:
        # The cluster is thrown away with its roles, so leases are not revoked.
        if bao is not None:
            stop("openbao", bao.pid)
        postgres.stop(pg.pid, pg.data_dir)


def _build_plugin(output_dir: Path) -> Path:
    script = plugin.ROOT / "scripts" / "build-plugin"
    subprocess.run(
        [sys.executable, str(script), "--output-dir", str(output_dir)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return output_dir / "agent-bridge-plugin"


def _register(
    root: VaultHttp, files: dict[str, Path], plugin_dir: Path, shiv_root: Path
) -> None:
    """Copy each build into the plugin directory and register it by sha256."""
    shiv_root.mkdir(mode=0o700, exist_ok=True)
    for engine, built in files.items():
        name = (
            plugin.PLUGIN_NAME if engine == "agent-bridge" else f"agent-bridge-{engine}"
        )
        target = plugin_dir / name
        shutil.copyfile(built, target)
        target.chmod(0o755)
        entry = {
            "sha256": plugin.sha256_of(target),
            "command": name,
            "env": [f"SHIV_ROOT={shiv_root}"],
        }
        root.call("POST", f"sys/plugins/catalog/secret/{name}", entry)
        mount = {"type": name, "config": MOUNT_TTLS}
        root.call("POST", f"sys/mounts/{PLUGIN_MOUNTS[engine]}", mount)


def _configure(
    root: VaultHttp,
    pg: postgres.Postgres,
    password_authentication: str,
    plugin_engines: list[str],
    jwt_accessor: str,
    *,
    plugin_connection: dict[str, Any],
) -> dict[str, str]:
    """Configure the same connection and role on every engine; return creds paths."""
    root.call("POST", "sys/mounts/builtin", {"type": "database", "config": MOUNT_TTLS})
    connection = {
        "plugin_name": "postgresql-database-plugin",
        "connection_url": (
            f"postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{pg.port}"
            "/postgres?sslmode=disable"
        ),
        "username": pg.superuser,
        "password": pg.password,
        "allowed_roles": "*",
        "max_open_connections": 4,
        "password_authentication": password_authentication,
    }
    role = {"db_name": "pg", "creation_statements": CREATION, **ROLE_TTLS}
    backends = {"built-in": "builtin"}
    for engine in plugin_engines:
        mount = PLUGIN_MOUNTS[engine]
        root.call(
            "POST", f"{mount}/config/identity", {"jwt_mount_accessor": jwt_accessor}
        )
        backends[engine] = f"{mount}/database"
    for engine, backend in backends.items():
        extra = plugin_connection if engine == "agent-bridge" else {}
        root.call("POST", f"{backend}/config/pg", {**connection, **extra})
        root.call("POST", f"{backend}/roles/{ROLE}", role)
    for engine in plugin_engines:
        agents = {"allowed_agents": AGENT}
        root.call("POST", f"{backends[engine]}/roles/{ROLE}", agents)
    return {engine: f"{backend}/creds/{ROLE}" for engine, backend in backends.items()}


def _agent_login(root: VaultHttp) -> tuple[str, str]:
    """Log in as AGENT on a JWT mount that trusts a key made here.

    Returns the JWT mount's accessor and the login token.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    root.call("POST", "sys/auth/jwt", {"type": "jwt"})
    jwt_config = {
        "jwt_validation_pubkeys": [public_pem.decode()],
        "bound_issuer": "bench",
    }
    root.call("POST", "auth/jwt/config", jwt_config)

    policy = 'path "+/creds/*" { capabilities = ["read"] }\n'
    policy += 'path "+/database/creds/*" { capabilities = ["read"] }\n'
    root.call("POST", "sys/policies/acl/bench", {"policy": policy})
    role = {
        "role_type": "jwt",
        "user_claim": "sub",
        "bound_audiences": ["bench"],
        "token_policies": ["bench"],
        "token_ttl": "12h",
    }
    root.call("POST", "auth/jwt/role/bench", role)

    now = int(time.time())
    claims = {"sub": AGENT, "iss": "bench", "aud": "bench", "iat": now, "exp": now + 60}
    token = jwt.encode(claims, key, algorithm="ES256")
    login = root.call("POST", "auth/jwt/login", {"role": "bench", "jwt": token})
    accessor = root.call("GET", "sys/auth")["data"]["jwt/"]["accessor"]
    return str(accessor), str(login["auth"]["client_token"])
