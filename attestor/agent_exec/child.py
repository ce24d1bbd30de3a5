"""Run the command in its own process group, as a job-control shell would.

The command gets its own process group so that one `killpg` reaches it and
every process it starts, and so that the terminal, if agent-exec is in its
foreground, can be handed to the command and taken back afterwards. Signals that
agent-exec receives are forwarded once each to that group; after a
terminating one, the group is killed with SIGKILL if the command outlives
`kill_timeout`. Processes the command leaves behind in its group get SIGTERM
when it exits, then SIGKILL after `kill_timeout`: their credentials are
about to be revoked.

A pipe separates the fork from the exec: the command waits on it until the
caller's `on_forked` hook (the watchdog) knows its process group, and exits
without running anything if agent-exec dies first.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from collections.abc import Callable, Iterable, Mapping
from types import FrameType
from typing import NamedTuple, NoReturn

from attestor.agent_exec.errors import ExitCode
from attestor.agent_exec.logs import get_logger
from attestor.agent_exec.tty import Terminal, foreground_terminal

log = get_logger(__name__)

FORWARDED = (
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGWINCH,
)
TERMINATING = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT})
# Python ignores SIGPIPE and SIGXFSZ itself; a command expects the defaults.
RESET_TO_DEFAULT = (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGALRM, signal.SIGCHLD)
GROUP_POLL = 0.02  # seconds between checks for processes left in the group
# Rounds of killing orphans: each round reaches one more generation.
ORPHAN_ROUNDS = 50


class ChildSpec(NamedTuple):
    """The command to run: `program` is the resolved file, `argv[0]` the name typed."""

    program: str
    argv: list[str]
    env: Mapping[str, str]
    kill_timeout: float = 5.0
    inherited_ignored: frozenset[int] = frozenset()
    # Our own children that are not the command's (the watchdog).
    keep_pids: frozenset[int] = frozenset()

    def __repr__(self) -> str:
        return f"ChildSpec(program={self.program!r})"  # env contains the credentials


class ChildResult:
    """The command's end; `exit_code` follows the shell (128+N for signal N)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.status = 0
        self.exec_error = ""
        self.forwarded: list[str] = []
        self.killed_after_timeout = False
        self.leftovers_killed = False

    @property
    def exit_code(self) -> int:
        if os.WIFSIGNALED(self.status):
            return 128 + os.WTERMSIG(self.status)
        return os.WEXITSTATUS(self.status)


