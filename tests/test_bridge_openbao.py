"""The plugin bridge against a real OpenBao server, through the echo backend.

One server serves the module; the plugin is the echo test plugin, started
by OpenBao from a launcher script in its plugin directory. Tests that kill
processes or unmount everything use plugin names of their own.
"""

from __future__ import annotations

import os
import re
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.plugin_fixtures.echo_backend import HELP_TEXT
from tests.plugin_fixtures.openbao import (
    OpenBao,
    VaultError,
    install_echo_plugin,
    start_openbao,
    wait_for,
)

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenBao]:
    server = start_openbao(tmp_path_factory.mktemp("openbao"))
    install_echo_plugin(server, "echo")
    server.register("echo", "echo")
    server.enable("e1", "echo")
    try:
        yield server
    finally:
        server.stop()


def plugin_pid(bao: OpenBao, mount: str) -> int:
    pid: int = bao.request("GET", f"{mount}/info")["data"]["pid"]
    return pid


def test_kv_roundtrip_through_plugin(bao: OpenBao) -> None:
    bao.request("POST", "e1/kv/alpha", {"colour": "green", "n": 3})
    bao.request("POST", "e1/kv/beta", {"colour": "blue"})

    assert bao.request("GET", "e1/kv/alpha")["data"] == {"colour": "green", "n": 3}
    assert bao.request("LIST", "e1/kv/")["data"]["keys"] == ["alpha", "beta"]
    bao.request("DELETE", "e1/kv/beta")
    with pytest.raises(VaultError) as missing:
        bao.request("GET", "e1/kv/beta")
    assert missing.value.status == 404


def test_list_page_through_plugin(bao: OpenBao) -> None:
    for key in ("p1", "p2", "p3", "p4", "p5"):
        bao.request("POST", f"e1/kv/{key}", {"n": key})

    def page(after: str, limit: int) -> list[str]:
        query = f"page_after={after}&page_limit={limit}"
        keys: list[str] = bao.request("LIST", f"e1/kv/?{query}")["data"]["keys"]
        return keys

    everything: list[str] = bao.request("LIST", "e1/kv/")["data"]["keys"]
    assert {"p1", "p2", "p3", "p4", "p5"} <= set(everything)
    assert page("", 2) == everything[:2]
    assert page(everything[1], 2) == everything[2:4]
    assert page(everything[3], 0) == everything[4:]
    assert page("p2", 2)[0] == "p3"
    for key in ("p1", "p2", "p3", "p4", "p5"):
        bao.request("DELETE", f"e1/kv/{key}")


def test_large_value_round_trip(bao: OpenBao) -> None:
    # 6 MiB is above gRPC's default 4 MiB message limit, in the request to
    # the plugin, in the storage put and get through the broker, and back.
    big = "x" * (6 * 1024 * 1024)
    bao.request("POST", "e1/kv/big", {"blob": big})

    assert bao.request("GET", "e1/kv/big")["data"]["blob"] == big
    bao.request("DELETE", "e1/kv/big")


def test_system_view_and_request_fields(bao: OpenBao) -> None:
    info = bao.request("GET", "e1/info")["data"]

    assert info["mount_point"] == "e1/"
    assert info["default_lease_ttl"] == 768 * 3600
    assert info["max_lease_ttl"] == 768 * 3600
    assert re.fullmatch(r"\d+\.\d+\.\d+", info["vault_version"])
    assert info["display_name"] == "token"
    assert info["config"]["plugin_name"] == "echo"


def test_existence_check_reaches_backend(bao: OpenBao) -> None:
    bao.request("POST", "e1/kv/checked", {"a": 1})
    bao.request("POST", "e1/kv/checked", {"a": 2})

    counts = bao.request("GET", "e1/stats")["data"]["counts"]
    assert counts["existence-check"] >= 2
    assert counts["create"] >= 1
    assert counts["update"] >= 1


@pytest.mark.parametrize(
    ("kind", "status", "message"),
    [
        ("bad_request", 400, "echo failure of kind bad_request"),
        ("permission_denied", 403, "echo failure of kind permission_denied"),
        ("unsupported_path", 404, "unsupported path"),
        ("unsupported_operation", 405, "unsupported operation"),
        ("internal", 500, "echo failure of kind internal"),
    ],
)
def test_error_kinds_map_to_status(
    bao: OpenBao, kind: str, status: int, message: str
) -> None:
    with pytest.raises(VaultError) as failure:
        bao.request("GET", f"e1/fail/{kind}")

    assert failure.value.status == status
    assert message in " ".join(failure.value.errors)


