"""docker-compose.yml and the OpenBao server configuration it ships.

No Docker engine runs here: Debian's docker-compose validates the file
offline, and the audit stanzas of deploy/openbao/server.hcl and
vault-config/openbao-audit.hcl are loaded by a real OpenBao dev server with
their paths moved into a temporary folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from devstack import openbao, procs
from devstack.tfapply_vault import VaultClient

ROOT = Path(__file__).resolve().parents[1]
SECRETS = {"AGENT_BRIDGE_ROOT_TOKEN": "test-root-token", "POSTGRES_PASSWORD": "pw"}

pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <function Popen.__del__"
    ":pytest.PytestUnraisableExceptionWarning"
)


def compose(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    assert binary is not None, (
        "docker-compose is missing: apt-get install docker-compose"
    )
    base = {k: v for k, v in os.environ.items() if k not in SECRETS}
    return subprocess.run(
        [binary, "--file", str(ROOT / "docker-compose.yml"), *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        check=False,
    )


def resolved() -> dict[str, Any]:
    result = compose("config", env=SECRETS)
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


def test_compose_config_valid() -> None:
    result = compose("config", "-q", env=SECRETS)
    assert result.returncode == 0, result.stderr


def test_compose_requires_secrets() -> None:
    result = compose("config", "-q", env={})
    assert result.returncode != 0
    assert "AGENT_BRIDGE_ROOT_TOKEN" in result.stderr


def test_compose_attestor_shares_host_pids() -> None:
    attestor = resolved()["services"]["attestor"]
    assert attestor["pid"] == "host"
    assert "SYS_PTRACE" in attestor["cap_add"]
    # docker-compose 1.29 prints volumes as SOURCE:TARGET:MODE strings.
    assert "/run/agent-attestor:/run/agent-attestor:rw" in attestor["volumes"]


def test_compose_publishes_only_loopback() -> None:
    for name, service in resolved()["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port}"


def test_compose_postgres_uses_scram() -> None:
    postgres = resolved()["services"]["postgres"]
    assert postgres["image"] == "postgres:16"
    assert postgres["environment"]["POSTGRES_HOST_AUTH_METHOD"] == "scram-sha-256"
    assert "--auth=scram-sha-256" in postgres["environment"]["POSTGRES_INITDB_ARGS"]


def test_compose_files_exist() -> None:
    for service in resolved()["services"].values():
        build = service.get("build")
        if build:
            assert (Path(build["context"]) / build["dockerfile"]).is_file()


@pytest.mark.parametrize(
    "snippet", ["deploy/openbao/server.hcl", "vault-config/openbao-audit.hcl"]
)
def test_audit_stanza_loads_in_openbao(tmp_path: Path, snippet: str) -> None:
    audit_log = tmp_path / "audit.log"
    text = (ROOT / snippet).read_text()
    text = text.replace("/var/log/openbao/audit.log", str(audit_log))
    text = text.replace("/usr/lib/openbao/plugins", str(tmp_path / "plugins"))
    (tmp_path / "plugins").mkdir()
    config = tmp_path / "server.hcl"
    config.write_text(text)
    server = start_with_config(tmp_path, config)
    try:
        vault = VaultClient(server[0], "test-root-token")
        devices = vault.mount_table("audit")
        assert devices["agent-bridge/"]["type"] == "file"
        assert devices["agent-bridge/"]["options"]["hmac_accessor"] == "false"

        token = vault.write("auth/token/create", {"ttl": "1m"})
        assert token is not None
        accessor = token["auth"]["accessor"]
        VaultClient(server[0], token["auth"]["client_token"]).read(
            "auth/token/lookup-self"
        )
        entries = [json.loads(line) for line in audit_log.read_text().splitlines()]
        logged = [e["auth"].get("accessor") for e in entries if "auth" in e]
        assert accessor in logged
    finally:
        procs.stop("openbao", server[1])


def start_with_config(tmp_path: Path, config: Path) -> tuple[str, int]:
    """Start an OpenBao dev server with `config`; return its address and PID."""
    port = procs.free_port_pair()
    (tmp_path / "home").mkdir()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path / "home"),
        "BAO_DEV_ROOT_TOKEN_ID": "test-root-token",
    }
    argv = [
        str(openbao.bao_binary()),
        "server",
        "-dev",
        f"-dev-listen-address=127.0.0.1:{port}",
        f"-config={config}",
    ]
    log_path = tmp_path / "server.log"
    pid = procs.spawn("openbao", argv, log_path=log_path, env=env)
    addr = f"http://127.0.0.1:{port}"
    procs.wait_until(
        "OpenBao",
        lambda: procs.port_open(port),
        timeout=60,
        pid=pid,
        log_path=log_path,
    )
    return addr, pid
