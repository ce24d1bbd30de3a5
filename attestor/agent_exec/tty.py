"""Hand the controlling terminal to the command's process group and take it back.

Only a foreground process group may read from its terminal; a background one
that tries is stopped with SIGTTIN. An interactive command (psql, a pager,
an editor) therefore needs the terminal's foreground group to be its own.
agent-exec hands the terminal over only when it is itself in the foreground,
so a background agent-exec never takes the terminal from the shell.
"""

from __future__ import annotations

import os

from attestor.agent_exec import signals
from attestor.agent_exec.logs import get_logger

log = get_logger(__name__)


class Terminal:
    """A terminal on `fd` whose foreground group was `own_pgrp` at start."""

    __slots__ = ("fd", "own_pgrp")

    def __init__(self, fd: int, own_pgrp: int) -> None:
        self.fd = fd
        self.own_pgrp = own_pgrp

    def hand_to(self, pgid: int) -> None:
        _set_foreground(self.fd, pgid)

    def take_back(self) -> None:
        _set_foreground(self.fd, self.own_pgrp)


def foreground_terminal() -> Terminal | None:
    """Return the terminal on stdin, stdout or stderr if our group is in front."""
    own_pgrp = os.getpgrp()
    for fd in (0, 1, 2):
        try:
            if os.isatty(fd) and os.tcgetpgrp(fd) == own_pgrp:
                return Terminal(fd=fd, own_pgrp=own_pgrp)
        except OSError:  # ENOTTY: a terminal, but not our controlling one
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
