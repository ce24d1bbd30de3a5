"""`prctl(2)` for agent-exec, called through `_ctypes`, the C module under `ctypes`.

`import ctypes` adds about 2 ms to agent-exec's start-up, most of it in
ctypes' own Python modules, against about 0.5 ms for `_ctypes` (Python 3.11,
the 2-core machine of docs/benchmarks.md). The two classes below are what
`ctypes.CDLL(None, use_errno=True).prctl` builds from the same `_ctypes`
primitives: a C `int` result type and a cdecl function that saves `errno`.
"""

from __future__ import annotations

import _ctypes
import os

PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36


class _CInt(_ctypes._SimpleCData):  # type: ignore[type-arg]  # ctypes.c_int
    _type_ = "i"


class _CFunction(_ctypes.CFuncPtr):
    _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
    _restype_ = _CInt


class Prctl:
    """The C library's `prctl`, looked up once in the running process."""

    def __init__(self) -> None:
        # None opens the main program, whose symbols include the C library's,
        # as `ctypes.CDLL(None)` does. typeshed allows only paths here.
        handle = _ctypes.dlopen(None)  # type: ignore[arg-type]
        self._function = _CFunction(_ctypes.dlsym(handle, "prctl"))

    def call(self, option: int, value: int) -> int:
        """Call `prctl(option, value, 0, 0, 0)`; raise OSError if it fails."""
        result = int(self._function(option, value, 0, 0, 0))
        if result < 0:
            errno = _ctypes.get_errno()
            raise OSError(errno, os.strerror(errno))
        return result
