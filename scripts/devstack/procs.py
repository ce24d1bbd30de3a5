"""Start, track and stop the stack's background processes by PID."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

# Popen handles of the processes this interpreter started, kept so they are
# reaped by poll() instead of warning when garbage-collected while running.
_children: dict[int, subprocess.Popen[bytes]] = {}


class StackError(Exception):
    """A component of the stack failed to start or stop."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_port_pair() -> int:
    """Return a port P such that P and P+1 are free (OpenBao's API and cluster)."""
    for _ in range(50):
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise StackError("unable to find two adjacent free ports on 127.0.0.1")


def spawn(
    name: str,
    argv: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    user: str | None = None,
) -> int:
    """Start `argv` detached in its own session, output to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    # Logs are private: OpenBao's dev server prints its root token in its log.
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "ab") as out:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            user=user,
            start_new_session=True,
        )
    _children[proc.pid] = proc
    log.info("started %s pid=%d log=%s", name, proc.pid, log_path)
    return proc.pid


def is_alive(pid: int) -> bool:
    child = _children.get(pid)
    if child is not None:
        return child.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # kill(0) succeeds on a zombie child of ours, so reap it if it is one.
    with contextlib.suppress(ChildProcessError):
        reaped, _ = os.waitpid(pid, os.WNOHANG)
        if reaped == pid:
            return False
    # A process started by an earlier `up` is init's child once that `up`
    # exits, and stays a zombie until init reaps it, which a container's
    # init may do late or never.
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state follows the command name, which is in parentheses and may
    # itself contain ") ".
    return stat.rpartition(") ")[2][:1] in {"Z", "X"}


def stop(name: str, pid: int, *, grace: float = 10.0) -> None:
    """Send SIGTERM to `pid`, then SIGKILL if it outlives `grace` seconds."""
    if not is_alive(pid):
        return
    log.info("stopping %s pid=%d", name, pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not is_alive(pid):
            return
        time.sleep(0.05)
    log.warning(
        "%s pid=%d ignored SIGTERM for %.0f s; sending SIGKILL", name, pid, grace
    )
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def wait_until(
    what: str,
    check: Callable[[], bool],
    *,
    timeout: float,
    pid: int | None = None,
    log_path: Path | None = None,
) -> None:
    """Poll `check` until it returns true; fail early if `pid` has died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if pid is not None and not is_alive(pid):
            raise StackError(f"{what} exited during start-up{_tail(log_path)}")
        time.sleep(0.05)
    raise StackError(f"{what} not ready after {timeout:.0f} s{_tail(log_path)}")


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _tail(log_path: Path | None, lines: int = 15) -> str:
    if log_path is None or not log_path.exists():
        return ""
    text = log_path.read_text(errors="replace").splitlines()[-lines:]
    return f"; last lines of {log_path}:\n" + "\n".join(text)
