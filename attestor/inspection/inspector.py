"""Attest the process at the other end of a Unix socket.

The sequence guards against PID reuse and exec races. `pin` takes the peer's
credentials and a pidfd when the connection is accepted. `inspect` reads the
process's attributes, then checks that the pidfd's process is still alive
with the same start time, uids, parent and executable. Any difference rejects
the request, because the facts read may belong to another process or image.
"""

from __future__ import annotations

import errno
import os
import pwd
import select
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from attestor.inspection.ancestry import AncestorReader
from attestor.inspection.files import read_exe, resolve_script
from attestor.inspection.hashing import FileDigest, HashCache
from attestor.inspection.interpreters import find_script
from attestor.inspection.process import AttestationError, ProcessInfo, ScriptInfo
from attestor.inspection.procfs import ProcessGoneError, ProcFS, ProcStatus
from attestor.protocol import ErrorCode

# Linux 6.5 and later return a pidfd of the process that called connect(2),
# which closes the window between SO_PEERCRED and pidfd_open(2).
SO_PEERPIDFD = getattr(socket, "SO_PEERPIDFD", 77)

MAX_CMDLINE_ARGS = 64
MAX_ARG_CHARS = 1024


@dataclass(frozen=True)
class Peer:
    """A connected process, pinned by pidfd and start time at accept."""

    pid: int
    uid: int
    gid: int
    pidfd: int
    start_time: int

    def close(self) -> None:
        os.close(self.pidfd)


@dataclass(frozen=True)
class _ExeIdentity:
    link: str
    device: int
    inode: int


class Inspector:
    """Reads the kernel's view of socket peers.

    `after_read` runs between reading the attributes and re-checking them;
    tests use it to change the process in that window.
    """

    def __init__(
        self,
        *,
        hashes: HashCache,
        procfs: ProcFS | None = None,
        max_depth: int = 32,
        user_name: Callable[[int], str] | None = None,
        after_read: Callable[[Peer], None] | None = None,
    ) -> None:
        self.procfs = procfs or ProcFS()
        self.hashes = hashes
        self.max_depth = max_depth
        self.user_name = user_name or _CachedUserNames()
        self.after_read = after_read
        self.ancestry = AncestorReader(self.procfs, hashes, max_depth=max_depth)

    def pin(self, conn: socket.socket) -> Peer:
        """Return the peer's credentials with a pidfd that pins its process."""
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
        pid, uid, gid = struct.unpack("3i", creds)
        if pid <= 0:
            raise AttestationError(
                ErrorCode.NO_MATCHING_AGENT,
                "the caller's pid is not visible in the attestor's pid namespace; "
                "run the attestor in the host's pid namespace",
            )

        pidfd = self._peer_pidfd(conn, pid)
        try:
            start_time = self.procfs.stat(pid).start_time
        except ProcessGoneError as err:
            os.close(pidfd)
            raise _exited(pid) from err
        return Peer(pid=pid, uid=uid, gid=gid, pidfd=pidfd, start_time=start_time)

    def inspect(self, peer: Peer) -> ProcessInfo:
        """Read the pinned process's attributes, then confirm it did not change."""
        try:
            info, exe = self._read(peer)
            if self.after_read is not None:
                self.after_read(peer)
            self._recheck(peer, info, exe)
        except ProcessGoneError as err:
            raise _exited(peer.pid) from err
        return info

    def _peer_pidfd(self, conn: socket.socket, pid: int) -> int:
        try:
            return conn.getsockopt(socket.SOL_SOCKET, SO_PEERPIDFD)
        except OSError as err:
            if err.errno not in (errno.ENOPROTOOPT, errno.EINVAL):
                raise _exited(pid) from err
        # NOTE: on kernels before 6.5 the peer can exit and its pid be reused
        # between connect(2) and this call; the start time cannot detect that.
        try:
            return os.pidfd_open(pid)
        except ProcessLookupError as err:
            raise _exited(pid) from err

    def _read(self, peer: Peer) -> tuple[ProcessInfo, _ExeIdentity]:
        pid = peer.pid
        status = self.procfs.status(pid)
        _check_uids(peer, status)
        link, digest = read_exe(self.procfs, self.hashes, pid)
        exe = (
            link.removesuffix(" (deleted)")
            if self._deleted(pid, link, digest)
            else link
        )
        stat = self.procfs.stat(pid)
        cmdline = self.procfs.cmdline(pid)
        uid, gid = status.uids[1], status.gids[1]

        info = ProcessInfo(
            pid=pid,
            uid=uid,
            gid=gid,
            user=self.user_name(uid),
            groups=status.groups,
            exe=exe,
            exe_sha256=digest.sha256,
            exe_deleted=exe != link,
            cmdline=_bounded(cmdline),
            cmdline_truncated=_bounded(cmdline) != tuple(cmdline),
            cwd=self._cwd(pid),
            start_time=stat.start_time,
            ppid=stat.ppid,
            script=self._script(pid, exe, cmdline, (uid, (gid, *status.groups))),
            parents=self.ancestry.read_chain(stat.ppid, stat.start_time),
        )
        return info, _ExeIdentity(link=link, device=digest.device, inode=digest.inode)

    def _script(
        self,
        pid: int,
        exe: str,
        cmdline: list[str],
        reader: tuple[int, tuple[int, ...]],
    ) -> ScriptInfo | None:
        ref = find_script(exe, cmdline)
        if ref is None:
            return None
        return resolve_script(self.procfs, pid, ref, hashes=self.hashes, reader=reader)

    def _deleted(self, pid: int, link: str, digest: FileDigest) -> bool:
        """Tell a deleted or replaced image from a file named "... (deleted)"."""
        if not link.endswith(" (deleted)"):
            return False
        try:
            on_disk = os.stat(self.procfs.path(pid, "root") + link)
        except OSError:
            return True
        return (on_disk.st_dev, on_disk.st_ino) != (digest.device, digest.inode)

    def _cwd(self, pid: int) -> str:
        try:
            return self.procfs.cwd(pid)
        except PermissionError:
            return ""

    def _recheck(self, peer: Peer, info: ProcessInfo, exe: _ExeIdentity) -> None:
        pid = peer.pid
        if select.select([peer.pidfd], [], [], 0)[0]:
            raise _exited(pid)
        stat = self.procfs.stat(pid)
        if stat.start_time != peer.start_time or stat.state in ("Z", "X"):
            raise _exited(pid)
        if stat.ppid != info.ppid:
            raise _changed(pid, f"its parent changed from {info.ppid} to {stat.ppid}")
        if self.procfs.status(pid).uids[1] != info.uid:
            raise _changed(pid, "its uid changed")

        try:
            now = os.stat(self.procfs.path(pid, "exe"))
            link = self.procfs.exe_link(pid)
        except FileNotFoundError as err:
            raise _exited(pid) from err
        if link != exe.link or (now.st_dev, now.st_ino) != (exe.device, exe.inode):
            raise _changed(pid, f"it executed {link} after connecting")


