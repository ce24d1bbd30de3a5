"""Hand the controlling terminal to the command's process group and take it back.

Only a foreground process group may read from its terminal; a background one
that tries is stopped with SIGTTIN. An interactive command (psql, a pager,
an editor) therefore needs the terminal's foreground group to be its own.
agent-exec hands the terminal over only when it is itself in the foreground,
so a background agent-exec never takes the terminal from the shell, and it
takes it back only from the command's group.
"""

from __future__ import annotations

import os

from attestor.agent_exec import signals
from attestor.agent_exec.logs import get_logger

log = get_logger(__name__)


class Terminal:
    """agent-exec's controlling terminal on `fd`; `own_pgrp` is agent-exec's group."""

    __slots__ = ("fd", "own_pgrp")

    def __init__(self, fd: int, own_pgrp: int) -> None:
        self.fd = fd
        self.own_pgrp = own_pgrp

    def foreground(self) -> int:
        """Return the terminal's foreground process group, or 0 if unknown."""
        try:
            return os.tcgetpgrp(self.fd)
        except OSError:
            return 0

    def hand_to(self, pgid: int) -> None:
        """Make `pgid` the foreground group, if agent-exec's group is in front now."""
        if self.foreground() == self.own_pgrp:
            _set_foreground(self.fd, pgid)

    def take_back(self, pgid: int) -> None:
        """Make agent-exec's group the foreground group again, if `pgid` has it."""
        if self.foreground() == pgid:
            _set_foreground(self.fd, self.own_pgrp)


def controlling_terminal() -> Terminal | None:
    """Return the controlling terminal if it is on stdin, stdout or stderr.

    agent-exec's group need not be in front: started in the background, it
    may be brought to the foreground later (`fg`).
    """
    own_pgrp = os.getpgrp()
    for fd in (0, 1, 2):
        try:
            # tcgetpgrp fails with ENOTTY on a terminal that is not ours.
            if os.isatty(fd) and os.tcgetpgrp(fd) > 0:
                return Terminal(fd=fd, own_pgrp=own_pgrp)
        except OSError:
            continue
    return None


def _set_foreground(fd: int, pgid: int) -> None:
    # tcsetpgrp from a group that is no longer in the foreground raises
    # SIGTTOU, which would stop agent-exec; ignoring it makes the call work.
    previous = signals.signal(signals.SIGTTOU, signals.SIG_IGN)
    try:
        os.tcsetpgrp(fd, pgid)
    except OSError as err:
        log.debug("tcsetpgrp failed fd=%d pgid=%d error=%s", fd, pgid, err)
    finally:
        signals.signal(signals.SIGTTOU, previous)
