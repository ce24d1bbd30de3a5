"""Run the command in its own process group, as a job-control shell would.

The command gets its own process group so that one `killpg` reaches it and
every process it starts, and so that the terminal, if agent-exec is in its
foreground, can be handed to the command and taken back afterwards. Signals that
agent-exec receives are forwarded once each to that group; after a
terminating one, the group is killed with SIGKILL if the command outlives
`kill_timeout`. Processes the command leaves behind in its group get SIGTERM
when it exits, then SIGKILL after `kill_timeout`: their credentials are
about to be revoked. `end_orphans` kills those that left the group.

A pipe separates the fork from the exec. `ChildRunner.start` forks while
the credentials are still being minted, and the forked process waits on the
pipe. `ChildRunner.run` sends it the environment, credentials included, and
only then does it exec the command. By then the caller's `on_forked` hook
(the watchdog) knows its process group. If agent-exec dies first, the pipe
ends without an environment and the process exits without running anything.
"""

from __future__ import annotations

import errno
import os
import time

from attestor.agent_exec import signals
from attestor.agent_exec.errors import ExitCode, suppress
from attestor.agent_exec.logs import get_logger
from attestor.agent_exec.signals import FORWARDED, TERMINATING
from attestor.agent_exec.tty import Terminal, controlling_terminal

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping
    from types import FrameType
    from typing import NoReturn

log = get_logger(__name__)

# Python ignores SIGPIPE and SIGXFSZ itself; a command expects the defaults.
RESET_TO_DEFAULT = (signals.SIGPIPE, signals.SIGXFSZ, signals.SIGCHLD)
GROUP_POLL = 0.02  # seconds between checks for processes left in the group
# Rounds of killing orphans: each round reaches one more generation.
ORPHAN_ROUNDS = 50


