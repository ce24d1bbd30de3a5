"""How the plugin process starts and ends under a real OpenBao server.

Each test starts its own server, because these tests unmount everything,
stop plugins or kill the server itself.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from tests.plugin_fixtures.openbao import (
    OpenBao,
    VaultError,
    file_sha256,
    install_echo_plugin,
    start_openbao,
    wait_for,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenBao]:
    server = start_openbao(tmp_path_factory.mktemp("openbao"))
    install_echo_plugin(server, "echo")
    server.register("echo", "echo")
    try:
        yield server
    finally:
        server.stop()


def mount_and_get_pid(bao: OpenBao, mount: str) -> int:
    bao.enable(mount, "echo")
    pid: int = bao.request("GET", f"{mount}/info")["data"]["pid"]
    return pid


def test_disabling_every_mount_leaves_nothing(bao: OpenBao) -> None:
    mount_and_get_pid(bao, "a")
    mount_and_get_pid(bao, "b")
    assert len(bao.plugin_processes()) == 1
    assert len(bao.work_dirs()) == 1

    bao.disable("a")
    bao.disable("b")

    assert wait_for(lambda: not bao.plugin_processes(), 5)
    assert wait_for(lambda: not bao.work_dirs(), 5)
    assert list(bao.tmp_dir.iterdir()) == []


def test_sigterm_stops_and_cleans_up(bao: OpenBao) -> None:
    pid = mount_and_get_pid(bao, "a")
    os.kill(pid, signal.SIGTERM)

    assert wait_for(lambda: not bao.plugin_processes(), 5)
    assert bao.work_dirs() == []


def test_plugin_exits_when_vault_is_killed(bao: OpenBao) -> None:
    pid = mount_and_get_pid(bao, "a")
    bao.process.send_signal(signal.SIGKILL)
    bao.process.wait()

    assert wait_for(lambda: not _running(pid), 5)
    assert wait_for(lambda: bao.work_dirs() == [], 2)


def test_wrong_sha256_is_rejected(bao: OpenBao) -> None:
    install_echo_plugin(bao, "tampered")
    bao.register("tampered", "tampered", sha256="0" * 64)

    with pytest.raises(VaultError) as failure:
        bao.enable("t", "tampered")

    assert "checksums did not match" in " ".join(failure.value.errors)
    assert bao.plugin_processes() == []


def test_version_mismatch_is_rejected(bao: OpenBao) -> None:
    with pytest.raises(VaultError) as failure:
        bao.request(
            "PUT",
            "sys/plugins/catalog/secret/echo",
            {
                "sha256": file_sha256(bao.plugin_dir / "echo"),
                "command": "echo",
                "version": "v9.9.9",
            },
        )

    assert "did not match requested version" in " ".join(failure.value.errors)


def test_version_from_environment(bao: OpenBao) -> None:
    sha256 = file_sha256(bao.plugin_dir / "echo")
    bao.request(
        "PUT",
        "sys/plugins/catalog/secret/echo",
        {
            "sha256": sha256,
            "command": "echo",
            "version": "v2.3.4",
            "env": ["AGENT_BRIDGE_PLUGIN_VERSION=v2.3.4"],
        },
    )
    bao.request("POST", "sys/mounts/v", {"type": "echo", "plugin_version": "v2.3.4"})

    mount = bao.request("GET", "sys/mounts/v")["data"]
    assert mount["running_plugin_version"] == "v2.3.4"


def test_stale_work_dir_is_removed_on_start(bao: OpenBao) -> None:
    pid = mount_and_get_pid(bao, "a")
    os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: not _running(pid), 5)
    assert len(bao.work_dirs()) == 1  # SIGKILL leaves the folder behind

    new_pid = _pid_after_restart(bao, "a")

    assert new_pid != pid
    assert [d.name.split("-")[3] for d in bao.work_dirs()] == [str(new_pid)]


def _pid_after_restart(bao: OpenBao, mount: str) -> int:
    for _ in range(10):
        try:
            pid: int = bao.request("GET", f"{mount}/info")["data"]["pid"]
            return pid
        except VaultError:
            wait_for(lambda: False, 0.3)
    raise AssertionError(f"mount {mount} did not answer after the plugin restarted")


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
