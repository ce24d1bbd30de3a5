"""Read a process's parent chain from /proc.

Callers of one agent share most of their parent chain, so each ancestor read
is cached for a short time under its (pid, start time). A cache entry is
reused only while the ancestor's exe link and cmdline are unchanged: an exec
always changes one of them. A uid change through setuid(2) shows after at
most `ANCESTOR_TTL` seconds.
"""

from __future__ import annotations

import contextlib
import threading
import time

from attestor.inspection.files import read_exe, resolve_script
from attestor.inspection.hashing import HashCache
from attestor.inspection.interpreters import find_script
from attestor.inspection.process import AncestorInfo, AttestationError
from attestor.inspection.procfs import ProcessGoneError, ProcFS
from attestor.protocol import ErrorCode

ANCESTOR_TTL = 2.0
_CACHE_ENTRIES = 4096

_CacheEntry = tuple[AncestorInfo, tuple[str, list[str]], float]


class AncestorReader:
    """Walks the ppid links from a process towards pid 1."""

    def __init__(self, procfs: ProcFS, hashes: HashCache, *, max_depth: int) -> None:
        self.procfs = procfs
        self.hashes = hashes
        self.max_depth = max_depth
        self._cache: dict[tuple[int, int], _CacheEntry] = {}
        self._lock = threading.Lock()

    def read_chain(self, ppid: int, child_start: int) -> tuple[AncestorInfo, ...]:
        """Return the ancestors of a process started at `child_start`, parent first.

        Raises AttestationError when the chain changes during the walk or is
        longer than `max_depth`. A partial chain must not be returned, because
        the agent-exec check would miss a wrapper above the gap.
        """
        chain: list[AncestorInfo] = []
        pid = ppid
        while pid > 0:
            if len(chain) >= self.max_depth:
                raise AttestationError(
                    ErrorCode.NO_MATCHING_AGENT,
                    f"the caller has more than {self.max_depth} ancestors; raise "
                    "max_ancestors in the config to attest it",
                )
            try:
                stat = self.procfs.stat(pid)
                # A parent cannot start after its child: a later start time
                # means the pid now names an unrelated process.
                if stat.start_time > child_start:
                    raise ProcessGoneError(f"process {pid} was replaced")
                chain.append(self._ancestor(pid, stat.start_time))
            except ProcessGoneError as err:
                # The ancestor exited during the walk: its child was
                # reparented, so the chain read so far is no longer true.
                raise AttestationError(
                    ErrorCode.PROCESS_CHANGED,
                    f"ancestor {pid} of the caller exited while it was being "
                    "attested; request the token again",
                ) from err
            pid, child_start = stat.ppid, stat.start_time
        return tuple(chain)

    def _ancestor(self, pid: int, start_time: int) -> AncestorInfo:
        link = self._exe_link_or_empty(pid)
        # The cmdline is readable even where the exe link is not (another
        # uid without CAP_SYS_PTRACE, a non-dumpable process), and the
        # agent-exec check needs it.
        cmdline = self.procfs.cmdline(pid)
        key = (pid, start_time)
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None and cached[1] == (link, cmdline) and cached[2] > now:
            return cached[0]

        ancestor = self._read_ancestor(pid, start_time, link, cmdline)
        with self._lock:
            if len(self._cache) >= _CACHE_ENTRIES:
                self._cache.clear()
            self._cache[key] = (ancestor, (link, cmdline), now + ANCESTOR_TTL)
        return ancestor

    def _exe_link_or_empty(self, pid: int) -> str:
        try:
            return self.procfs.exe_link(pid)
        except PermissionError:
            # Some processes are not readable without CAP_SYS_PTRACE.
            return ""
        except ProcessGoneError:
            # Kernel threads have no executable; a process that exited is
            # caught by the caller's next read.
            return ""

    def _read_ancestor(
        self, pid: int, start_time: int, link: str, cmdline: list[str]
    ) -> AncestorInfo:
        uid = self.procfs.status(pid).uids[1]
        sha256 = None
        if link:
            with contextlib.suppress(AttestationError, ProcessGoneError, ValueError):
                sha256 = read_exe(self.procfs, self.hashes, pid)[1].sha256

        # Without the exe link, argv[0] names the interpreter, as the
        # process chose to call it.
        ref = find_script(link or (cmdline[0] if cmdline else ""), cmdline)
        script = (
            None if ref is None else resolve_script(self.procfs, pid, ref, hashes=None)
        )
        return AncestorInfo(
            pid=pid,
            uid=uid,
            exe=link,
            exe_sha256=sha256,
            start_time=start_time,
            script=script,
        )
