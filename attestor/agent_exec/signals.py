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
SIGKILL = _impl.SIGKILL
SIGPIPE = _impl.SIGPIPE
SIGQUIT = _impl.SIGQUIT
SIGTERM = _impl.SIGTERM
SIGTSTP = _impl.SIGTSTP
SIGTTIN = _impl.SIGTTIN
SIGTTOU = _impl.SIGTTOU
SIGUSR1 = _impl.SIGUSR1
SIGUSR2 = _impl.SIGUSR2
SIGWINCH = _impl.SIGWINCH
SIGXFSZ = _impl.SIGXFSZ
getitimer = _impl.getitimer
getsignal = _impl.getsignal
pthread_sigmask = _impl.pthread_sigmask
setitimer = _impl.setitimer
signal = _impl.signal

# Signals that agent-exec forwards to the command's process group.
FORWARDED: tuple[int, ...] = (
    SIGINT,
    SIGTERM,
    SIGHUP,
    SIGQUIT,
    SIGUSR1,
    SIGUSR2,
    SIGWINCH,
)
TERMINATING = frozenset({SIGINT, SIGTERM, SIGHUP, SIGQUIT})
# The forwarded signals whose default action ends a process. Before the
# command starts they end the call, and during revocation they are ignored.
ENDS_PROCESS = TERMINATING | {SIGUSR1, SIGUSR2}
# The names `signal.Signals(n).name` gives, for the forwarded signals.
NAMES: dict[int, str] = {
    SIGINT: "SIGINT",
    SIGTERM: "SIGTERM",
    SIGHUP: "SIGHUP",
    SIGQUIT: "SIGQUIT",
    SIGUSR1: "SIGUSR1",
    SIGUSR2: "SIGUSR2",
    SIGWINCH: "SIGWINCH",
}
