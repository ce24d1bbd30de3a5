"""agent-exec and the signals beyond the six it always handled.

SIGALRM, SIGVTALRM, SIGPROF, SIGIO, SIGPWR, SIGSTKFLT, SIGXCPU and the
real-time signals end a process by default. agent-exec ends the call on one
before the command starts, forwards it to the command's process group while
the command runs, and ignores it during revocation. The stack tests run
against the real attestor, OpenBao, plugin and PostgreSQL of the session's
`stack` fixture. The one test of a signal during the attestor request uses
the fakes of tests/support/exec_fakes.py, because the real attestor responds
too fast to be interrupted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hvac
import psycopg
import pytest

from tests import test_agent_exec_stack
from tests.support.exec_fakes import (
    AttestorState,
    VaultState,
    fake_attestor,
    fake_vault,
)
from tests.test_agent_exec_stack import (
    AGENT_EXEC,
    WHOAMI,
    accessor_alive,
    agent_env,
    creds_delay_proxy,
    database_users,
    live_leases,
    role_exists,
    signal_while_held,
    start_exec,
)

# The stack tests' fixtures: Vault's root client and an admin connection to
# the demo database.
admin = test_agent_exec_stack.admin
pg = test_agent_exec_stack.pg

RTSIG = signal.SIGRTMIN + 3
# Every signal that agent-exec handles. The default action of each ends a
# process, and none of them is a fault signal.
HANDLED = [
    signal.SIGHUP,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGTERM,
    signal.SIGALRM,
    signal.SIGVTALRM,
    signal.SIGPROF,
    signal.SIGIO,
    signal.SIGPWR,
    signal.SIGSTKFLT,
    signal.SIGXCPU,
    *range(signal.SIGRTMIN, signal.SIGRTMAX + 1),
]


def last_record(stderr: str) -> dict[str, Any]:
    record = json.loads(stderr.strip().splitlines()[-1])
    assert isinstance(record, dict)
    return record


def mask_bits(mask: int) -> set[int]:
    """Return the signal numbers set in a /proc/PID/status mask."""
    return {signum for signum in range(1, 65) if mask >> (signum - 1) & 1}


def assert_credentials_gone(
    admin: hvac.Client,
    pg: psycopg.Connection[Any],
    record: dict[str, Any],
    users_before: set[str],
    leases_before: list[str],
) -> None:
    """Check that the call's PostgreSQL users, leases and token are gone."""
    assert record["revocation"]["ok"] is True
    assert database_users(pg) == users_before
    assert live_leases(admin) == leases_before
    assert not accessor_alive(admin, record["token_accessor"])


@pytest.mark.stack
@pytest.mark.parametrize("signum", [signal.SIGALRM, RTSIG])
def test_signal_before_command_revokes(
    stack: Any,
    admin: hvac.Client,
    pg: psycopg.Connection[Any],
    tmp_path: Path,
    signum: int,
) -> None:
    users_before = database_users(pg)
    leases_before = live_leases(admin)
    marker = tmp_path / "ran"
    args = ["--json", "--role", "demo-readonly", "--", "touch", str(marker)]
    with creds_delay_proxy(stack.vault_addr) as proxy:
        code, stderr = signal_while_held(stack, proxy, args, signum)

    assert code == 128 + signum, stderr
    assert f"interrupted by signal {signum}" in stderr
    assert not marker.exists()
    record = last_record(stderr)
    assert record["exit_code"] == 128 + signum
    assert record["child"] == {}
    assert len(record["lease_ids"]) == 1
    assert record["revocation"]["leases_revoked"] == record["lease_ids"]
    assert_credentials_gone(admin, pg, record, users_before, leases_before)


