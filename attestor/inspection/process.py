"""The attested facts about a calling process, as plain data.

Every field comes from the kernel (SO_PEERCRED, /proc) except `script`, which
is taken from the command line the process chose for itself. The claims
builder turns these objects into JWT claims; selectors match against them.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class AttestationError(Exception):
    """The attestor cannot vouch for the caller; `code` is an `ErrorCode` value."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class ScriptInfo:
    """The program an interpreter runs, as its command line names it.

    `kind` is "file" (then `path` is the canonical path of the file), "module"
    (`path` is the module name, as in `python -m NAME`) or "inline" (code given
    on the command line, `path` is empty). `sha256` is None when the file was
    not hashed, and `error` then gives the reason.
    """

    kind: str
    path: str
    sha256: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class AncestorInfo:
    """One process of the caller's parent chain.

    `exe` is empty when the daemon cannot read the link (a kernel thread, or
    the daemon lacks CAP_SYS_PTRACE).
    """

    pid: int
    uid: int
    exe: str
    exe_sha256: str | None
    start_time: int
    script: ScriptInfo | None = None


@dataclass(frozen=True)
class ProcessInfo:
    """The attested caller; `parents` starts with its parent."""

    pid: int
    uid: int
    gid: int
    user: str
    groups: tuple[int, ...]
    exe: str
    exe_sha256: str | None
    exe_deleted: bool
    cmdline: tuple[str, ...]
    cmdline_truncated: bool
    cwd: str
    start_time: int
    ppid: int
    script: ScriptInfo | None
    parents: tuple[AncestorInfo, ...] = field(default=())
