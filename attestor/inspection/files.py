"""Locate and hash the files a process runs: its executable and its script.

The executable is opened through /proc/PID/exe, which reaches the running
image even when the file was deleted or replaced on disk. The script path
comes from the process's command line and is resolved the way the interpreter
resolved it: a relative path against the process's working directory, an
absolute one against its root directory. Both go through /proc, so a process
in another mount namespace gets its own files.
"""

from __future__ import annotations

import os
import re
import stat

from attestor.inspection.hashing import FileDigest, HashCache
from attestor.inspection.interpreters import ScriptRef
from attestor.inspection.process import AttestationError, ScriptInfo
from attestor.inspection.procfs import ProcFS
from attestor.protocol import ErrorCode

_OWN_FD_PATH = re.compile(r"/dev/stdin|(?:/dev/fd/|/proc/self/fd/)(?P<fd>[0-9]+)")


def read_exe(procfs: ProcFS, hashes: HashCache, pid: int) -> tuple[str, FileDigest]:
    """Return the /proc/PID/exe link and the digest of the running image.

    Raises AttestationError when the daemon lacks the privilege to read it.
    """
    try:
        link = procfs.exe_link(pid)
        fd = procfs.open_exe(pid)
    except PermissionError as err:
        raise AttestationError(
            ErrorCode.INTERNAL,
            f"cannot read /proc/{pid}/exe: permission denied; run the attestor "
            "as root or give it CAP_SYS_PTRACE",
        ) from err
    try:
        return link, hashes.digest_fd(fd)
    finally:
        os.close(fd)


def resolve_script(
    procfs: ProcFS,
    pid: int,
    ref: ScriptRef,
    *,
    hashes: HashCache | None,
    reader: tuple[int, tuple[int, ...]] | None = None,
) -> ScriptInfo:
    """Return the canonical path of the script `ref` names, hashed if `hashes`.

    `reader` is the (uid, gids) of the process: a file those credentials
    cannot read is not hashed, so the root daemon never reveals anything
    about files the caller could not open itself.
    """
    if ref.kind != "file":
        return ScriptInfo(kind=ref.kind, path=ref.value)

    candidate = _candidate_path(procfs, pid, ref.value)
    try:
        # O_PATH opens nothing on the device, so a script path naming a FIFO
        # or a device file (a watchdog, a tape) has no side effect.
        path_fd = os.open(candidate, os.O_PATH | os.O_CLOEXEC)
    except OSError as err:
        return ScriptInfo(
            kind="file", path=ref.value, error=f"cannot open: {err.strerror}"
        )

    try:
        return _describe_file(path_fd, hashes=hashes, reader=reader)
    finally:
        os.close(path_fd)


def _candidate_path(procfs: ProcFS, pid: int, path: str) -> str:
    """Return the path through /proc at which the daemon opens `path` of `pid`.

    The result resolves as the process itself resolves `path`.
    """
    match = _OWN_FD_PATH.fullmatch(path)
    if match is not None:
        # Resolving /dev/fd/N in the daemon would reach the daemon's own
        # descriptor N, not the process's.
        return procfs.path(pid, f"fd/{match.group('fd') or 0}")
    base = "root" if path.startswith("/") else "cwd"
    return f"{procfs.path(pid, base)}/{path.lstrip('/')}"


def _describe_file(
    path_fd: int,
    *,
    hashes: HashCache | None,
    reader: tuple[int, tuple[int, ...]] | None,
) -> ScriptInfo:
    info = os.fstat(path_fd)
    path = os.readlink(f"/proc/self/fd/{path_fd}")
    if not stat.S_ISREG(info.st_mode):
        return ScriptInfo(kind="file", path=path, error="not a regular file")
    if hashes is None:
        return ScriptInfo(kind="file", path=path)
    if reader is not None and not _readable_by(info, *reader):
        return ScriptInfo(kind="file", path=path, error="not readable by the process")

    fd = os.open(f"/proc/self/fd/{path_fd}", os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        digest = hashes.digest_fd(fd)
    finally:
        os.close(fd)
    error = None if digest.sha256 else "larger than max_hash_bytes"
    return ScriptInfo(kind="file", path=path, sha256=digest.sha256, error=error)


def _readable_by(info: os.stat_result, uid: int, gids: tuple[int, ...]) -> bool:
    """Apply the owner/group/other read bits; ACLs are not consulted."""
    if uid == 0:
        return True
    if info.st_uid == uid:
        return bool(info.st_mode & stat.S_IRUSR)
    if info.st_gid in gids:
        return bool(info.st_mode & stat.S_IRGRP)
    return bool(info.st_mode & stat.S_IROTH)
