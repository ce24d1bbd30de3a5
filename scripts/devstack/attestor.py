"""The attestor daemon of the embedded stack, with the agent `dev`.

In the embedded stack the agent `dev` is every process of the user who
started the stack (a `uid:` selector), so `agent-exec` works from that user's
shell. Production configurations pin executables and parents as well.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from devstack.procs import port_open, spawn, wait_until

AUDIENCE = "agent-bridge"

CONFIG = """\
socket_path = "{socket}"
jwks_address = "127.0.0.1:{port}"
issuer = "http://127.0.0.1:{port}"
key_dir = "{key_dir}"

[[agent]]
name = "dev"
selectors = ["uid:{uid}"]
audience = "{audience}"
ttl = 60
"""


@dataclass(frozen=True)
class Attestor:
    socket_path: Path
    jwks_url: str
    issuer: str
    pid: int
    log_path: Path


def start(state_dir: Path, port: int, *, agent_uid: int | None = None) -> Attestor:
    home = state_dir / "attestor"
    home.mkdir(parents=True, exist_ok=True)
    home.chmod(0o755)  # agents of other uids must reach the socket
    socket_path = home / "agent.sock"
    config = home / "attestor.toml"
    config.write_text(
        CONFIG.format(
            socket=socket_path,
            port=port,
            key_dir=home / "keys",
            uid=os.getuid() if agent_uid is None else agent_uid,
            audience=AUDIENCE,
        )
    )
    binary = Path(sys.executable).with_name("agent-attestor")
    log_path = home / "attestor.log"
    pid = spawn(
        "agent-attestor",
        [str(binary), "serve", "--config", str(config)],
        log_path=log_path,
    )
    wait_until(
        "agent-attestor",
        lambda: socket_path.exists() and port_open(port),
        timeout=30,
        pid=pid,
        log_path=log_path,
    )
    issuer = f"http://127.0.0.1:{port}"
    return Attestor(
        socket_path, f"{issuer}/.well-known/jwks.json", issuer, pid, log_path
    )