def test_crash_hides_exception_text(bao: OpenBao) -> None:
    with pytest.raises(VaultError) as failure:
        bao.request("GET", "e1/fail/crash")

    text = " ".join(failure.value.errors)
    assert failure.value.status == 500
    assert "do-not-leak" not in text
    assert "request id" in text


def test_path_help_shows_backend_help(bao: OpenBao) -> None:
    help_reply = bao.request("GET", "e1/kv/alpha?help=1")

    assert help_reply["help"] == HELP_TEXT


def test_lease_renew_and_revoke(bao: OpenBao) -> None:
    creds = bao.request("GET", "e1/creds/app")
    serial = creds["data"]["serial"]
    lease_id = creds["lease_id"]

    assert creds["lease_duration"] == 300
    assert creds["renewable"] is True
    bao.request("PUT", "sys/leases/renew", {"lease_id": lease_id, "increment": 60})
    bao.request("PUT", "sys/leases/revoke", {"lease_id": lease_id, "sync": True})

    status = bao.request("GET", f"e1/creds-status/{serial}")["data"]
    assert status == {"issued": False, "revoked": True, "renewed": True}


def test_resolve_path_sent_before_requests(bao: OpenBao) -> None:
    bao.request("GET", "e1/info")

    counts = bao.request("GET", "e1/stats")["data"]["counts"]
    assert counts["resolve-path"] >= 1


def test_version_shows_in_plugin_info(bao: OpenBao) -> None:
    info = bao.request("GET", "sys/plugins/catalog/secret/echo?version=v0.1.0")

    assert info["data"]["version"] == "v0.1.0"
    mount = bao.request("GET", "sys/mounts/e1")
    assert mount["data"]["running_plugin_version"] == "v0.1.0"


def test_noisy_import_reaches_vault_log(bao: OpenBao) -> None:
    # The echo plugin imports a module that prints; the print must arrive in
    # Vault's log through the stdio stream instead of breaking the handshake.
    found = wait_for(lambda: "noisy_module: imported" in bao.log_path.read_text(), 5)

    assert found


def test_plugin_logs_at_vaults_level(bao: OpenBao) -> None:
    # The server runs with BAO_LOG_LEVEL=debug, which the plugin inherits, so
    # its per-request debug line must reach Vault's log. Vault parsed the
    # line if it shows key/value pairs such as @module instead of raw JSON.
    bao.request("GET", "e1/info")
    text = bao.log_path.read_text()

    assert "request handled: " in text
    assert "@module=plugin.bridge.dispatch" in text
    assert '"@level"' not in text


def test_multiplexed_mounts_keep_storage_apart(bao: OpenBao) -> None:
    bao.enable("m1", "echo", {"flavour": "one"}, {"default_lease_ttl": "1h"})
    bao.enable("m2", "echo", {"flavour": "two"})
    m1_info = bao.request("GET", "m1/info")["data"]
    m2_info = bao.request("GET", "m2/info")["data"]
    bao.request("POST", "m1/kv/shared-name", {"owner": "m1"})
    bao.request("POST", "m2/kv/shared-name", {"owner": "m2"})

    assert bao.request("GET", "m1/kv/shared-name")["data"] == {"owner": "m1"}
    assert bao.request("GET", "m2/kv/shared-name")["data"] == {"owner": "m2"}
    with pytest.raises(VaultError):
        bao.request("GET", "e1/kv/shared-name")
    assert m1_info["config"]["flavour"] == "one"
    assert m2_info["config"]["flavour"] == "two"
    assert m1_info["default_lease_ttl"] == 3600
    assert m2_info["default_lease_ttl"] == 768 * 3600
    assert m1_info["pid"] == m2_info["pid"] == plugin_pid(bao, "e1")
    assert len(bao.plugin_processes()) == 1
    bao.disable("m1")
    bao.disable("m2")


def test_revoke_during_concurrent_reads(bao: OpenBao) -> None:
    creds = bao.request("GET", "e1/creds/busy?revoke_delay_ms=300")
    failures: list[BaseException] = []

    def read_many() -> None:
        try:
            for _ in range(5):
                bao.request("GET", "e1/sleep?ms=30")
        except BaseException as err:  # every failure counts, whatever its type
            failures.append(err)

    readers = [threading.Thread(target=read_many) for _ in range(20)]
    for reader in readers:
        reader.start()
    bao.request(
        "PUT", "sys/leases/revoke", {"lease_id": creds["lease_id"], "sync": True}
    )
    for reader in readers:
        reader.join(timeout=60)

    assert failures == []
    status = bao.request("GET", f"e1/creds-status/{creds['data']['serial']}")
    assert status["data"]["revoked"] is True


