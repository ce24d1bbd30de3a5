"""A process that ends the call if agent-exec itself is killed.

SIGKILL gives agent-exec no chance to revoke anything. The watchdog is forked
right after the Vault login, so it holds the call's own token (which can
revoke only itself and its leases) and nothing else. It runs in a session of
its own, so signals sent to agent-exec's process group or by its terminal do
not reach it. It waits for the end of a pipe whose only writer is
agent-exec, then reads what agent-exec wrote, and an end without a final
`done` line means agent-exec died. The watchdog then kills
the command's process group with SIGKILL and revokes the leases and the
token.

agent-exec reads no credentials until the watchdog reports its new session:
until then a SIGKILL to agent-exec's process group would end both.

Limits: a process that left the command's process group (setsid, setpgid)
is not killed, though its credentials are still revoked. A watchdog killed
together with agent-exec (SIGKILL to both PIDs, or the OOM killer) revokes
nothing, and the lease TTL and the token TTL then bound the credentials.
"""

from __future__ import annotations

import os
import sys
import time

from attestor.agent_exec import signals
from attestor.agent_exec.errors import printable, suppress
from attestor.agent_exec.logs import get_logger
from attestor.agent_exec.revoke import revoke_call

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import NoReturn

    from attestor.agent_exec.revoke import RevocationReport
    from attestor.agent_exec.vault import VaultClient

log = get_logger(__name__)

# How long the watchdog keeps retrying Vault after agent-exec died.
REVOKE_DEADLINE = 15.0
# How long agent-exec waits for the watchdog's new session, which the
# watchdog sets up first thing after the fork.
READY_TIMEOUT = 5.0
IGNORED = (
    *signals.FORWARDED,
    signals.SIGPIPE,
    signals.SIGTSTP,
    signals.SIGTTIN,
    signals.SIGTTOU,
)


class Watchdog:
    """agent-exec's end of the watchdog: tell it what to clean up, then stop it."""

    def __init__(self, pid: int, pipe: int, ready: int) -> None:
        self.pid = pid
        self._pipe = pipe
        self._ready = ready
        self._lost = False

    @classmethod
    def start(cls, vault: VaultClient) -> Watchdog:
        """Fork the watchdog; it keeps a copy of `vault` and its token."""
        read_end, write_end = os.pipe()
        ready_read, ready_write = os.pipe()
        # Blocked until the watchdog ignores them: agent-exec's handlers raise
        # exceptions, which in the fork would run agent-exec's own clean-up.
        old_mask = signals.pthread_sigmask(signals.SIG_BLOCK, IGNORED)
        pid = os.fork()
        if pid == 0:
            os.close(ready_read)
            _watchdog_main(vault, read_end, write_end, ready_write, old_mask)
        signals.pthread_sigmask(signals.SIG_SETMASK, old_mask)
        os.close(read_end)
        os.close(ready_write)
        log.debug("started watchdog pid=%d", pid)
        return cls(pid, write_end, ready_read)

    def wait_detached(self, timeout: float = READY_TIMEOUT) -> None:
        """Wait until the watchdog runs in its own session.

        Until then it is in agent-exec's process group, and a SIGKILL sent to
        the group (`timeout -s KILL`, `kill -9 -PGID`) would end both, leaving
        minted credentials to their TTL. So no credential is read before.
        """
        import select

        try:
            readable, _, _ = select.select([self._ready], [], [], timeout)
            detached = bool(readable) and os.read(self._ready, 1) == b"r"
        except OSError:
            detached = False
        finally:
            with suppress(OSError):
                os.close(self._ready)
        if not detached:
            log.warning(
                "watchdog pid=%d did not start within %g s; if agent-exec is "
                "killed, the credentials last until their TTL",
                self.pid,
                timeout,
            )

    def watch_group(self, pgid: int) -> None:
        self._send(f"pgid {pgid}")

    def add_lease(self, lease_id: str) -> None:
        self._send(f"lease {lease_id}")

    def stop(self) -> None:
        """Tell the watchdog the call ended cleanly and wait for it to exit."""
        self._send("done")
        with suppress(OSError):
            os.close(self._pipe)
        with suppress(ChildProcessError):
            os.waitpid(self.pid, 0)

    def _send(self, line: str) -> None:
        try:
            os.write(self._pipe, line.encode() + b"\n")
        except OSError as err:
            # The call goes on without the watchdog: the credentials are still
            # revoked at the end, only a SIGKILL of agent-exec is not covered.
            if not self._lost:
                log.warning(
                    "watchdog pid=%d is gone (%s); if agent-exec is killed, the "
                    "credentials last until their TTL",
                    self.pid,
                    err,
                )
            self._lost = True


