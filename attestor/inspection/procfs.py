"""Raw reads of one process's entries under /proc.

`ProcFS` is the seam between the attestor and the kernel: every lookup the
inspector makes goes through it, and its root can point at a fake tree in
tests. It parses the kernel's formats and nothing more; deciding what a
value means is the inspector's job.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

_READ_BYTES = 8192
_STATUS_UID = re.compile(rb"^Uid:\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)", re.MULTILINE)
_STATUS_GID = re.compile(rb"^Gid:\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)", re.MULTILINE)
_STATUS_GROUPS = re.compile(rb"^Groups:([ \t\d]*)$", re.MULTILINE)


class ProcessGoneError(Exception):
    """The process has exited or its /proc entry cannot be read."""


@dataclass(frozen=True)
class ProcStat:
    """Fields of /proc/PID/stat the attestor uses."""

    state: str
    ppid: int
    start_time: int  # clock ticks after boot: with the pid, it names one process


@dataclass(frozen=True)
class ProcStatus:
    """Credentials from /proc/PID/status, as (real, effective, saved, fs)."""

    uids: tuple[int, int, int, int]
    gids: tuple[int, int, int, int]
    groups: tuple[int, ...]


class ProcFS:
    """Reads /proc entries; `root` is overridable for tests."""

    def __init__(self, root: str = "/proc") -> None:
        self.root = root.rstrip("/") or "/"

    def path(self, pid: int, entry: str) -> str:
        return f"{self.root}/{pid}/{entry}"

    def stat(self, pid: int) -> ProcStat:
        raw = self._read(pid, "stat").decode("ascii", "replace")
        # The command name in brackets may contain spaces and ')', so fields
        # are counted from the last ')'.
        fields = raw[raw.rfind(")") + 2 :].split()
        try:
            return ProcStat(
                state=fields[0], ppid=int(fields[1]), start_time=int(fields[19])
            )
        except (IndexError, ValueError) as err:
            raise ProcessGoneError(f"unreadable {self.path(pid, 'stat')}") from err

    def status(self, pid: int) -> ProcStatus:
        raw = self._read(pid, "status")
        uids = _STATUS_UID.search(raw)
        gids = _STATUS_GID.search(raw)
        groups = _STATUS_GROUPS.search(raw)
        if uids is None or gids is None:
            raise ProcessGoneError(f"unreadable {self.path(pid, 'status')}")
        return ProcStatus(
            uids=_four_ints(uids),
            gids=_four_ints(gids),
            groups=tuple(int(g) for g in groups.group(1).split()) if groups else (),
        )

    def exe_link(self, pid: int) -> str:
        """Return the target of /proc/PID/exe, " (deleted)" suffix included."""
        return self._readlink(pid, "exe")

    def cwd(self, pid: int) -> str:
        return self._readlink(pid, "cwd")

    def cmdline(self, pid: int) -> list[str]:
        raw = self._read(pid, "cmdline")
        return [arg.decode("utf-8", "surrogateescape") for arg in raw.split(b"\0")[:-1]]

    def open_exe(self, pid: int) -> int:
        """Open the running image of PID read-only and return the descriptor.

        Opening the magic link reaches the mapped file itself, so this works
        for a binary deleted or replaced on disk and across mount namespaces.
        """
        try:
            return os.open(self.path(pid, "exe"), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError as err:
            raise ProcessGoneError(f"process {pid} has exited") from err

    def _read(self, pid: int, entry: str) -> bytes:
        try:
            fd = os.open(self.path(pid, entry), os.O_RDONLY | os.O_CLOEXEC)
        except (FileNotFoundError, ProcessLookupError) as err:
            raise ProcessGoneError(f"process {pid} has exited") from err
        try:
            chunks = [os.read(fd, _READ_BYTES)]
            while len(chunks[-1]) == _READ_BYTES:
                chunks.append(os.read(fd, _READ_BYTES))
        except ProcessLookupError as err:
            raise ProcessGoneError(f"process {pid} has exited") from err
        finally:
            os.close(fd)
        return b"".join(chunks)

    def _readlink(self, pid: int, entry: str) -> str:
        try:
            return os.readlink(self.path(pid, entry))
        except (FileNotFoundError, ProcessLookupError) as err:
            raise ProcessGoneError(f"process {pid} has exited") from err


def _four_ints(match: re.Match[bytes]) -> tuple[int, int, int, int]:
    return (int(match[1]), int(match[2]), int(match[3]), int(match[4]))