def _check_uids(peer: Peer, status: ProcStatus) -> None:
    # A setuid program, or one that changed uid after connecting, could
    # otherwise be attested as a uid other than the one that connected.
    if len(set(status.uids)) != 1 or status.uids[1] != peer.uid:
        real, effective, saved, fs = status.uids
        raise AttestationError(
            ErrorCode.NO_MATCHING_AGENT,
            f"process {peer.pid} runs with mixed uids (real {real}, effective "
            f"{effective}, saved {saved}, fs {fs}, {peer.uid} at connect); the "
            "attestor only vouches for processes whose uids are all equal",
        )


def _bounded(cmdline: list[str]) -> tuple[str, ...]:
    return tuple(arg[:MAX_ARG_CHARS] for arg in cmdline[:MAX_CMDLINE_ARGS])


def _exited(pid: int) -> AttestationError:
    return AttestationError(
        ErrorCode.PROCESS_CHANGED,
        f"process {pid} exited while it was being attested; no token issued",
    )


def _changed(pid: int, change: str) -> AttestationError:
    return AttestationError(
        ErrorCode.PROCESS_CHANGED,
        f"process {pid} changed while it was being attested ({change}); "
        "request the token again from the process that will use it",
    )


class _CachedUserNames:
    """Maps uids to user names, caching for a minute to spare NSS lookups."""

    def __init__(self, ttl: float = 60.0) -> None:
        self.ttl = ttl
        self._names: dict[int, tuple[str, float]] = {}

    def __call__(self, uid: int) -> str:
        now = time.monotonic()
        cached = self._names.get(uid)
        if cached is not None and now - cached[1] < self.ttl:
            return cached[0]
        try:
            name = pwd.getpwuid(uid).pw_name
        except KeyError:
            name = ""
        self._names[uid] = (name, now)
        return name
