"""The socket server under slow, oversized, malformed and excessive clients."""

from __future__ import annotations

import grp
import json
import os
import socket
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from attestor.client import AttestorError, request_reload, request_token
from tests.support.attestor_env import (  # noqa: F401 (fixtures)
    AgentUser,
    Harness,
    agent_users_fixture,
    make_harness_fixture,
    shared_dir_fixture,
)

pytestmark = pytest.mark.timeout(120)

ROOT_AGENT = """
[[agent]]
name = "operator"
selectors = ["uid:0"]
"""


def exchange(path: str, payload: bytes, *, shut_write: bool = True) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(path)
        sock.sendall(payload)
        if shut_write:
            sock.shutdown(socket.SHUT_WR)
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    response: dict[str, Any] = json.loads(data)
    return response


def test_socket_has_mode_0666(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness(ROOT_AGENT)

    info = os.stat(harness.socket_path)

    assert stat.S_ISSOCK(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o666


def test_socket_group_mode_0660(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness(ROOT_AGENT, 'socket_group = "adm"\n')

    info = os.stat(harness.socket_path)

    assert stat.S_IMODE(info.st_mode) == 0o660
    assert info.st_gid == grp.getgrnam("adm").gr_gid


def test_stop_removes_socket(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness(ROOT_AGENT)
    path = harness.socket_path

    harness.daemon.socket_server.stop()

    assert not os.path.exists(path)


def test_stale_socket_is_replaced(
    shared_dir: Path, make_harness: Callable[..., Harness]
) -> None:
    (shared_dir / "run").mkdir()
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(shared_dir / "run" / "agent.sock"))
    stale.close()  # bound, never listening: what a crashed daemon leaves

    harness = make_harness(ROOT_AGENT)

    assert request_token(harness.socket_path).agent == "operator"


def test_second_daemon_refuses_live_socket(
    shared_dir: Path, make_harness: Callable[..., Harness]
) -> None:
    from attestor.server.daemon import Daemon

    harness = make_harness(ROOT_AGENT)
    second = Daemon(str(shared_dir / "attestor.toml"))

    with pytest.raises(OSError, match="another process is listening"):
        second.start()

    assert request_token(harness.socket_path).agent == "operator"


def test_malformed_requests_are_bad_requests(
    make_harness: Callable[..., Harness],
) -> None:
    harness = make_harness(ROOT_AGENT)
    cases = {
        b"not json\n": "not one JSON object",
        b'["token"]\n': "must be a JSON object",
        b'{"op": "steal"}\n': "unknown op 'steal'",
        b"x" * (64 * 1024 + 10): "exceeds 65536 bytes",
    }

    for payload, message in cases.items():
        response = exchange(harness.socket_path, payload)
        assert response["code"] == "bad_request", payload[:20]
        assert message in response["error"], payload[:20]


def test_slow_client_times_out_others_served(
    make_harness: Callable[..., Harness],
) -> None:
    harness = make_harness(ROOT_AGENT)  # request_timeout = 1.0 in the test config
    slow = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    slow.connect(harness.socket_path)
    slow.sendall(b'{"op": ')  # and never more
    started = time.monotonic()

    served = request_token(harness.socket_path)
    slow.settimeout(5)
    response = json.loads(slow.recv(65536))
    elapsed = time.monotonic() - started
    slow.close()

    assert served.agent == "operator"
    assert response["code"] == "bad_request"
    assert "no complete request within 1 s" in response["error"]
    assert 0.9 < elapsed < 3


def test_many_slow_clients_do_not_block(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness(ROOT_AGENT, "workers = 2\n")
    idle = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(6)]
    for sock in idle:
        sock.connect(harness.socket_path)

    started = time.monotonic()
    served = request_token(harness.socket_path, timeout=10)
    elapsed = time.monotonic() - started
    for sock in idle:
        sock.close()

    # Six idle clients on two workers, one second each: served within 4 s.
    assert served.agent == "operator"
    assert elapsed < 4.5


def test_rate_limit_per_uid(
    agent_users: dict[str, AgentUser], make_harness: Callable[..., Harness]
) -> None:
    user = agent_users["ab-agent1"]
    agents = (
        ROOT_AGENT + f'[[agent]]\nname = "agent1"\nselectors = ["uid:{user.uid}"]\n'
    )
    harness = make_harness(agents, "[rate_limit]\nper_uid_rate = 0.01\nburst = 2\n")

    responses = [harness.run_client(user) for _ in range(3)]
    root = request_token(harness.socket_path)

    assert [r["ok"] for r in responses] == [True, True, False]
    assert responses[2]["code"] == "rate_limited"
    assert f"uid {user.uid} exceeded 0.01 tokens per second" in responses[2]["error"]
    assert root.agent == "operator"


def test_reload_op_restricted_to_root(
    agent_users: dict[str, AgentUser], make_harness: Callable[..., Harness]
) -> None:
    user = agent_users["ab-agent1"]
    harness = make_harness(ROOT_AGENT)

    denied = harness.run_client(user, {"op": "reload"})
    request_reload(harness.socket_path)

    assert denied["code"] == "bad_request"
    assert "reload is restricted to root" in denied["error"]


def test_reload_keeps_old_config_on_error(
    shared_dir: Path, make_harness: Callable[..., Harness]
) -> None:
    harness = make_harness(ROOT_AGENT)
    config = shared_dir / "attestor.toml"
    good = config.read_text()
    config.write_text(good.replace('selectors = ["uid:0"]', 'selectors = ["uid:zero"]'))

    with pytest.raises(AttestorError) as caught:
        request_reload(harness.socket_path)
    still = request_token(harness.socket_path)

    assert caught.value.code == "internal"
    assert "keeping the previous config" in str(caught.value)
    assert f"{config}: agent 'operator': field 'selectors'" in str(caught.value)
    assert still.agent == "operator"


def test_reload_applies_new_agents(
    shared_dir: Path, make_harness: Callable[..., Harness]
) -> None:
    harness = make_harness(ROOT_AGENT)
    config = shared_dir / "attestor.toml"
    config.write_text(
        config.read_text().replace('name = "operator"', 'name = "renamed"')
    )

    request_reload(harness.socket_path)

    assert request_token(harness.socket_path).agent == "renamed"


def test_concurrent_requests_all_served(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness(ROOT_AGENT)
    results: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(20):
            issued = request_token(harness.socket_path)
            with lock:
                results.append(issued.jti)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert len(results) == 160
    assert len(set(results)) == 160


def test_pending_connections_capped_per_uid(
    make_harness: Callable[..., Harness],
) -> None:
    harness = make_harness(ROOT_AGENT)  # 1 s to send a request: ample for 64 connects
    idle = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(64)]
    for sock in idle:
        sock.connect(harness.socket_path)

    try:
        response = exchange(harness.socket_path, b'{"op": "token"}\n')
    finally:
        for sock in idle:
            sock.close()

    assert response["code"] == "rate_limited"
    assert "too many pending requests" in response["error"]
