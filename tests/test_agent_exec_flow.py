"""agent-exec as a real process, against a fake Vault and a fake attestor socket.

Commands, signals, process groups and exit codes are real; only Vault and
the attestor are stand-ins (tests/support/exec_fakes.py). The same
behaviours against the real stack are in test_agent_exec_stack.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.exec_fakes import (
    AttestorState,
    VaultState,
    fake_attestor,
    fake_vault,
)

AGENT_EXEC = str(Path(sys.executable).parent / "agent-exec")
DB_ROLE = "database/creds/demo-readonly"
AWS_ROLE = "aws/creds/deploy"


@dataclass
class Fakes:
    vault: VaultState
    attestor: AttestorState
    vault_addr: str
    socket: str
    tmp: Path

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "VAULT_ADDR": self.vault_addr,
            "AGENT_ATTESTOR_SOCKET": self.socket,
            **extra,
        }

    def run(self, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [AGENT_EXEC, *args],
            env=self.env(**extra_env),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [AGENT_EXEC, *args],
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


@pytest.fixture
def fakes(tmp_path: Path) -> Iterator[Fakes]:
    vault = VaultState(readable={DB_ROLE, AWS_ROLE})
    attestor = AttestorState()
    with fake_vault(vault) as addr, fake_attestor(attestor, tmp_path) as sock:
        yield Fakes(vault, attestor, addr, sock, tmp_path)


def wait_for(check: object, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(check) and check():
            return True
        time.sleep(0.05)
    return False


def process_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def assert_all_revoked(fakes: Fakes) -> None:
    assert fakes.vault.live_leases() == []
    assert fakes.vault.tokens == {}
    assert len(fakes.vault.revoked_tokens) == 1


def test_exit_code_passes_through(fakes: Fakes) -> None:
    result = fakes.run("--role", "demo-readonly", "--", "sh", "-c", "exit 3")
    assert result.returncode == 3, result.stderr
    assert len(fakes.vault.revoked_leases) == 1
    assert_all_revoked(fakes)


def test_missing_command_mints_nothing(fakes: Fakes) -> None:
    result = fakes.run("--role", "demo-readonly", "--", "no-such-command-4c1d")
    assert result.returncode == 127
    assert "command not found" in result.stderr
    assert fakes.attestor.requests == []
    assert fakes.vault.requests == []


@pytest.mark.parametrize(
    ("first_line", "mode", "code", "message"),
    [
        ("#!/bin/sh", 0o644, 126, "permission denied"),
        (
            "#!/nonexistent/interpreter",
            0o755,
            127,
            "'/nonexistent/interpreter', named on its #! line",
        ),
    ],
)
def test_not_executable_mints_nothing(
    fakes: Fakes, first_line: str, mode: int, code: int, message: str
) -> None:
    script = fakes.tmp / "script.sh"
    script.write_text(f"{first_line}\necho hi\n")
    script.chmod(mode)
    result = fakes.run("--role", "demo-readonly", "--", str(script))
    assert result.returncode == code
    assert message in result.stderr
    assert fakes.attestor.requests == []
    assert fakes.vault.requests == []


@pytest.mark.parametrize(
    ("option", "value"), [("--tool", "ps\tql"), ("--on-behalf-of", "")]
)
def test_invalid_assertion_sends_nothing(fakes: Fakes, option: str, value: str) -> None:
    result = fakes.run("--role", "demo-readonly", option, value, "--", "true")
    assert result.returncode == 64
    assert f"invalid {option} value" in result.stderr
    assert fakes.attestor.requests == []
    assert fakes.vault.requests == []


def test_signal_death_is_128_plus_n(fakes: Fakes) -> None:
    result = fakes.run("--role", "demo-readonly", "--", "sh", "-c", "kill -9 $$")
    assert result.returncode == 137
    assert_all_revoked(fakes)


def test_environment_scrubbed_for_grandchild(fakes: Fakes) -> None:
    inherited = {
        "VAULT_TOKEN": "inherited-vault-token",
        "BAO_TOKEN": "inherited-bao-token",
        "PGPASSWORD": "inherited-pg-password",
        "DATABASE_URL": "postgresql://inherited",
        "AWS_SECRET_ACCESS_KEY": "inherited-aws-secret",
    }
    # The pause lets the background shell exec sleep before its environ is read.
    script = "env; sleep 2 & sleep 0.3; tr '\\0' '\\n' < /proc/$!/environ; wait"
    result = fakes.run("--role", "demo-readonly", "--", "sh", "-c", script, **inherited)
    assert result.returncode == 0, result.stderr
    for value in inherited.values():
        assert value not in result.stdout
    for name in ("VAULT_ADDR", "AGENT_ATTESTOR_SOCKET", "X-Vault-Token"):
        assert name not in result.stdout
    assert fakes.socket not in result.stdout
    assert fakes.attestor.issued[0] not in result.stdout
    assert fakes.vault.issued_tokens[0] not in result.stdout
    # Once from env, once from the grandchild's /proc/PID/environ.
    assert result.stdout.count("PGPASSWORD=p@ss/w:rd") == 2
    assert "DATABASE_URL=postgresql://v-dev-1:p%40ss%2Fw%3Ard@127.0.0.1:5432/demo" in (
        result.stdout
    )


def test_aws_role_environment(fakes: Fakes) -> None:
    result = fakes.run("--role", "aws/deploy", "--", "env")
    assert result.returncode == 0, result.stderr
    assert "AWS_ACCESS_KEY_ID=AKIAFAKE" in result.stdout
    assert "AWS_SECRET_ACCESS_KEY=fake/secret" in result.stdout
    assert "AWS_ENDPOINT_URL=http://127.0.0.1:1" in result.stdout
    assert "AWS_REGION=eu-west-1" in result.stdout
    assert "AWS_SESSION_TOKEN" not in result.stdout
    assert "PGPASSWORD" not in result.stdout


def test_sigterm_reaches_trapping_child(fakes: Fakes) -> None:
    script = 'trap "exit 7" TERM; echo ready; while :; do sleep 0.1; done'
    with fakes.start("--role", "demo-readonly", "--", "sh", "-c", script) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 7
        assert_all_revoked(fakes)


def test_kill_timeout_sends_sigkill(fakes: Fakes) -> None:
    script = 'trap "" TERM; echo ready; sleep 30'
    with fakes.start(
        "--role", "demo-readonly", "--kill-timeout", "0.5", "--", "sh", "-c", script
    ) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 128 + signal.SIGKILL
        assert time.monotonic() - started < 10
        assert_all_revoked(fakes)


def test_second_role_denied_revokes_first(fakes: Fakes) -> None:
    fakes.vault.plugin_denies.add(AWS_ROLE)
    marker = fakes.tmp / "ran"
    result = fakes.run(
        "--role",
        "database/demo-readonly",
        "--role",
        "aws/deploy",
        "--",
        "touch",
        str(marker),
    )
    assert result.returncode == 77
    assert "allowed_agents" in result.stderr
    assert not marker.exists()
    assert len(fakes.vault.minted()) == 2
    assert len(fakes.vault.revoked_leases) == 1
    assert_all_revoked(fakes)


def test_role_outside_policy_mints_nothing(fakes: Fakes) -> None:
    result = fakes.run("--role", "demo-readonly", "--role", "other", "--", "true")
    assert result.returncode == 77
    assert "not allowed" in result.stderr
    assert fakes.vault.minted() == []
    assert_all_revoked(fakes)


@pytest.mark.parametrize(
    "roles",
    [
        ["both"],
        ["both", "both"],
        ["both", "database/both"],
        ["database/both", "both"],
        ["aws/both", "both"],
        ["both", "aws/both"],
    ],
)
def test_ambiguous_role_asks_for_prefix(fakes: Fakes, roles: list[str]) -> None:
    # A prefixed value does not settle a bare one, because the bare `both`
    # may mean the other engine's role.
    fakes.vault.readable.update({"database/creds/both", "aws/creds/both"})
    options = [option for role in roles for option in ("--role", role)]
    result = fakes.run(*options, "--", "true")
    assert result.returncode == 64
    assert "'database/both'" in result.stderr
    assert fakes.vault.minted() == []


@pytest.mark.parametrize(
    "roles",
    [
        ["demo-readonly", "second"],
        ["database/demo-readonly", "demo-readonly", "database/second"],
    ],
)
def test_two_database_roles_rejected(fakes: Fakes, roles: list[str]) -> None:
    fakes.vault.readable.add("database/creds/second")
    options = [option for role in roles for option in ("--role", role)]
    result = fakes.run(*options, "--", "true")
    assert result.returncode == 64
    assert "both database roles" in result.stderr
    assert fakes.vault.minted() == []


@pytest.mark.parametrize(
    "roles",
    [
        ["database/demo-readonly", "demo-readonly"],
        ["demo-readonly", "database/demo-readonly", "demo-readonly"],
    ],
)
def test_same_role_twice_read_once(fakes: Fakes, roles: list[str]) -> None:
    options = [option for role in roles for option in ("--role", role)]
    result = fakes.run("--json", *options, "--", "sh", "-c", "echo $PGUSER")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "v-dev-1\n"
    assert fakes.vault.minted() == [f"agent-creds/{DB_ROLE}"]
    record = json.loads(result.stderr.strip().splitlines()[-1])
    assert record["roles"] == ["database/demo-readonly"]
    assert len(record["lease_ids"]) == 1
    assert_all_revoked(fakes)


def test_attestor_rejection_is_denied(fakes: Fakes) -> None:
    fakes.attestor.failure = "no_matching_agent"
    result = fakes.run("--role", "demo-readonly", "--", "true")
    assert result.returncode == 77
    assert "attestor rejected" in result.stderr
    assert fakes.vault.requests == []


def test_socket_not_attestor_is_unavailable(fakes: Fakes) -> None:
    path = str(fakes.tmp / "echo.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen()

    def echo() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.sendall(conn.recv(65536))

    thread = threading.Thread(target=echo, daemon=True)
    thread.start()
    try:
        result = fakes.run(
            "--role", "demo-readonly", "--attestor-socket", path, "--", "true"
        )
    finally:
        listener.close()
        thread.join(timeout=5)
    assert result.returncode == 69, result.stderr
    assert f"attestor at {path} sent a JSON object without 'ok'" in result.stderr
    assert "belongs to agent-attestor" in result.stderr
    assert fakes.vault.requests == []


def test_vault_down_is_unavailable(fakes: Fakes) -> None:
    result = fakes.run(
        "--role", "demo-readonly", "--vault-addr", "http://127.0.0.1:9", "--", "true"
    )
    assert result.returncode == 69
    assert "cannot reach Vault at http://127.0.0.1:9" in result.stderr


HTML_404 = b"<html><body>Not Found</body></html>"
ADDRESS_HINT = "check --vault-addr (or VAULT_ADDR)"
NOT_VAULT_HINT = "check that --vault-addr (or VAULT_ADDR) is the address of Vault"


@pytest.mark.parametrize(
    ("response", "message", "hint"),
    [
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n{}",
            "cannot reach Vault at {addr}: POST {addr}/v1/auth/jwt/login failed: "
            "invalid Content-Length header 'abc'",
            ADDRESS_HINT,
        ),
        (
            b"HTTP/1.1 404 Not Found\r\nContent-Length: %d\r\n\r\n%s"
            % (len(HTML_404), HTML_404),
            "the response of {addr} to POST auth/jwt/login is not JSON (status 404)",
            NOT_VAULT_HINT,
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
            "the response of {addr} to auth/jwt/login has no token",
            NOT_VAULT_HINT,
        ),
    ],
)
def test_not_vault_is_unavailable(
    fakes: Fakes, response: bytes, message: str, hint: str
) -> None:
    listener = socket.create_server(("127.0.0.1", 0))

    def answer() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                with conn:
                    conn.recv(65536)
                    conn.sendall(response)

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    addr = f"http://127.0.0.1:{listener.getsockname()[1]}"
    try:
        result = fakes.run(
            "--role", "demo-readonly", "--vault-addr", addr, "--", "true"
        )
    finally:
        listener.shutdown(socket.SHUT_RDWR)  # wakes the accept
        listener.close()
        thread.join(timeout=5)
    assert result.returncode == 69, result.stderr
    assert message.format(addr=addr) in result.stderr
    assert hint in result.stderr
    assert "internal error" not in result.stderr


def test_revocation_failure_wins(fakes: Fakes) -> None:
    fakes.vault.failing_revokes.add("*")
    result = fakes.run("--role", "demo-readonly", "--", "sh", "-c", "exit 3")
    assert result.returncode == 125
    assert "the database is unreachable" in result.stderr
    assert "exit status was 3" in result.stderr


def test_revocation_failure_before_command(fakes: Fakes) -> None:
    # The second read is denied, so the command never runs. The first lease's
    # revocation fails too, so stderr names the code that 125 replaced.
    fakes.vault.plugin_denies.add(AWS_ROLE)
    fakes.vault.failing_revokes.add("*")
    marker = fakes.tmp / "ran"
    roles = ["--role", "database/demo-readonly", "--role", "aws/deploy"]
    result = fakes.run("--json", *roles, "--", "touch", str(marker))
    assert result.returncode == 125
    assert not marker.exists()
    assert "allowed_agents" in result.stderr
    assert "the database is unreachable" in result.stderr
    assert "command's own exit status" not in result.stderr
    assert "the command did not run" in result.stderr
    assert "would otherwise have been 77" in result.stderr
    record = json.loads(result.stderr.strip().splitlines()[-1])
    assert record["exit_code"] == 125
    assert record["child"] == {}
    assert record["policy"]["decision"] == "denied"


def test_revocation_failure_printed_once(fakes: Fakes) -> None:
    fakes.vault.failing_revokes.add("*")
    result = fakes.run("--json", "--role", "demo-readonly", "--", "sh", "-c", "exit 3")
    assert result.returncode == 125
    *messages, record_line = result.stderr.strip().splitlines()
    record = json.loads(record_line)
    assert record["exit_code"] == 125
    assert record["child"]["exit_code"] == 3
    lease_id = record["lease_ids"][0]
    failures = [line for line in messages if lease_id in line]
    assert len(failures) == 1, result.stderr
    assert "the database is unreachable" in failures[0]
    assert "vault lease revoke" in failures[0]
    assert sum("exiting with 125" in line for line in messages) == 1


def test_token_revocation_failure(fakes: Fakes) -> None:
    fakes.vault.failing_token_revoke = True
    result = fakes.run("--json", "--role", "demo-readonly", "--", "sh", "-c", "exit 3")
    assert result.returncode == 125
    *messages, record_line = result.stderr.strip().splitlines()
    record = json.loads(record_line)
    assert messages == [
        "agent-exec: revocation of the call's token failed: Vault failed POST "
        "auth/token/revoke-self: failed to revoke the token: the storage is "
        "unreachable; it stays valid until its TTL ends, at most "
        f"{fakes.vault.token_ttl} s from now; an operator can revoke it first with "
        f"'vault token revoke -accessor {record['token_accessor']}'",
        "agent-exec: exiting with 125 for the failed revocation; the command's "
        "own exit status was 3",
    ]
    for secret in (fakes.vault.issued_tokens[0], fakes.attestor.issued[0]):
        assert secret not in result.stderr
    assert "p@ss/w:rd" not in result.stderr
    assert record["exit_code"] == 125
    assert record["child"]["exit_code"] == 3
    revocation = record["revocation"]
    assert revocation["ok"] is False
    assert revocation["token_revoked"] is False
    assert "the storage is unreachable" in revocation["token_error"]
    assert revocation["leases_revoked"] == record["lease_ids"]
    assert revocation["leases_failed"] == {}
    # The lease is gone, and the token outlives the call in the fake Vault.
    assert fakes.vault.live_leases() == []
    assert list(fakes.vault.tokens) == fakes.vault.issued_tokens


def test_watchdog_names_failed_lease(fakes: Fakes) -> None:
    fakes.vault.failing_revokes.add("*")
    script = "echo ready; exec sleep 30"
    with fakes.start("--role", "demo-readonly", "--", "sh", "-c", script) as proc:
        assert proc.stdout is not None
        # The command runs only after agent-exec sent the lease id to the watchdog.
        assert proc.stdout.readline() == "ready\n"
        lease_id = fakes.vault.live_leases()[0]
        proc.kill()
        proc.wait(timeout=10)
        assert proc.stderr is not None
        # The watchdog keeps agent-exec's stderr open until it has reported.
        messages = proc.stderr.read().splitlines()
    assert [line for line in messages if lease_id in line] == [
        line for line in messages if line.startswith("agent-exec watchdog:")
    ]
    assert len(messages) == 1, messages
    assert "FAILED to revoke" in messages[0]
    assert "the database is unreachable" in messages[0]
    assert "may stay valid until its lease or TTL ends" in messages[0]


def test_watchdog_accepts_token_already_gone(fakes: Fakes) -> None:
    """A token revoked before agent-exec died is not reported as a failure."""
    script = "echo ready; exec sleep 30"
    with fakes.start("--role", "demo-readonly", "--", "sh", "-c", script) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        # The token ends as if agent-exec had revoked it, or its TTL ran out,
        # just before agent-exec died: Vault revokes its leases with it.
        with fakes.vault.lock:
            token = fakes.vault.issued_tokens[0]
            fakes.vault.revoked_tokens.append(fakes.vault.tokens.pop(token))
            for lease_id in list(fakes.vault.leases):
                del fakes.vault.leases[lease_id]
        started = time.monotonic()
        proc.kill()
        proc.wait(timeout=10)
        assert proc.stderr is not None
        messages = proc.stderr.read().splitlines()
        elapsed = time.monotonic() - started

    assert len(messages) == 1, messages
    assert "already revoked or expired" in messages[0]
    assert "FAILED" not in messages[0]
    assert elapsed < 5


def test_sigkill_of_agent_exec_revokes(fakes: Fakes) -> None:
    script = "sleep 60 & echo $!; wait"
    with fakes.start("--role", "demo-readonly", "--", "sh", "-c", script) as proc:
        assert proc.stdout is not None
        grandchild = int(proc.stdout.readline())
        assert fakes.vault.live_leases() != []
        proc.kill()
        proc.wait(timeout=10)
        assert wait_for(
            lambda: not fakes.vault.live_leases() and not fakes.vault.tokens
        )
        assert wait_for(lambda: process_gone(grandchild))


def test_group_sigkill_before_watchdog_detached(fakes: Fakes) -> None:
    """A SIGKILL to agent-exec's group before the watchdog left it mints nothing.

    strace delays the watchdog's setsid by 3 s, and the group is killed after
    1 s, while the watchdog is still a member. Credentials read by then would
    outlive both processes until their TTL.
    """
    strace = shutil.which("strace")
    assert strace is not None, "strace is required: scripts/test installs it"
    command = [
        strace,
        "--seccomp-bpf",
        "-f",
        "-qq",
        "-o",
        "/dev/null",
        "-e",
        "trace=setsid",
        "-e",
        "inject=setsid:delay_enter=3000000",
        AGENT_EXEC,
        "--role",
        "demo-readonly",
        "--",
        "sleep",
        "30",
    ]
    with subprocess.Popen(
        command,
        env=fakes.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    ) as proc:
        # The login completes first: the token is the one thing that may stay.
        assert wait_for(lambda: fakes.vault.issued_tokens, timeout=10)
        time.sleep(1.0)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    assert fakes.vault.minted() == []
    assert fakes.vault.live_leases() == []


def test_forwarded_sigterm_reaches_stopped_command(fakes: Fakes) -> None:
    """SIGTERM to agent-exec ends a stopped command without the kill timeout."""
    script = "trap 'exit 7' TERM; echo ready; kill -STOP $$; sleep 30"
    with fakes.start(
        "--kill-timeout", "20", "--role", "demo-readonly", "--", "bash", "-c", script
    ) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.3)  # the command stops itself right after the line
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
        elapsed = time.monotonic() - started

    assert code == 7
    assert elapsed < 10
    assert_all_revoked(fakes)


def test_leftover_processes_are_killed(fakes: Fakes) -> None:
    result = fakes.run(
        "--role", "demo-readonly", "--", "sh", "-c", "sleep 30 & echo $!"
    )
    assert result.returncode == 0
    assert wait_for(lambda: process_gone(int(result.stdout)), timeout=2)


def test_process_left_group_is_killed(fakes: Fakes) -> None:
    # The background process leaves the command's process group and session,
    # so only agent-exec, its subreaper, can still find it. The command
    # exits once that process has written its PID, after its setsid.
    pid_file = fakes.tmp / "escaped.pid"
    escape = (
        "import os, time; os.setsid(); print(os.getpid(), flush=True); time.sleep(30)"
    )
    script = (
        f"{sys.executable} -c '{escape}' > {pid_file} & "
        f"while [ ! -s {pid_file} ]; do sleep 0.05; done"
    )
    result = fakes.run("--role", "demo-readonly", "--json", "--", "sh", "-c", script)
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stderr.strip().splitlines()[-1])
    assert record["child"]["leftovers_killed"] is True
    assert wait_for(lambda: process_gone(int(pid_file.read_text())), timeout=2)
    assert_all_revoked(fakes)


def test_forwarded_signal_in_record(fakes: Fakes) -> None:
    script = 'trap "exit 7" TERM; echo ready; while :; do sleep 0.1; done'
    with fakes.start(
        "--role", "demo-readonly", "--json", "--", "sh", "-c", script
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 7
        record = json.loads(proc.stderr.read().strip().splitlines()[-1])
    assert record["child"]["signals_forwarded"] == ["SIGTERM"]
    assert record["child"]["exit_code"] == 7


def test_renews_token_and_lease(fakes: Fakes) -> None:
    fakes.vault.token_ttl = 2
    fakes.vault.lease_ttl = 2
    result = fakes.run("--role", "demo-readonly", "--", "sleep", "2.5")
    assert result.returncode == 0, result.stderr
    assert fakes.vault.renewals.count("token") >= 1
    assert any(r.startswith("agent-creds/") for r in fakes.vault.renewals)


def test_json_audit_record(fakes: Fakes) -> None:
    result = fakes.run(
        "--role",
        "demo-readonly",
        "--json",
        "--tool",
        "psql",
        "--on-behalf-of",
        "alice",
        "--",
        "true",
    )
    assert result.returncode == 0
    record = json.loads(result.stderr.strip().splitlines()[-1])
    assert record["call_id"] == fakes.attestor.jtis[0]
    assert record["agent"] == "dev"
    assert record["asserted"] == {"tool": "psql", "on_behalf_of": "alice"}
    assert record["attested"]["uid"] == str(os.getuid())
    assert record["roles"] == ["database/demo-readonly"]
    assert record["lease_ids"] == fakes.vault.revoked_leases
    assert record["policy"]["decision"] == "allowed"
    assert record["revocation"]["ok"] is True
    assert record["exit_code"] == 0
    assert record["token_accessor"] in fakes.vault.revoked_tokens
    assert "p@ss/w:rd" not in result.stderr
    assert fakes.vault.issued_tokens[0] not in result.stderr
    assert fakes.attestor.issued[0] not in result.stderr


def test_verbose_log_names_revocation(fakes: Fakes) -> None:
    result = fakes.run("-v", "--role", "demo-readonly", "--", "true")
    lease_id = fakes.vault.revoked_leases[0]
    assert result.returncode == 0, result.stderr
    assert f"agent-exec: minted role=database/demo-readonly lease_id={lease_id}" in (
        result.stderr
    )
    assert f"agent-exec: revoked lease_id={lease_id}\n" in result.stderr
    assert "agent-exec: revoked the call's token\n" in result.stderr


@pytest.mark.parametrize("failing_revokes", [set(), {"*"}])
def test_debug_log_has_no_secret(fakes: Fakes, failing_revokes: set[str]) -> None:
    fakes.vault.failing_revokes.update(failing_revokes)
    roles = ["demo-readonly", "database/demo-readonly", "aws/deploy", "deploy"]
    options = [option for role in roles for option in ("--role", role)]
    script = "echo $PGPASSWORD $AWS_SECRET_ACCESS_KEY"
    result = fakes.run("-vv", "--json", *options, "--", "sh", "-c", script)
    assert result.stdout == "p@ss/w:rd fake/secret\n"
    assert "lease_id=" in result.stderr
    assert "p@ss/w:rd" not in result.stderr
    assert "fake/secret" not in result.stderr
    assert fakes.vault.issued_tokens[0] not in result.stderr
    assert fakes.attestor.issued[0] not in result.stderr


def test_signal_before_command_mints_nothing(fakes: Fakes) -> None:
    fakes.attestor.delay = 5.0
    with fakes.start("--role", "demo-readonly", "--", "true") as proc:
        assert wait_for(lambda: fakes.attestor.requests != [])
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 128 + signal.SIGTERM
        assert proc.stderr is not None
        assert "interrupted by signal 15 (SIGTERM)" in proc.stderr.read()
    assert fakes.vault.requests == []


@pytest.mark.parametrize("signum", [signal.SIGUSR1, signal.SIGUSR2])
def test_user_signal_before_command_ends_call(fakes: Fakes, signum: int) -> None:
    # SIGUSR1 and SIGUSR2 end a process by default, so before the command
    # starts they end the call as SIGTERM does, not by killing agent-exec.
    fakes.attestor.delay = 5.0
    with fakes.start("--role", "demo-readonly", "--", "true") as proc:
        assert wait_for(lambda: fakes.attestor.requests != [])
        proc.send_signal(signum)
        assert proc.wait(timeout=20) == 128 + signum
        assert proc.stderr is not None
        assert f"interrupted by signal {signum}" in proc.stderr.read()
    assert fakes.vault.requests == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGHUP, signal.SIGUSR1])
def test_ignored_signal_stays_ignored(fakes: Fakes, signum: int) -> None:
    # A signal ignored when agent-exec starts, as `nohup` or a shell's
    # background job leaves it, does not end the call before the command runs.
    fakes.attestor.delay = 2.0
    script = f'trap "" {signal.Signals(signum).name[3:]}; exec "$@"'
    args = ["--role", "demo-readonly", "--", "sh", "-c", "echo ran"]
    with subprocess.Popen(
        ["sh", "-c", script, "sh", AGENT_EXEC, *args],
        env=fakes.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert wait_for(lambda: fakes.attestor.requests != [])
        proc.send_signal(signum)
        assert proc.wait(timeout=20) == 0
        assert proc.stdout is not None
        assert proc.stdout.read() == "ran\n"
    assert_all_revoked(fakes)


def test_signal_during_revocation_ignored(fakes: Fakes) -> None:
    fakes.vault.revoke_delay = 1.0
    with fakes.start("--role", "demo-readonly", "--", "echo", "ran") as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ran\n"
        assert wait_for(lambda: any("revoke" in p for _, p in fakes.vault.requests))
        proc.send_signal(signal.SIGTERM)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
    assert_all_revoked(fakes)


def test_user_signal_during_revocation_ignored(fakes: Fakes) -> None:
    # The command never runs, so no handler of its own forwards the signal.
    fakes.vault.plugin_denies.add(AWS_ROLE)
    fakes.vault.revoke_delay = 1.0
    roles = ["--role", "database/demo-readonly", "--role", "aws/deploy"]
    with fakes.start(*roles, "--", "true") as proc:
        assert wait_for(lambda: any("revoke" in p for _, p in fakes.vault.requests))
        proc.send_signal(signal.SIGUSR1)
        assert proc.wait(timeout=20) == 77
    assert_all_revoked(fakes)


def test_standby_redirect_followed(fakes: Fakes) -> None:
    standby = VaultState(redirect_to=fakes.vault_addr)
    with fake_vault(standby) as standby_addr:
        result = fakes.run(
            "--role", "demo-readonly", "--vault-addr", standby_addr, "--", "true"
        )
    assert result.returncode == 0, result.stderr
    # Each client connection is redirected once, then stays on the active node.
    assert standby.requests[0] == ("POST", "auth/jwt/login")
    assert_all_revoked(fakes)


FD_REPORT = (
    "import os, sys\n"
    "def is_open(fd):\n"
    "    try:\n"
    "        os.fstat(fd)\n"
    "    except OSError:\n"
    "        return 'closed'\n"
    "    return 'open'\n"
    "states = ' '.join(is_open(fd) for fd in (0, 1, 2))\n"
    "open(sys.argv[1], 'w').write(states)\n"
)


@pytest.mark.parametrize(
    ("redirection", "expected"),
    [
        ("<&-", "closed open open"),
        (">&-", "open closed open"),
        ("<&- >&-", "closed closed open"),
    ],
)
def test_closed_standard_fd_passes_through(
    fakes: Fakes, redirection: str, expected: str
) -> None:
    report = fakes.tmp / "fds"
    started = time.monotonic()
    result = subprocess.run(
        [
            "sh",
            "-c",
            f'exec "$@" {redirection}',
            "sh",
            AGENT_EXEC,
            "--role",
            "demo-readonly",
            "--",
            sys.executable,
            "-c",
            FD_REPORT,
            str(report),
        ],
        env=fakes.env(),
        stderr=subprocess.PIPE,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 10
    assert report.read_text() == expected
    assert "Traceback" not in result.stderr
    assert_all_revoked(fakes)


def test_closed_stdout_keeps_watchdog(fakes: Fakes) -> None:
    command = ["sh", "-c", 'exec "$@" >&-', "sh", AGENT_EXEC]
    with subprocess.Popen(
        [*command, "--role", "demo-readonly", "--", "sleep", "30"],
        env=fakes.env(),
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert wait_for(lambda: fakes.vault.live_leases() != [])
        proc.kill()
        proc.wait(timeout=10)
        # Only the watchdog can have revoked them after a SIGKILL.
        assert wait_for(
            lambda: not fakes.vault.live_leases() and not fakes.vault.tokens
        )


def test_short_leftover_ends_call_early(fakes: Fakes) -> None:
    started = time.monotonic()
    result = fakes.run(
        "--json", "--role", "demo-readonly", "--", "sh", "-c", "sleep 0.3 & exit 0"
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert elapsed < 3
    record = json.loads(result.stderr.strip().splitlines()[-1])
    assert record["child"]["leftovers_killed"] is False
    assert_all_revoked(fakes)


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--json", "--role", "demo-readonly", "--", "sh", "-c", "exit 5"], 5),
        (["--json", "--role", "other", "--", "true"], 77),
    ],
)
def test_broken_stderr_keeps_exit_code(
    fakes: Fakes, args: list[str], code: int
) -> None:
    """A reader that closed stderr loses the messages, not the exit status."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [AGENT_EXEC, *args],
            env=fakes.env(),
            stdout=subprocess.DEVNULL,
            stderr=write_end,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)

    assert result.returncode == code
    assert_all_revoked(fakes)
