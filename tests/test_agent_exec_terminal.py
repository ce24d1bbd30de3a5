"""agent-exec on a pseudo-terminal: the command gets the terminal, then returns it.

Each test starts a new session whose controlling terminal is a fresh pty
(`setsid --ctty`), so agent-exec runs in the terminal's foreground process
group as it would under an interactive shell. Vault and the attestor are the
fakes of tests/support/exec_fakes.py.
"""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.exec_fakes import (
    AttestorState,
    VaultState,
    fake_attestor,
    fake_vault,
)

AGENT_EXEC = str(Path(sys.executable).parent / "agent-exec")
PYTHON = sys.executable


@pytest.fixture
def exec_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    vault = VaultState(readable={"database/creds/demo-readonly"})
    with fake_vault(vault) as addr, fake_attestor(AttestorState(), tmp_path) as sock:
        yield {**os.environ, "VAULT_ADDR": addr, "AGENT_ATTESTOR_SOCKET": sock}


def run_on_terminal(argv: list[str], env: dict[str, str], typed: bytes = b"") -> str:
    """Run `argv` as a session leader on a new pty; return all it printed."""
    master, slave = os.openpty()
    with subprocess.Popen(
        ["setsid", "--ctty", *argv],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
    ) as proc:
        os.close(slave)
        if typed:
            os.write(master, typed)
        output = _read_until_closed(master, deadline=time.monotonic() + 30)
        assert proc.wait(timeout=30) == 0, output
    os.close(master)
    return output.decode(errors="replace").replace("\r\n", "\n")


def _read_until_closed(master: int, deadline: float) -> bytes:
    chunks = []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if not ready:
            continue
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: every process closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def test_command_gets_foreground(exec_env: dict[str, str]) -> None:
    check = "import os; print('foreground:', os.tcgetpgrp(0) == os.getpgrp())"
    output = run_on_terminal(
        [AGENT_EXEC, "--role", "demo-readonly", "--", PYTHON, "-c", check], exec_env
    )
    assert "foreground: True" in output


def test_command_reads_terminal(exec_env: dict[str, str]) -> None:
    output = run_on_terminal(
        [
            AGENT_EXEC,
            "--role",
            "demo-readonly",
            "--",
            "sh",
            "-c",
            'read x; echo "got:$x"',
        ],
        exec_env,
        typed=b"hello\n",
    )
    assert "got:hello" in output


def test_terminal_returned_after_command(exec_env: dict[str, str]) -> None:
    check = "import os; print('returned:', os.tcgetpgrp(0) == os.getpgrp())"
    script = f'"$0" --role demo-readonly -- true; "{PYTHON}" -c "{check}"'
    output = run_on_terminal(["sh", "-c", script, AGENT_EXEC], exec_env)
    assert "returned: True" in output


def test_ctrl_z_stops_and_fg_resumes(exec_env: dict[str, str]) -> None:
    screens = type_into_bash(
        exec_env,
        [
            f"{AGENT_EXEC} --role demo-readonly -- sh -c 'read x; echo got:$x'\n",
            "\x1a",  # Ctrl-Z, while the command waits for input
            "jobs\n",
            "fg\n",
            "hello\n",
            "echo rc=$?\n",
        ],
        seconds=1.5,
    )
    assert "Stopped" in screens[2]
    assert "got:hello" in screens[4]
    assert "rc=0" in screens[5]


def test_background_read_then_fg_resumes(exec_env: dict[str, str]) -> None:
    """A background call whose command reads the terminal stops, and fg resumes it."""
    screens = type_into_bash(
        exec_env,
        [
            f"{AGENT_EXEC} --role demo-readonly -- sh -c 'read x; echo got:$x' &\n",
            "jobs\n",
            "fg\n",
            "hello\n",
            "echo rc=$?\n",
        ],
        seconds=2.0,
    )
    assert "Stopped" in screens[1]
    assert "got:hello" in screens[3]
    assert "rc=0" in screens[4]


def type_into_bash(env: dict[str, str], typed: list[str], seconds: float) -> list[str]:
    """Type each entry into an interactive bash on a new pty; return each screen.

    The bash has job control, as in a terminal session. Each screen is what
    the pty printed within `seconds` after that entry was typed.
    """
    pid, master = pty.fork()
    if pid == 0:  # the child: an interactive bash with job control on the pty
        try:
            argv = ["bash", "--norc", "--noprofile", "-i"]
            os.execve("/bin/bash", argv, env)  # noqa: S606 - argv list
        finally:
            os._exit(127)
    screens = []
    try:
        for keys in typed:
            os.write(master, keys.encode())
            screens.append(_read_for(master, seconds).decode(errors="replace"))
        os.write(master, b"exit\n")
    finally:
        os.waitpid(pid, 0)
        os.close(master)
    return screens


def _read_for(master: int, seconds: float) -> bytes:
    chunks = []
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([master], [], [], remaining)
        if ready:
            try:
                chunks.append(os.read(master, 4096))
            except OSError:
                break
    return b"".join(chunks)