def _watchdog_main(
    vault: VaultClient,
    pipe: int,
    write_end: int,
    ready: int,
    old_mask: Iterable[int],
) -> NoReturn:
    """Wait for agent-exec to end; clean up if it died. Never returns."""
    code = 0
    try:
        os.close(write_end)
        _detach(pipe, ready, old_mask)
        pgid, leases, done = _read_messages(pipe)
        if not done:
            code = _clean_up(vault, pgid, leases)
    except BaseException as err:  # the watchdog must never run agent-exec's code
        log.warning("watchdog failed error=%r", err)
        code = 1
    finally:
        os._exit(code)


def _detach(pipe: int, ready: int, old_mask: Iterable[int]) -> None:
    os.setsid()
    for signum in IGNORED:
        signals.signal(signum, signals.SIG_IGN)
    signals.pthread_sigmask(signals.SIG_SETMASK, old_mask)
    os.write(ready, b"r")
    os.close(ready)
    # Keep stderr for the closing message; holding stdin, stdout or another
    # inherited descriptor would delay the EOF that agent-exec's caller awaits.
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(devnull)
    os.closerange(3, pipe)
    os.closerange(pipe + 1, os.sysconf("SC_OPEN_MAX"))


def _read_messages(pipe: int) -> tuple[int, list[str], bool]:
    """Wait until agent-exec closes `pipe` or dies, then parse its messages.

    Polling for the hang-up alone, with no POLLIN, leaves the watchdog
    asleep while agent-exec writes: waking it for every message would take
    the CPU from agent-exec and the servers on a small machine. The few
    messages of a call stay far below the pipe's 64 KiB buffer.
    """
    import select

    waiter = select.poll()
    waiter.register(pipe, 0)  # POLLHUP and POLLERR are always reported
    while not waiter.poll():
        pass
    pgid, leases, done = 0, [], False
    buffer = b""
    while chunk := os.read(pipe, 4096):
        buffer += chunk
    for line in buffer.decode().splitlines():
        kind, _, value = line.partition(" ")
        if kind == "pgid":
            pgid = int(value)
        elif kind == "lease":
            leases.append(value)
        elif kind == "done":
            done = True
    return pgid, leases, done


def _clean_up(vault: VaultClient, pgid: int, leases: list[str]) -> int:
    if pgid:
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signals.SIGKILL)
    deadline = time.monotonic() + REVOKE_DEADLINE
    fresh = vault.copy()
    while True:
        report = revoke_call(fresh, leases)
        # Once the token is revoked, Vault itself retries the leases left;
        # the token no longer works for another attempt anyway. A 403 from
        # revoke-self means that agent-exec, or the TTL, ended it already.
        if report.token_revoked or report.token_gone:
            break
        if time.monotonic() > deadline:
            break
        time.sleep(1.0)
    _report(pgid, report)
    return 0 if report.ok or report.token_gone else 1


def _report(pgid: int, report: RevocationReport) -> None:
    """Print one line on stderr, naming each lease or token whose revocation failed."""
    killed = f"killed process group {pgid}, " if pgid else ""
    if report.ok:
        outcome = "revoked the call's credentials"
    elif report.token_gone:
        outcome = (
            "the call's token was already revoked or expired, and Vault revokes "
            "its leases with it"
        )
    else:
        failures = [
            f"lease {lease_id}: {error}" for lease_id, error in report.failed.items()
        ]
        if not report.token_revoked:
            failures.append(f"the token: {report.token_error}")
        outcome = (
            f"FAILED to revoke the call's credentials ({'; '.join(failures)}); "
            "each may stay valid until its lease or TTL ends"
        )
    message = f"agent-exec ended without cleaning up; {killed}{outcome}"
    with suppress(OSError):
        print(
            f"agent-exec watchdog: {printable(message)}",
            file=sys.stderr,
            flush=True,
        )
