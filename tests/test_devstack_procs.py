"""Process checks of the dev stack's scripts."""

from __future__ import annotations

import subprocess
import sys
import time

from devstack import procs

# Forks a child that exits at once and is never reaped, prints its PID, and
# stays alive, so the child stays a zombie of a process other than the test.
ZOMBIE_PARENT = """
import os, time
pid = os.fork()
if pid == 0:
    os._exit(0)
print(pid, flush=True)
time.sleep(60)
"""


def test_is_alive_false_for_foreign_zombie() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", ZOMBIE_PARENT], stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        zombie = int(parent.stdout.readline())
        deadline = time.monotonic() + 10
        while procs.is_alive(zombie) and time.monotonic() < deadline:
            time.sleep(0.05)

        assert not procs.is_alive(zombie)
        assert procs.is_alive(parent.pid)
    finally:
        parent.kill()
        parent.wait(timeout=10)
        assert parent.stdout is not None
        parent.stdout.close()