class ChildRunner:
    """Fork, exec and wait for one command; use from the main thread only."""

    def __init__(self, spec: ChildSpec) -> None:
        self.spec = spec
        self.result = ChildResult(pid=0)
        self._terminal: Terminal | None = None
        self._go_write = -1
        self._error_read = -1

    def run(self, on_forked: Callable[[int], None] | None = None) -> ChildResult:
        """Start the command, forward signals until it exits, return how it ended.

        `on_forked(pgid)` runs after the fork and before the exec; if it
        raises, the command is killed before it runs anything.
        """
        self._terminal = foreground_terminal()
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
        try:
            self._fork(old_mask)
            if on_forked is not None:
                on_forked(self.result.pid)
            self._install_handlers()
            if self._terminal is not None:
                self._terminal.hand_to(self.result.pid)
            os.write(self._go_write, b"x")
        except BaseException:
            self._abort()
            raise
        finally:
            _close(self._go_write)
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)

        self.result.exec_error = _read_all(self._error_read)
        _close(self._error_read)
        self.result.status = self._wait()
        signal.setitimer(signal.ITIMER_REAL, 0)
        if self._terminal is not None:
            self._terminal.take_back()
        self._end_group()
        self._end_orphans()
        return self.result

    def _fork(self, old_mask: Iterable[int]) -> None:
        go_read, self._go_write = os.pipe()
        self._error_read, error_write = os.pipe()
        pid = os.fork()
        if pid == 0:
            _child_main(self.spec, self._terminal, old_mask, go_read, error_write)
        os.close(go_read)
        os.close(error_write)
        self.result.pid = pid
        # Both sides call setpgid, so neither the exec nor a forwarded signal
        # can come before the new group exists (as shells do, see setpgid(2)).
        with contextlib.suppress(OSError):
            os.setpgid(pid, pid)

    def _abort(self) -> None:
        if self.result.pid > 0:
            _kill_group(self.result.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.result.pid, 0)
        if self._terminal is not None:
            self._terminal.take_back()
        _close(self._error_read)

    def _install_handlers(self) -> None:
        for signum in FORWARDED:
            signal.signal(signum, self._forward)
        signal.signal(signal.SIGALRM, self._kill_on_timeout)

    def _forward(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        log.info("forwarding signal=%s pgid=%d", name, self.result.pid)
        self.result.forwarded.append(name)
        _kill_group(self.result.pid, signum)
        already_armed = signal.getitimer(signal.ITIMER_REAL)[0] > 0
        if signum in TERMINATING and not already_armed:
            signal.setitimer(signal.ITIMER_REAL, max(self.spec.kill_timeout, 0.001))

    def _kill_on_timeout(self, signum: int, frame: FrameType | None) -> None:
        log.warning(
            "command still running %.1f s after a terminating signal; "
            "sending SIGKILL to pgid=%d",
            self.spec.kill_timeout,
            self.result.pid,
        )
        self.result.killed_after_timeout = True
        _kill_group(self.result.pid, signal.SIGKILL)

    def _wait(self) -> int:
        flags = os.WUNTRACED if self._terminal is not None else 0
        while True:
            # PEP 475: waitpid resumes by itself after a signal handler ran.
            _, status = os.waitpid(self.result.pid, flags)
            if not os.WIFSTOPPED(status):
                return status
            self._suspend_with_child()

    def _suspend_with_child(self) -> None:
        """Stop agent-exec like its command (Ctrl-Z), resume both on SIGCONT."""
        assert self._terminal is not None
        self._terminal.take_back()
        # The shell waits for agent-exec, not for the command: it notices the
        # stop only if agent-exec stops too. In an orphaned process group the
        # kernel discards SIGTSTP and this returns at once.
        os.kill(os.getpid(), signal.SIGTSTP)
        self._terminal.hand_to(self.result.pid)
        _kill_group(self.result.pid, signal.SIGCONT)

    def _end_group(self) -> None:
        pgid = self.result.pid
        if not _group_exists(pgid):
            return
        log.info("sending SIGTERM to processes left in pgid=%d", pgid)
        _kill_group(pgid, signal.SIGTERM)
        _kill_group(pgid, signal.SIGCONT)  # a stopped process handles SIGTERM late
        deadline = time.monotonic() + self.spec.kill_timeout
        while time.monotonic() < deadline:
            if not _group_exists(pgid):
                return
            time.sleep(GROUP_POLL)
        log.warning("sending SIGKILL to processes left in pgid=%d", pgid)
        self.result.leftovers_killed = True
        _kill_group(pgid, signal.SIGKILL)

    def _end_orphans(self) -> None:
        """Kill and reap descendants that left the command's process group.

        agent-exec is their subreaper, so each one that outlived its parent
        is now our child. Killing one hands its own children to us, hence
        the loop.
        """
        for _ in range(ORPHAN_ROUNDS):
            orphans = _children_of(os.getpid()) - self.spec.keep_pids
            if not orphans:
                return
            log.warning(
                "killing processes that left the command's group: %s", sorted(orphans)
            )
            self.result.leftovers_killed = True
            for pid in orphans:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            for pid in orphans:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)


def _children_of(parent: int) -> set[int]:
    """Return the pids whose parent is `parent`, read from /proc/PID/stat."""
    children = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name in parentheses may contain spaces and ')'.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 1 and int(fields[1]) == parent:
            children.add(int(entry.name))
    return children


def _child_main(
    spec: ChildSpec,
    terminal: Terminal | None,
    old_mask: Iterable[int],
    go_read: int,
    error_write: int,
) -> NoReturn:
    """Set up the forked child and exec the command; never returns."""
    code: int = ExitCode.INTERNAL
    try:
        os.setpgid(0, 0)
        for signum in FORWARDED:
            ignored = signum in spec.inherited_ignored
            signal.signal(signum, signal.SIG_IGN if ignored else signal.SIG_DFL)
        for signum in RESET_TO_DEFAULT:
            signal.signal(signum, signal.SIG_DFL)
        if terminal is not None:
            terminal.hand_to(os.getpid())
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        # EOF instead of the go byte: agent-exec died before the hand-off.
        if os.read(go_read, 1) == b"x":
            os.execve(spec.program, spec.argv, spec.env)  # noqa: S606 - argv list
    except OSError as err:
        code = (
            ExitCode.NOT_FOUND if err.errno == errno.ENOENT else ExitCode.NOT_EXECUTABLE
        )
        with contextlib.suppress(OSError):
            os.write(
                error_write, f"cannot execute {spec.program}: {err.strerror}".encode()
            )
    finally:
        os._exit(code)


def _kill_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _group_exists(pgid: int) -> bool:
    # NOTE: after the leader is reaped, its PID could in principle be reused
    # as a new group ID; Linux hands out PIDs cyclically up to pid_max, so
    # within the few milliseconds of this check that needs a wrapped PID space.
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_all(fd: int) -> str:
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def _close(fd: int) -> None:
    if fd >= 0:
        with contextlib.suppress(OSError):
            os.close(fd)
