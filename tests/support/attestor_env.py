"""Fixtures for the attestor's tests: agent users, a daemon, a client helper.

The tests run agents as real non-root users (`ab-agent1`, `ab-agent2`) so uid
selectors and /proc permissions are exercised for real. Those users cannot
enter /root, where the project's virtualenv interpreter lives, so the client
they run is a stdlib-only script under the system `/usr/bin/python3`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from attestor.inspection.inspector import Peer
from attestor.server.daemon import Daemon

SYSTEM_PYTHON = "/usr/bin/python3"
AGENT_USERS = ("ab-agent1", "ab-agent2")

# The client helper connects, sends one request and prints the response.
# MODE "once" does just that. With "exit" and "exec" it waits for SIGUSR1
# after sending, then exits or execs /bin/sleep, which inherits the socket.
# With "stdin" it reads one line from stdin before connecting.
HELPER = textwrap.dedent(
    """\
    import json, os, signal, socket, sys

    path, mode = sys.argv[1], sys.argv[2]
    request = sys.argv[3] if len(sys.argv) > 3 else '{"op": "token"}'
    if mode == "stdin":
        sys.stdin.readline()

    def on_signal(signum, frame):
        if mode == "exit":
            os._exit(0)
        os.execv("/bin/sleep", ["sleep", "30"])

    signal.signal(signal.SIGUSR1, on_signal)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    os.set_inheritable(sock.fileno(), True)
    sock.sendall(request.encode() + b"\\n")
    data = b""
    while not data.endswith(b"\\n"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    print(data.decode().strip())
    """
)

CONFIG_HEAD = """\
socket_path = "{socket}"
jwks_address = "127.0.0.1:0"
key_dir = "{keys}"
request_timeout = 1.0
processes = 1
"""


@dataclass(frozen=True)
class AgentUser:
    name: str
    uid: int
    gid: int


def ensure_agent_users() -> dict[str, AgentUser]:
    """Create the system users the agents run as, once per machine."""
    users = {}
    for name in AGENT_USERS:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            subprocess.run(
                [
                    "useradd",
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    name,
                ],
                check=True,
                capture_output=True,
            )
            entry = pwd.getpwnam(name)
        users[name] = AgentUser(name, entry.pw_uid, entry.pw_gid)
    return users


@pytest.fixture(scope="session", name="agent_users")
def agent_users_fixture() -> dict[str, AgentUser]:
    if os.geteuid() != 0:
        pytest.skip(
            "attestor tests create users and read other uids' /proc: run as root"
        )
    return ensure_agent_users()


@pytest.fixture(name="shared_dir")
def shared_dir_fixture() -> Iterator[Path]:
    """A folder every agent user can traverse, holding the socket and helpers."""
    path = Path(tempfile.mkdtemp(prefix="attestor-test-"))
    path.chmod(0o755)
    (path / "helper.py").write_text(HELPER)
    (path / "helper.py").chmod(0o644)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class DecisionLog(logging.Handler):
    """Collects the `fields` of the attestor's decision log records."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            self.records.append({"message": record.getMessage(), **fields})

    def for_pid(self, pid: int) -> list[dict[str, Any]]:
        return [record for record in self.records if record.get("pid") == pid]


@dataclass
class Harness:
    """An in-process daemon with a pause hook between reading and re-checking."""

    directory: Path
    daemon: Daemon
    decisions: DecisionLog
    hook: Callable[[Peer], None] | None = None
    children: list[subprocess.Popen[str]] = field(default_factory=list)

    @property
    def socket_path(self) -> str:
        return self.daemon.config.socket_path

    @property
    def jwks_url(self) -> str:
        return f"{self.daemon.jwks.url}/.well-known/jwks.json"

    def run_client(
        self, user: AgentUser, request: dict[str, Any] | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """Run the helper once as `user` and return the parsed response."""
        argv = self.helper_argv("once", request)
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
            **as_user(user),
            **kwargs,
        )
        assert result.returncode == 0, result.stderr
        response: dict[str, Any] = json.loads(result.stdout)
        return response

    def start_client(
        self, user: AgentUser, mode: str, request: dict[str, Any] | None = None
    ) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            self.helper_argv(mode, request),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            **as_user(user),
        )
        self.children.append(process)
        return process

    def helper_argv(self, mode: str, request: dict[str, Any] | None) -> list[str]:
        argv = [
            SYSTEM_PYTHON,
            str(self.directory / "helper.py"),
            self.socket_path,
            mode,
        ]
        if request is not None:
            argv.append(json.dumps(request))
        return argv

    def stop(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.kill()
            # communicate() also closes the pipes, which wait() would leak.
            child.communicate(timeout=10)
        self.daemon.stop()


def as_user(user: AgentUser) -> dict[str, Any]:
    return {
        "user": user.uid,
        "group": user.gid,
        "extra_groups": [],
        "cwd": "/",
        "env": {"PATH": "/usr/bin:/bin"},
    }


def write_config(directory: Path, agents: str, extra: str = "") -> Path:
    config = directory / "attestor.toml"
    head = CONFIG_HEAD.format(
        socket=directory / "run" / "agent.sock", keys=directory / "keys"
    )
    config.write_text(head + extra + "\n" + textwrap.dedent(agents))
    return config


def start_harness(directory: Path, agents: str, extra: str = "") -> Harness:
    config = write_config(directory, agents, extra)
    decisions = DecisionLog()
    for name in (
        "attestor.server.service",
        "attestor.server.request_reader",
        "attestor.server.socket_server",
    ):
        logging.getLogger(name).addHandler(decisions)
        logging.getLogger(name).setLevel(logging.DEBUG)

    holder: list[Harness] = []

    def pause(peer: Peer) -> None:
        if holder and holder[0].hook is not None:
            holder[0].hook(peer)

    daemon = Daemon(str(config), after_read=pause)
    daemon.start()
    harness = Harness(directory=directory, daemon=daemon, decisions=decisions)
    holder.append(harness)
    return harness


def detach_decisions(harness: Harness) -> None:
    for name in (
        "attestor.server.service",
        "attestor.server.request_reader",
        "attestor.server.socket_server",
    ):
        logging.getLogger(name).removeHandler(harness.decisions)


@pytest.fixture(name="make_harness")
def make_harness_fixture(shared_dir: Path) -> Iterator[Callable[..., Harness]]:
    started: list[Harness] = []

    def make(agents: str, extra: str = "") -> Harness:
        harness = start_harness(shared_dir, agents, extra)
        started.append(harness)
        return harness

    yield make
    for harness in started:
        harness.stop()
        detach_decisions(harness)


CLI = str(Path(sys.executable).with_name("agent-attestor"))


@contextlib.contextmanager
def serve_in_subprocess(config: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """Run `agent-attestor serve` on `config` until the block ends.

    Yields the process and its log file once the socket exists; afterwards
    stops the process by its pid (SIGTERM) unless the block already did.
    """
    log = config.parent / "daemon.log"
    socket_path = config.parent / "run" / "agent.sock"
    with open(log, "wb") as out:
        process = subprocess.Popen([CLI, "serve", "--config", str(config)], stderr=out)
    try:
        assert wait_for(socket_path.exists, timeout=30), log.read_text()
        yield process, log
    finally:
        if process.poll() is None:
            process.terminate()
        process.wait(timeout=30)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll `condition` every 10 ms until it is true or `timeout` passes."""
    done = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if condition():
            return True
        done.wait(0.01)
    return condition()