def test_sigint_is_ignored(bao: OpenBao) -> None:
    pid = plugin_pid(bao, "e1")
    os.kill(pid, signal.SIGINT)

    assert bao.request("GET", "e1/info")["data"]["pid"] == pid


def test_kill_9_then_next_request_restarts(bao: OpenBao) -> None:
    pid = plugin_pid(bao, "e1")
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: all(p.pid != pid for p in bao.plugin_processes()), 5)

    # Vault notices the dead plugin on the first call after the kill and
    # starts a new process. The retry covers a call that races the restart.
    new_pid = _read_pid_with_retry(bao, "e1")
    assert new_pid != pid
    assert bao.request("GET", "e1/kv/alpha")["data"]["colour"] == "green"
    # Vault initializes the new process, with storage, before its first request.
    assert bao.request("GET", "e1/info")["data"]["initialized_by"] == new_pid


def test_plugin_reload_starts_new_process(bao: OpenBao) -> None:
    pid = plugin_pid(bao, "e1")
    bao.request("PUT", "sys/plugins/reload/backend", {"plugin": "echo"})

    new_pid = _read_pid_with_retry(bao, "e1")
    assert new_pid != pid
    assert wait_for(lambda: not _alive(pid), 5)


def _read_pid_with_retry(bao: OpenBao, mount: str) -> int:
    for _ in range(10):
        try:
            return plugin_pid(bao, mount)
        except VaultError:
            threading.Event().wait(0.3)
    return plugin_pid(bao, mount)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in _proc_state(pid)


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return "Z"


# Shell launchers around the echo plugin. The first fails its first start
# only. The second exits at every protocol 5 start, so OpenBao runs the
# plugin through its fallback client alone: metadata mode, then TLS from a
# wrapping token.
FAILS_FIRST_START = """\
#!/bin/sh
if [ ! -e '{marker}' ]; then : > '{marker}'; exit 1; fi
exec '{plugin}' "$@"
"""
EXITS_ON_V5 = """\
#!/bin/sh
case "$PLUGIN_PROTOCOL_VERSIONS" in *5*) : > '{marker}'; exit 1;; esac
exec '{plugin}' "$@"
"""


@pytest.mark.parametrize(
    ("name", "launcher", "protocol"),
    [("echo-first-fails", FAILS_FIRST_START, "5"), ("echo-no-v5", EXITS_ON_V5, "4")],
    ids=["first-start-fails", "v5-always-fails"],
)
def test_failed_v5_start_falls_back(
    bao: OpenBao, name: str, launcher: str, protocol: str
) -> None:
    """A mount whose protocol 5 start fails is mounted through OpenBao's v4 client."""
    install_echo_plugin(bao, "echo-real")
    marker = bao.folder / f"{name}-failed"
    path = bao.plugin_dir / name
    path.write_text(launcher.format(marker=marker, plugin=bao.plugin_dir / "echo-real"))
    path.chmod(0o755)
    bao.register(name, name)
    mount = f"{name}-mount"

    bao.enable(mount, name)
    bao.request("PUT", f"{mount}/kv/beta", {"colour": "blue"})
    # The fallback client restarts a killed process the same way.
    pid = plugin_pid(bao, mount)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: all(p.pid != pid for p in bao.plugin_processes()), 5)
    new_pid = _read_pid_with_retry(bao, mount)

    assert marker.exists()
    assert new_pid != pid
    assert bao.request("GET", f"{mount}/kv/beta")["data"] == {"colour": "blue"}
    log = bao.log_path.read_text()
    assert f"successfully dispensed v4 backend plugin: name={name}" in log
    # Serving processes, not the metadata-mode ones, each with its protocol.
    served = [
        line
        for line in log.splitlines()
        if f"secrets.{name}." in line
        and "plugin started: " in line
        and "@module=plugin.bridge.server" in line
        and "metadata=true" not in line
    ]
    assert len(served) == 2
    for line in served:
        assert re.search(rf"\bprotocol={protocol}\b", line), line
    bao.disable(mount)