class ChildSpec:
    """The command to run: `program` is the resolved file, `argv[0]` the name typed.

    `keep_pids` are agent-exec's own children that are not the command's
    (the watchdog). `closed_fds` are the standard descriptors (0, 1, 2) that
    were closed when agent-exec started; the command gets them closed too.
    """

    __slots__ = (
        "argv",
        "closed_fds",
        "inherited_ignored",
        "keep_pids",
        "kill_timeout",
        "program",
    )

    def __init__(
        self,
        program: str,
        argv: list[str],
        *,
        kill_timeout: float = 5.0,
        inherited_ignored: frozenset[int] = frozenset(),
        closed_fds: frozenset[int] = frozenset(),
        keep_pids: frozenset[int] = frozenset(),
    ) -> None:
        self.program = program
        self.closed_fds = closed_fds
        self.argv = argv
        self.kill_timeout = kill_timeout
        self.inherited_ignored = inherited_ignored
        self.keep_pids = keep_pids

    def __repr__(self) -> str:
        return f"ChildSpec(program={self.program!r})"


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
    """Fork, exec and wait for one command; use from the main thread only.

    Call `start`, then either `run` or, if the call fails before the
    command may run, `abort`.
    """

    def __init__(self, spec: ChildSpec) -> None:
        self.spec = spec
        self.result = ChildResult(pid=0)
        self._terminal: Terminal | None = None
        self._env_write = -1
        self._error_read = -1
        self.launched = False
        self.orphans_ended = False
        # When the --kill-timeout timer fires, in time.monotonic() seconds; 0
        # while it is not armed.
        self._kill_deadline = 0.0

    def start(self, on_forked: Callable[[int], None] | None = None) -> None:
        """Fork the command's process, which waits for `run` before the exec.

        `on_forked(pgid)` runs right after the fork; if it raises, the
        process is killed before it runs anything.
        """
        self._terminal = controlling_terminal()
        old_mask = signals.pthread_sigmask(signals.SIG_BLOCK, FORWARDED)
        try:
            self._fork(old_mask)
            if on_forked is not None:
                on_forked(self.result.pid)
        except BaseException:
            self.abort()
            raise
        finally:
            signals.pthread_sigmask(signals.SIG_SETMASK, old_mask)

    def run(self, env: Mapping[str, str]) -> ChildResult:
        """Exec the command with `env`, forward signals and return how it ended.

        A process the command left in its group gets SIGTERM, then SIGKILL
        after `kill_timeout`, before this returns.
        """
        message = _encode_environment(env)
        old_mask = signals.pthread_sigmask(signals.SIG_BLOCK, FORWARDED)
        try:
            self._install_handlers()
            if self._terminal is not None:
                self._terminal.hand_to(self.result.pid)
            _write_all(self._env_write, message)
            self.launched = True
        except BaseException:
            self.abort()
            raise
        finally:
            _close(self._env_write)
            signals.pthread_sigmask(signals.SIG_SETMASK, old_mask)

        self.result.exec_error = _read_all(self._error_read)
        _close(self._error_read)
        self.result.status = self._wait()
        signals.setitimer(signals.ITIMER_REAL, 0)
        # Disarmed for good: a SIGALRM from now on is forwarded to what the
        # command left, which `_end_group` gives its own --kill-timeout.
        self._kill_deadline = float("inf")
        if self._terminal is not None:
            self._terminal.take_back(self.result.pid)
        self._end_group()
        return self.result

    def abort(self) -> None:
        """Kill the command's process, which has not run the command yet."""
        _close(self._env_write)
        if self.result.pid > 0:
            _kill_group(self.result.pid, signals.SIGKILL)
            _reap(self.result.pid)
        if self._terminal is not None:
            self._terminal.take_back(self.result.pid)
        _close(self._error_read)

    def _fork(self, old_mask: Iterable[int]) -> None:
        env_read, self._env_write = os.pipe()
        self._error_read, error_write = os.pipe()
        pid = os.fork()
        if pid == 0:
            pipes = (env_read, error_write, self._env_write, self._error_read)
            _child_main(self.spec, self._terminal, old_mask, pipes)
        os.close(env_read)
        os.close(error_write)
        self.result.pid = pid
        # Both sides call setpgid, so neither the exec nor a forwarded signal
        # can come before the new group exists (as shells do, see setpgid(2)).
        # EACCES: the child already called exec; ESRCH: it already exited.
        with suppress(OSError):
            os.setpgid(pid, pid)

    def _install_handlers(self) -> None:
        signals.route(self._on_signal, FORWARDED)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # The --kill-timeout timer sends SIGALRM, and so may anyone else.
        # setitimer(2) never fires before the interval has passed, and Linux
        # times ITIMER_REAL on CLOCK_MONOTONIC, the clock of time.monotonic().
        # The deadline is read before the timer is armed, so a SIGALRM before
        # it comes from elsewhere and is forwarded. One after it is taken for
        # the timer, because the group gets SIGKILL at that point anyway and
        # the kernel merges two pending SIGALRMs into one. Moving the timer
        # off SIGALRM would take a thread, or a wait with a timeout in place
        # of the blocking waitpid(WUNTRACED) that also reports a Ctrl-Z stop.
        if (
            signum == signals.SIGALRM
            and self._kill_deadline
            and time.monotonic() >= self._kill_deadline
        ):
            self._kill_on_timeout()
        else:
            self._forward(signum)

    def _forward(self, signum: int) -> None:
        name = signals.name(signum)
        log.info("forwarding signal=%s pgid=%d", name, self.result.pid)
        self.result.forwarded.append(name)
        _kill_group(self.result.pid, signum)
        if signum not in TERMINATING:
            return
        # A stopped process acts on the signal only once continued, as the
        # shell's `kill` does for a stopped job.
        _kill_group(self.result.pid, signals.SIGCONT)
        if not self._kill_deadline:
            timeout = max(self.spec.kill_timeout, 0.001)
            self._kill_deadline = time.monotonic() + timeout
            signals.setitimer(signals.ITIMER_REAL, timeout)

    def _kill_on_timeout(self) -> None:
        log.warning(
            "command still running %.1f s after a terminating signal; "
            "sending SIGKILL to pgid=%d",
            self.spec.kill_timeout,
            self.result.pid,
        )
        self.result.killed_after_timeout = True
        _kill_group(self.result.pid, signals.SIGKILL)

    def _wait(self) -> int:
        flags = os.WUNTRACED if self._terminal is not None else 0
        while True:
            # PEP 475: waitpid resumes by itself after a signal handler ran.
            _, status = os.waitpid(self.result.pid, flags)
            if not os.WIFSTOPPED(status):
                return status
            self._suspend_with_child(os.WSTOPSIG(status))

    def _suspend_with_child(self, stop_signal: int) -> None:
        """Stop agent-exec like its command, then resume both on SIGCONT.

        The shell waits for agent-exec, not for the command: it notices the
        stop (Ctrl-Z, or a background read from the terminal) only if
        agent-exec stops too. After `fg`, agent-exec is in front again and
        hands the terminal back to the command. After `bg` it is not, so a
        command that reads the terminal stops again. In an orphaned process
        group the kernel discards the stop signal and this returns at once.
        """
        assert self._terminal is not None
        self._terminal.take_back(self.result.pid)
        own_stop = (
            stop_signal
            if stop_signal in (signals.SIGTTIN, signals.SIGTTOU)
            else signals.SIGTSTP
        )
        os.kill(os.getpid(), own_stop)
        self._terminal.hand_to(self.result.pid)
        _kill_group(self.result.pid, signals.SIGCONT)

    def _end_group(self) -> None:
        pgid = self.result.pid
        _reap_group(pgid)
        if not _group_exists(pgid):
            return
        log.info("sending SIGTERM to processes left in pgid=%d", pgid)
        _kill_group(pgid, signals.SIGTERM)
        _kill_group(pgid, signals.SIGCONT)  # a stopped process handles SIGTERM late
        deadline = time.monotonic() + self.spec.kill_timeout
        while time.monotonic() < deadline:
            _reap_group(pgid)
            if not _group_exists(pgid):
                return
            time.sleep(GROUP_POLL)
        log.warning("sending SIGKILL to processes left in pgid=%d", pgid)
        self.result.leftovers_killed = True
        _kill_group(pgid, signals.SIGKILL)

    def end_orphans(self) -> None:
        """Kill and reap descendants that left the command's process group.

        agent-exec is their subreaper, so each one that outlived its parent
        is now our child. Killing one hands its own children to us, hence
        the loop. Call it after `run`.
        """
        self.orphans_ended = True
        for _ in range(ORPHAN_ROUNDS):
            orphans = _children_of(os.getpid()) - self.spec.keep_pids
            if not orphans:
                return
            log.warning(
                "killing processes that left the command's group: %s", sorted(orphans)
            )
            self.result.leftovers_killed = True
            for pid in orphans:
                with suppress(ProcessLookupError):
                    os.kill(pid, signals.SIGKILL)
            for pid in orphans:
                _reap(pid)