@pytest.mark.stack
@pytest.mark.parametrize(
    ("signum", "expected"), [(signal.SIGALRM, 9), (RTSIG, 128 + RTSIG)]
)
def test_signal_during_command_forwarded(
    stack: Any,
    admin: hvac.Client,
    pg: psycopg.Connection[Any],
    signum: int,
    expected: int,
) -> None:
    # The shell traps SIGALRM and exits 9, but the real-time signal kills it.
    trap = 'trap "exit 9" ALRM' if signum == signal.SIGALRM else ""
    users_before = database_users(pg)
    leases_before = live_leases(admin)
    script = f"{trap}\n{WHOAMI}; while :; do sleep 0.1; done"
    with start_exec(
        stack, "--json", "--role", "demo-readonly", "--", "sh", "-c", script
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        user = proc.stdout.readline().strip()
        assert role_exists(pg, user)
        proc.send_signal(signum)
        assert proc.wait(timeout=60) == expected
        record = last_record(proc.stderr.read())

    assert record["exit_code"] == expected
    assert record["child"]["exit_code"] == expected
    assert record["child"]["signals_forwarded"] == [
        "SIGALRM" if signum == signal.SIGALRM else "SIGRTMIN+3"
    ]
    assert record["child"]["killed_after_timeout"] is False
    assert not role_exists(pg, user)
    assert_credentials_gone(admin, pg, record, users_before, leases_before)


@contextmanager
def term_then_alarm(
    stack: Any, pg: psycopg.Connection[Any], kill_timeout: str, stop: Path
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Run a command that survives SIGTERM and SIGALRM, and send it both.

    Yield agent-exec's process and the command's database user once the
    command has reported both signals. The command exits 5 when `stop`
    exists.
    """
    script = (
        'trap "echo term" TERM; trap "echo alarm" ALRM\n'
        f"{WHOAMI}\n"
        f"while [ ! -e {stop} ]; do sleep 0.1; done; exit 5"
    )
    with start_exec(
        stack,
        "--json",
        "--role",
        "demo-readonly",
        "--kill-timeout",
        kill_timeout,
        "--",
        "sh",
        "-c",
        script,
    ) as proc:
        assert proc.stdout is not None
        user = proc.stdout.readline().strip()
        assert role_exists(pg, user)
        proc.send_signal(signal.SIGTERM)
        assert proc.stdout.readline() == "term\n"
        proc.send_signal(signal.SIGALRM)
        assert proc.stdout.readline() == "alarm\n"
        yield proc, user


@pytest.mark.stack
def test_external_alarm_not_kill_timer(
    stack: Any, admin: hvac.Client, pg: psycopg.Connection[Any], tmp_path: Path
) -> None:
    # SIGTERM arms the 30 s kill timer. A SIGALRM from elsewhere comes long
    # before its deadline, so it reaches the command instead of a SIGKILL.
    users_before = database_users(pg)
    leases_before = live_leases(admin)
    stop = tmp_path / "stop"
    with term_then_alarm(stack, pg, "30", stop) as (proc, user):
        stop.touch()
        assert proc.wait(timeout=60) == 5
        assert proc.stderr is not None
        record = last_record(proc.stderr.read())

    assert record["child"]["signals_forwarded"] == ["SIGTERM", "SIGALRM"]
    assert record["child"]["killed_after_timeout"] is False
    assert record["exit_code"] == 5
    assert not role_exists(pg, user)
    assert_credentials_gone(admin, pg, record, users_before, leases_before)


@pytest.mark.stack
def test_kill_timer_fires_after_alarm(
    stack: Any, admin: hvac.Client, pg: psycopg.Connection[Any], tmp_path: Path
) -> None:
    # The SIGALRM forwarded before the deadline leaves the kill timer armed:
    # the command, which survives SIGTERM, still gets SIGKILL 2 s after it.
    users_before = database_users(pg)
    leases_before = live_leases(admin)
    started = time.monotonic()
    with term_then_alarm(stack, pg, "2", tmp_path / "stop") as (proc, user):
        assert proc.wait(timeout=60) == 128 + signal.SIGKILL
        elapsed = time.monotonic() - started
        assert proc.stderr is not None
        record = last_record(proc.stderr.read())

    assert 2.0 <= elapsed < 10
    assert record["child"]["signals_forwarded"] == ["SIGTERM", "SIGALRM"]
    assert record["child"]["killed_after_timeout"] is True
    assert not role_exists(pg, user)
    assert_credentials_gone(admin, pg, record, users_before, leases_before)


@pytest.mark.stack
def test_ignored_vtalrm_stays_ignored(
    stack: Any, admin: hvac.Client, pg: psycopg.Connection[Any], tmp_path: Path
) -> None:
    # SIGVTALRM is ignored when agent-exec starts, as `trap ""` leaves it. It
    # ends neither the call during the creds read nor the command while it
    # runs. The command starts with it ignored, every other handled signal at
    # its default action, and no signal blocked.
    users_before = database_users(pg)
    leases_before = live_leases(admin)
    stop = tmp_path / "stop"
    status = tmp_path / "status"
    script = (
        f"cat /proc/self/status > {status}; {WHOAMI}\n"
        f"while [ ! -e {stop} ]; do sleep 0.1; done"
    )
    args = ["--json", "--role", "demo-readonly", "--", "sh", "-c", script]
    with (
        creds_delay_proxy(stack.vault_addr) as proxy,
        subprocess.Popen(
            ["sh", "-c", 'trap "" VTALRM; exec "$@"', "sh", AGENT_EXEC, *args],
            env=agent_env(stack, VAULT_ADDR=proxy.address),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as proc,
    ):
        assert proc.stdout is not None and proc.stderr is not None
        assert proxy.creds_sent_upstream.wait(timeout=30)
        proc.send_signal(signal.SIGVTALRM)
        user = proc.stdout.readline().strip()
        assert role_exists(pg, user)
        proc.send_signal(signal.SIGVTALRM)
        time.sleep(0.3)
        stop.touch()
        assert proc.wait(timeout=60) == 0
        record = last_record(proc.stderr.read())

    fields = dict(
        line.split(":\t", 1)
        for line in status.read_text().splitlines()
        if ":\t" in line
    )
    ignored = mask_bits(int(fields["SigIgn"], 16))
    assert ignored & set(HANDLED) == {signal.SIGVTALRM}
    assert int(fields["SigBlk"], 16) == 0
    assert record["child"]["signals_forwarded"] == ["SIGVTALRM"]
    assert record["child"]["exit_code"] == 0
    assert not role_exists(pg, user)
    assert_credentials_gone(admin, pg, record, users_before, leases_before)


@pytest.mark.stack
@pytest.mark.parametrize("signum", [signal.SIGALRM, signal.SIGRTMAX])
def test_revocation_ignores_handled_signals(
    stack: Any, admin: hvac.Client, pg: psycopg.Connection[Any], signum: int
) -> None:
    users_before = database_users(pg)
    leases_before = live_leases(admin)
    args = ["--json", "--role", "demo-readonly", "--", "true"]
    with creds_delay_proxy(stack.vault_addr, "/sys/leases/revoke/") as proxy:
        code, stderr = signal_while_held(stack, proxy, args, signum)

    assert code == 0, stderr
    record = last_record(stderr)
    assert record["exit_code"] == 0
    assert record["revocation"]["leases_revoked"] == record["lease_ids"]
    assert_credentials_gone(admin, pg, record, users_before, leases_before)


@pytest.mark.parametrize("signum", [signal.SIGALRM, RTSIG])
def test_signal_during_attestor_request(tmp_path: Path, signum: int) -> None:
    # The call ends at once, not after the attestor's 5 s delay, and sends
    # nothing to Vault.
    vault = VaultState(readable={"database/creds/demo-readonly"})
    attestor = AttestorState(delay=5.0)
    with (
        fake_vault(vault) as vault_addr,
        fake_attestor(attestor, tmp_path) as socket,
        subprocess.Popen(
            [AGENT_EXEC, "--role", "demo-readonly", "--", "true"],
            env={
                **os.environ,
                "VAULT_ADDR": vault_addr,
                "AGENT_ATTESTOR_SOCKET": socket,
            },
            stderr=subprocess.PIPE,
            text=True,
        ) as proc,
    ):
        deadline = time.monotonic() + 10
        while not attestor.requests and time.monotonic() < deadline:
            time.sleep(0.05)
        assert attestor.requests != []
        sent_at = time.monotonic()
        proc.send_signal(signum)
        assert proc.wait(timeout=20) == 128 + signum
        assert time.monotonic() - sent_at < 3
        assert proc.stderr is not None
        assert f"interrupted by signal {signum}" in proc.stderr.read()
    assert vault.requests == []
