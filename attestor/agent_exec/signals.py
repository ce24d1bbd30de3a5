"""Signal numbers and functions for agent-exec, taken from `_signal`.

`signal` re-exports `_signal`, the C module, after converting its constants
into enums. With `enum`, that adds about 4 ms to agent-exec's start-up,
against 0.1 ms for `_signal` (Python 3.11). The functions are the same, but
handlers are returned as plain integers (`SIG_DFL`, `SIG_IGN`) instead of
`signal.Handlers`. mypy reads the types of `signal`, which has a stub, where
`_signal` has none.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal as _impl
    from collections.abc import Callable, Iterable
    from collections.abc import Set as AbstractSet
    from types import FrameType

    Handler = Callable[[int, FrameType | None], None]
else:
    import _signal as _impl

ITIMER_REAL = _impl.ITIMER_REAL
SIG_BLOCK = _impl.SIG_BLOCK
SIG_DFL = _impl.SIG_DFL
SIG_IGN = _impl.SIG_IGN
SIG_SETMASK = _impl.SIG_SETMASK
SIGALRM = _impl.SIGALRM
SIGCHLD = _impl.SIGCHLD
SIGCONT = _impl.SIGCONT
SIGHUP = _impl.SIGHUP
SIGINT = _impl.SIGINT
SIGIO = _impl.SIGIO
SIGKILL = _impl.SIGKILL
SIGPIPE = _impl.SIGPIPE
SIGPROF = _impl.SIGPROF
SIGPWR = _impl.SIGPWR
SIGQUIT = _impl.SIGQUIT
SIGRTMAX = _impl.SIGRTMAX
SIGRTMIN = _impl.SIGRTMIN
SIGSTKFLT = _impl.SIGSTKFLT
SIGTERM = _impl.SIGTERM
SIGTSTP = _impl.SIGTSTP
SIGTTIN = _impl.SIGTTIN
SIGTTOU = _impl.SIGTTOU
SIGUSR1 = _impl.SIGUSR1
SIGUSR2 = _impl.SIGUSR2
SIGVTALRM = _impl.SIGVTALRM
SIGWINCH = _impl.SIGWINCH
SIGXCPU = _impl.SIGXCPU
SIGXFSZ = _impl.SIGXFSZ
getitimer = _impl.getitimer
getsignal = _impl.getsignal
pthread_sigmask = _impl.pthread_sigmask
setitimer = _impl.setitimer
signal = _impl.signal

# Once one of these is forwarded, the command's process group gets SIGKILL
# if it outlives --kill-timeout.
TERMINATING = frozenset({SIGINT, SIGTERM, SIGHUP, SIGQUIT})
# The asynchronous signals whose default action ends a process, on Linux.
# Before the command starts they end the call, while it runs they are
# forwarded, and during revocation they are ignored. SIGPIPE and SIGXFSZ are
# left out because Python ignores them. So are the signals of a fault or an
# abort() (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS, SIGABRT).
# Python's C-level handler only sets a flag and returns, so after a real
# fault the kernel would run the faulting instruction again, in a loop.
ENDS_PROCESS = (
    SIGINT,
    SIGTERM,
    SIGHUP,
    SIGQUIT,
    SIGUSR1,
    SIGUSR2,
    SIGALRM,
    SIGVTALRM,
    SIGPROF,
    SIGIO,
    SIGPWR,
    SIGSTKFLT,
    SIGXCPU,
    *range(SIGRTMIN, SIGRTMAX + 1),
)
# Signals that agent-exec forwards to the command's process group.
FORWARDED = (*ENDS_PROCESS, SIGWINCH)
# The names `signal.Signals(n).name` gives, for the forwarded signals other
# than the real-time ones between SIGRTMIN and SIGRTMAX.
NAMES: dict[int, str] = {
    SIGINT: "SIGINT",
    SIGTERM: "SIGTERM",
    SIGHUP: "SIGHUP",
    SIGQUIT: "SIGQUIT",
    SIGUSR1: "SIGUSR1",
    SIGUSR2: "SIGUSR2",
    SIGWINCH: "SIGWINCH",
    SIGALRM: "SIGALRM",
    SIGVTALRM: "SIGVTALRM",
    SIGPROF: "SIGPROF",
    SIGIO: "SIGIO",
    SIGPWR: "SIGPWR",
    SIGSTKFLT: "SIGSTKFLT",
    SIGXCPU: "SIGXCPU",
    SIGRTMIN: "SIGRTMIN",
    SIGRTMAX: "SIGRTMAX",
}


def name(signum: int) -> str:
    """Return the name of `signum`, with `SIGRTMIN+N` for a real-time signal."""
    if signum in NAMES:
        return NAMES[signum]
    if SIGRTMIN < signum < SIGRTMAX:
        return f"SIGRTMIN+{signum - SIGRTMIN}"
    return str(signum)


def ignore(signum: int, frame: FrameType | None) -> None:
    """Ignore the signal: agent-exec's handler while it revokes the credentials."""


# `route` installs `_dispatch` once per signal and then only changes the
# function it calls. A later change of handler is then an assignment, where
# `signal()` would cost a system call for each of the 45 signals in
# FORWARDED (0.2 to 0.3 us each, Python 3.11.7 on a 2-core Intel Xeon VM).
_target: Handler = ignore
# `_routed[signum]` is 1 once `_dispatch` handles signum.
_routed = bytearray(_impl.NSIG)


def _dispatch(signum: int, frame: FrameType | None) -> None:
    _target(signum, frame)


def route(
    handler: Handler, signums: Iterable[int], skip: AbstractSet[int] = frozenset()
) -> None:
    """Make `handler` the handler of `signums` and of each signal routed before.

    A signal in `skip` that was not routed before keeps its disposition.
    Call it from the main thread only, as `signal()` requires.
    """
    global _target  # noqa: PLW0603 - the one handler that `_dispatch` calls
    _target = handler
    for signum in signums:
        if not _routed[signum] and signum not in skip:
            signal(signum, _dispatch)
            _routed[signum] = 1