def _children_of(parent: int) -> set[int]:
    """Return the pids whose parent is `parent`, read from /proc/PID/stat.

    `os.open` and `os.read` cost about a third of `open` per file, which
    matters because this reads one file per process on the host (about
    3.5 us each, measured on the 2-core machine of docs/benchmarks.md).
    """
    children = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            fd = os.open(f"/proc/{name}/stat", os.O_RDONLY)
            try:
                stat = os.read(fd, 4096)
            finally:
                os.close(fd)
        except OSError:
            continue  # the process is gone
        # The command name in parentheses may contain spaces and ')'.
        fields = stat[stat.rfind(b")") + 2 :].split(b" ", 2)
        if len(fields) > 1 and int(fields[1]) == parent:
            children.add(int(name))
    return children


def _child_main(
    spec: ChildSpec,
    terminal: Terminal | None,
    old_mask: Iterable[int],
    pipes: tuple[int, int, int, int],
) -> NoReturn:
    """Set up the forked child and exec the command; never returns.

    `pipes` are the child's ends of the environment and error pipes, then
    agent-exec's ends. The child closes agent-exec's ends, so that it gets
    end of file on the environment pipe if agent-exec dies.
    """
    env_read, error_write, *parent_ends = pipes
    code: int = ExitCode.INTERNAL
    try:
        for fd in parent_ends:
            os.close(fd)
        os.setpgid(0, 0)
        # Otherwise agent-exec's Python handlers would run here until the exec.
        for signum in FORWARDED:
            ignored = signum in spec.inherited_ignored
            signals.signal(signum, signals.SIG_IGN if ignored else signals.SIG_DFL)
        for signum in RESET_TO_DEFAULT:
            signals.signal(signum, signals.SIG_DFL)
        signals.pthread_sigmask(signals.SIG_SETMASK, old_mask)
        # No complete environment: agent-exec died or gave up before `run`.
        env = _decode_environment(_read_all_bytes(env_read))
        if env is not None:
            if terminal is not None:
                terminal.hand_to(os.getpid())
            for fd in spec.closed_fds:
                os.close(fd)
            os.execve(spec.program, spec.argv, env)  # noqa: S606 - argv list
    except OSError as err:
        code = (
            ExitCode.NOT_FOUND if err.errno == errno.ENOENT else ExitCode.NOT_EXECUTABLE
        )
        message = f"cannot execute {spec.program}: {err.strerror}"
        with suppress(OSError):
            os.write(error_write, message.encode())
    finally:
        os._exit(code)


def _kill_group(pgid: int, signum: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _reap(pid: int) -> None:
    with suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _reap_group(pgid: int) -> None:
    """Reap every exited child of agent-exec in process group `pgid`.

    A process left in the group whose parent exited becomes agent-exec's
    child, because agent-exec is the subreaper. Once it exits, it stays a
    zombie until reaped, and `killpg(pgid, 0)` still finds a zombie.
    """
    while True:
        try:
            pid, _ = os.waitpid(-pgid, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


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


def _encode_environment(env: Mapping[str, str]) -> bytes:
    """Return `env` as NUL-ended `NAME=VALUE` entries after an 8-byte length.

    The length lets the command's process tell a complete environment from
    one cut short because agent-exec died while writing it.
    """
    entries = []
    for name, value in env.items():
        name_bytes, value_bytes = os.fsencode(name), os.fsencode(value)
        if not name_bytes or b"=" in name_bytes or b"\0" in name_bytes + value_bytes:
            raise ValueError(
                f"cannot pass environment variable {name!r}: a name must be "
                "non-empty without '=', and neither may contain a NUL byte"
            )
        entries.append(name_bytes + b"=" + value_bytes + b"\0")
    block = b"".join(entries)
    return len(block).to_bytes(8, "little") + block


def _decode_environment(message: bytes) -> dict[bytes, bytes] | None:
    """Return the environment `_encode_environment` wrote, or None if incomplete."""
    block = message[8:]
    if len(message) < 8 or int.from_bytes(message[:8], "little") != len(block):
        return None
    env = {}
    for entry in block.split(b"\0")[:-1]:
        name, _, value = entry.partition(b"=")
        env[name] = value
    return env


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _read_all_bytes(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _read_all(fd: int) -> str:
    return _read_all_bytes(fd).decode(errors="replace")


def _close(fd: int) -> None:
    if fd >= 0:
        with suppress(OSError):
            os.close(fd)
