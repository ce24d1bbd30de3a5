"""Bring the whole embedded stack up and down, and describe it.

State lives in one folder (`.stack/` in the checkout for `scripts/dev-stack`,
a temporary folder for the tests): logs, data, keys and `state.json`, which
records PIDs, ports, the root token and moto's admin key, readable by its
owner only.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from devstack import attestor, moto, openbao, plugin, postgres, vaultconfig
from devstack.procs import StackError, free_port, free_port_pair, is_alive, stop
from devstack.vault import Vault

log = logging.getLogger(__name__)


@dataclass
class StackState:
    state_dir: str
    vault_addr: str
    root_token: str
    openbao_pid: int
    pg_port: int
    pg_pid: int
    pg_user: str
    pg_password: str
    pg_data_dir: str
    pg_socket_dir: str
    attestor_pid: int
    attestor_socket: str
    jwks_url: str
    plugin_sha256: str
    # The defaults let `down` read a state file written before moto joined
    # the stack. A moto_pid of 0 means that no moto was started.
    moto_pid: int = 0
    aws_endpoint_url: str = ""
    aws_admin_access_key: str = ""
    aws_admin_secret_key: str = ""

    def env(self) -> dict[str, str]:
        """Administrator environment: root token and superuser, not for agents.

        moto's admin key stays out: users need only the endpoint, and
        agent-exec gives each command keys of its own.
        """
        env = {
            "VAULT_ADDR": self.vault_addr,
            "VAULT_TOKEN": self.root_token,
            "PGHOST": "127.0.0.1",
            "PGPORT": str(self.pg_port),
            "PGUSER": self.pg_user,
            "PGPASSWORD": self.pg_password,
            "PGDATABASE": "demo",
            "AGENT_ATTESTOR_SOCKET": self.attestor_socket,
        }
        if self.aws_endpoint_url:
            env["AWS_ENDPOINT_URL"] = self.aws_endpoint_url
        return env

    def pids(self) -> dict[str, int]:
        pids = {
            "agent-attestor": self.attestor_pid,
            "openbao": self.openbao_pid,
            "postgresql": self.pg_pid,
        }
        # pid 0 is no process, and kill(0, ...) would signal our own group.
        if self.moto_pid > 0:
            pids["moto"] = self.moto_pid
        return pids


def state_file(state_dir: Path) -> Path:
    return state_dir / "state.json"


def load(state_dir: Path) -> StackState | None:
    path = state_file(state_dir)
    if not path.exists():
        return None
    return StackState(**json.loads(path.read_text()))


def up(state_dir: Path, *, build: bool = True) -> StackState:
    """Start every component unless a live stack is already recorded."""
    current = load(state_dir)
    if current is not None and _complete_and_alive(current):
        return current
    if current is not None:
        # OpenBao's dev server and moto keep their state in memory, so one
        # dead component means a new root token, ports and keys for all.
        dead = [name for name, pid in current.pids().items() if not is_alive(pid)]
        log.warning(
            "%s not running; restarting the whole stack with new addresses and "
            "a new root token: load its environment again",
            ", ".join(dead) or "moto",
        )
        down(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    state_dir.chmod(0o755)

    built = plugin.build() if build else plugin.ROOT / "build" / "agent-bridge-plugin"
    started: dict[str, int] = {}
    try:
        return _start_all(state_dir, built, started)
    except BaseException:
        for name, pid in reversed(started.items()):
            if name == "postgresql":
                postgres.stop(pid, state_dir / "postgres")
            else:
                stop(name, pid)
        raise


def _complete_and_alive(state: StackState) -> bool:
    """Return whether every component, moto included, is recorded and running."""
    return state.moto_pid > 0 and all(is_alive(p) for p in state.pids().values())


def _start_all(state_dir: Path, built: Path, started: dict[str, int]) -> StackState:
    pg = postgres.start(state_dir, free_port())
    started["postgresql"] = pg.pid
    att = attestor.start(state_dir, free_port())
    started["agent-attestor"] = att.pid
    aws = moto.start(state_dir, free_port())
    started["moto"] = aws.pid
    bao = openbao.start(state_dir, free_port_pair())
    started["openbao"] = bao.pid

    shiv_root = state_dir / "openbao" / "plugin-root"
    sha256 = plugin.install(built, bao.plugin_dir, shiv_root)
    values = vaultconfig.variables(
        plugin_sha256=sha256,
        shiv_root=shiv_root,
        jwks_url=att.jwks_url,
        issuer=att.issuer,
        pg_port=pg.port,
        pg_user=pg.superuser,
        pg_password=pg.password,
        aws=aws,
    )
    vaultconfig.apply(bao.addr, bao.root_token, values, state_dir)
    state = StackState(
        state_dir=str(state_dir),
        vault_addr=bao.addr,
        root_token=bao.root_token,
        openbao_pid=bao.pid,
        pg_port=pg.port,
        pg_pid=pg.pid,
        pg_user=pg.superuser,
        pg_password=pg.password,
        pg_data_dir=str(pg.data_dir),
        pg_socket_dir=str(pg.socket_dir),
        attestor_pid=att.pid,
        attestor_socket=str(att.socket_path),
        jwks_url=att.jwks_url,
        plugin_sha256=sha256,
        moto_pid=aws.pid,
        aws_endpoint_url=aws.url,
        aws_admin_access_key=aws.admin_access_key,
        aws_admin_secret_key=aws.admin_secret_key,
    )
    _save(state_dir, state)
    return state


def _save(state_dir: Path, state: StackState) -> None:
    path = state_file(state_dir)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(asdict(state), f, indent=2)


def down(state_dir: Path) -> None:
    """Stop what `up` started, by the PIDs it recorded."""
    state = load(state_dir)
    if state is None:
        return
    errors: list[str] = []
    if is_alive(state.openbao_pid):
        # The dev server keeps its leases in memory: revoke them while it
        # runs, so no generated role outlives the stack in PostgreSQL's data.
        try:
            Vault(state.vault_addr, state.root_token).request(
                "PUT", "sys/leases/revoke-prefix/agent-creds", {"sync": True}
            )
        except StackError as err:
            errors.append(f"revoking the stack's leases failed: {err}")
    for name, pid in state.pids().items():
        try:
            if name == "postgresql":
                postgres.stop(pid, Path(state.pg_data_dir))
            else:
                stop(name, pid)
        except StackError as err:
            errors.append(str(err))
    state_file(state_dir).unlink()
    if errors:
        raise StackError("; ".join(errors))


def status(state_dir: Path) -> dict[str, Any]:
    state = load(state_dir)
    if state is None:
        return {"running": False}
    procs = {
        name: {"pid": pid, "alive": is_alive(pid)} for name, pid in state.pids().items()
    }
    return {
        "running": all(p["alive"] for p in procs.values()),
        "processes": procs,
        "vault_addr": state.vault_addr,
        "attestor_socket": state.attestor_socket,
        "aws_endpoint_url": state.aws_endpoint_url,
    }


def export_lines(state: StackState) -> str:
    return "\n".join(f"export {k}={shlex.quote(v)}" for k, v in state.env().items())
