"""`processes = 2`: the supervisor, its socket workers and its JWKS process.

Most tests run `agent-attestor serve` as a subprocess. The watchdog test
forks a supervisor from the test process instead, so that its workers
inherit a pause hook that stalls on one uid's requests.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import jwt
import pytest

from attestor.client import AttestorError, request_reload, request_token
from attestor.inspection.inspector import Peer
from attestor.server.daemon import Daemon
from tests.support.attestor_env import (  # noqa: F401 (fixtures)
    CLI,
    SYSTEM_PYTHON,
    AgentUser,
    agent_users_fixture,
    as_user,
    serve_in_subprocess,
    shared_dir_fixture,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.timeout(120)

AGENTS = """
[[agent]]
name = "operator"
selectors = ["uid:0"]
"""


def rewrite(config: Path, old: str, new: str) -> None:
    """Replace text in the config atomically, so no reload reads it half written."""
    temporary = config.with_suffix(".new")
    temporary.write_text(config.read_text().replace(old, new))
    temporary.rename(config)


def children_of(pid: int) -> set[int]:
    tasks = Path(f"/proc/{pid}/task")
    found: set[int] = set()
    for task in tasks.iterdir():
        found.update(int(child) for child in (task / "children").read_text().split())
    return found


@dataclass
class Supervised:
    process: subprocess.Popen[bytes]
    config: Path
    socket: str
    log: Path

    def agents_seen(self, count: int) -> set[str]:
        return {request_token(self.socket).agent for _ in range(count)}


@pytest.fixture
def supervised(tmp_path: Path) -> Iterator[Supervised]:
    config = write_config(tmp_path, AGENTS, "[rate_limit]\nper_uid_rate = 10000\n")
    rewrite(config, "processes = 1\n", "processes = 2\n")
    socket_path = str(tmp_path / "run" / "agent.sock")
    with serve_in_subprocess(config) as (process, log):
        assert wait_for(lambda: len(children_of(process.pid)) == 3, timeout=30)
        # Each worker re-reads the config as it starts: wait until all have.
        assert wait_for(
            lambda: log.read_text().count("started socket") == 2, timeout=30
        )
        yield Supervised(process, config, socket_path, log)


def test_workers_serve_tokens(supervised: Supervised) -> None:
    tokens = [request_token(supervised.socket) for _ in range(20)]

    assert {issued.agent for issued in tokens} == {"operator"}
    assert len({issued.jti for issued in tokens}) == 20
    assert len(children_of(supervised.process.pid)) == 3


def test_sighup_reaches_every_worker(supervised: Supervised) -> None:
    rewrite(supervised.config, "operator", "renamed")

    supervised.process.send_signal(signal.SIGHUP)

    assert wait_for(lambda: supervised.agents_seen(10) == {"renamed"}, timeout=10)


def test_reload_request_reaches_every_worker(supervised: Supervised) -> None:
    rewrite(supervised.config, "operator", "renamed")

    request_reload(supervised.socket)

    assert wait_for(lambda: supervised.agents_seen(10) == {"renamed"}, timeout=10)


def test_killed_worker_is_restarted(supervised: Supervised) -> None:
    before = children_of(supervised.process.pid)
    victim = min(before)

    os.kill(victim, signal.SIGKILL)

    assert wait_for(
        lambda: len(children_of(supervised.process.pid) - before) == 1, timeout=10
    )
    assert victim not in children_of(supervised.process.pid)
    assert supervised.agents_seen(5) == {"operator"}
    assert "exited (killed by signal 9); restarting it" in supervised.log.read_text()


def test_stop_and_continue_keeps_serving(supervised: Supervised) -> None:
    # Stopped for longer than each process's signal wait (0.5 s in the
    # supervisor, 1 s in the workers), then continued, as `kill -STOP` and
    # `kill -CONT` or a debugger do.
    processes = [supervised.process.pid, *children_of(supervised.process.pid)]
    for pid in processes:
        os.kill(pid, signal.SIGSTOP)
    time.sleep(1.5)
    for pid in processes:
        os.kill(pid, signal.SIGCONT)
    time.sleep(1.0)

    assert supervised.process.poll() is None
    assert children_of(supervised.process.pid) == set(processes[1:])
    assert supervised.agents_seen(5) == {"operator"}
    assert "stopping" not in supervised.log.read_text()


def test_sigterm_stops_all_and_removes_socket(supervised: Supervised) -> None:
    workers = children_of(supervised.process.pid)

    supervised.process.terminate()

    assert supervised.process.wait(timeout=30) == 0
    assert not os.path.exists(supervised.socket)
    assert all(not Path(f"/proc/{pid}").exists() for pid in workers)


def test_jwks_process_serves_rotated_keys(supervised: Supervised) -> None:
    log = supervised.log.read_text()
    url = json.loads(next(line for line in log.splitlines() if "supervising" in line))
    jwks_url = str(url["message"]).rsplit(" at ", 1)[1] + "/.well-known/jwks.json"
    subprocess.run(
        [CLI, "keys", "rotate", "--config", str(supervised.config)],
        check=True,
        capture_output=True,
        timeout=60,
    )

    issued = request_token(supervised.socket)

    with urllib.request.urlopen(jwks_url, timeout=5) as response:  # noqa: S310
        kids = {key["kid"] for key in json.load(response)["keys"]}
    assert jwt.get_unverified_header(issued.token)["kid"] in kids
    assert len(kids) == 3  # current, next, and the retired former current


def test_watchdog_kills_stalled_worker(
    agent_users: dict[str, AgentUser], shared_dir: Path
) -> None:
    user = agent_users["ab-agent1"]
    agents = AGENTS + f'[[agent]]\nname = "agent1"\nselectors = ["uid:{user.uid}"]\n'
    config = write_config(shared_dir, agents, "stall_timeout = 1.0\n")
    rewrite(config, "processes = 1\n", "processes = 2\n")
    supervisor_pid = fork_supervisor(str(config), stall_on_uid=user.uid)
    socket_path = str(shared_dir / "run" / "agent.sock")
    try:
        assert wait_for(lambda: os.path.exists(socket_path), timeout=30)
        assert wait_for(lambda: len(children_of(supervisor_pid)) == 3, timeout=30)
        before = children_of(supervisor_pid)
        started = time.monotonic()

        stalled = subprocess.run(
            [SYSTEM_PYTHON, str(shared_dir / "helper.py"), socket_path, "once"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            **as_user(user),
        )
        elapsed = time.monotonic() - started

        assert stalled.stdout.strip() == ""  # the worker was killed before it responded
        assert 1.0 < elapsed < 10
        assert wait_for(
            lambda: len(children_of(supervisor_pid) - before) == 1, timeout=10
        )
        assert request_token(socket_path).agent == "operator"
    finally:
        os.kill(supervisor_pid, signal.SIGTERM)
        _, status = os.waitpid(supervisor_pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def fork_supervisor(config_path: str, *, stall_on_uid: int) -> int:
    """Fork a supervisor whose workers hang on requests from `stall_on_uid`."""
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        from attestor.server.supervisor import Supervisor

        daemon = Daemon(config_path, after_read=stall_for(stall_on_uid))
        Supervisor(daemon).serve_forever()
        code = 0
    finally:
        os._exit(code)


def stall_for(uid: int) -> Callable[[Peer], None]:
    def hook(peer: Peer) -> None:
        if peer.uid == uid:
            time.sleep(60)

    return hook


def test_client_sees_rejection_message(supervised: Supervised) -> None:
    rewrite(supervised.config, "uid:0", "uid:1")
    request_reload(supervised.socket)

    def rejected() -> bool:
        try:
            request_token(supervised.socket)
        except AttestorError as err:
            return err.code == "no_matching_agent"
        return False

    assert wait_for(lambda: all(rejected() for _ in range(5)), timeout=10)
