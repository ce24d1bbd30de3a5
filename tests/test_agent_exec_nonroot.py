"""agent-exec run by an unprivileged user, against the fake Vault and attestor.

The stack's agents run as root, and root reads any process's /proc entries
whatever its dumpable flag. Here agent-exec runs as `nobody` with the system
Python and a copy of the `attestor` package, so the command is an ordinary
same-uid process, as it is for a deployed agent.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.exec_fakes import (
    MOUNT,
    AttestorState,
    VaultState,
    fake_attestor,
    fake_vault,
)
from tests.test_agent_exec_flow import DB_ROLE

ROOT = Path(__file__).resolve().parent.parent
SYSTEM_PYTHON = "/usr/bin/python3"
# Reads the parent's environment through /proc, as a hostile command would.
READ_PARENT = (
    "if cat /proc/$PPID/environ >/dev/null 2>&1; then echo readable; "
    "else echo denied; fi"
)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """Return a folder open to user `nobody`, with a copy of the `attestor` package."""
    folder = Path(tempfile.mkdtemp(prefix="agent-exec-nobody-"))
    try:
        folder.chmod(0o755)
        shutil.copytree(
            ROOT / "attestor",
            folder / "attestor",
            ignore=shutil.ignore_patterns("__pycache__"),
        )
        yield folder
    finally:
        shutil.rmtree(folder)


def run_as_nobody(
    args: list[str], env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    nobody = pwd.getpwnam("nobody")
    return subprocess.run(
        args,
        env={"PATH": "/usr/bin:/bin", **env},
        user=nobody.pw_uid,
        group=nobody.pw_gid,
        extra_groups=[],
        cwd="/",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_same_uid_command_cannot_read_wrapper(shared_dir: Path) -> None:
    # Without agent-exec, a same-uid child reads its parent's environment.
    plain = run_as_nobody(
        [
            SYSTEM_PYTHON,
            "-I",
            "-c",
            "import subprocess, sys; "
            "sys.exit(subprocess.call(['sh', '-c', sys.argv[1]]))",
            READ_PARENT,
        ],
        {},
    )
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.strip() == "readable"

    vault = VaultState(readable={DB_ROLE})
    with fake_vault(vault) as addr, fake_attestor(AttestorState(), shared_dir) as sock:
        # The socket of the real attestor is open to every agent's uid too.
        os.chmod(sock, 0o666)  # noqa: S103
        wrapped = run_as_nobody(
            [
                SYSTEM_PYTHON,
                "-I",
                "-c",
                "import sys; sys.path.insert(0, sys.argv.pop(1)); "
                "from attestor.agent_exec import main; main()",
                str(shared_dir),
                "--role",
                "demo-readonly",
                "--",
                "sh",
                "-c",
                READ_PARENT,
            ],
            {"VAULT_ADDR": addr, "AGENT_ATTESTOR_SOCKET": sock},
        )

    assert wrapped.returncode == 0, wrapped.stderr
    assert wrapped.stdout.strip() == "denied"
    assert vault.minted() == [f"{MOUNT}/{DB_ROLE}"]
    assert len(vault.revoked_leases) == 1
    assert vault.live_leases() == []
    assert vault.tokens == {}
