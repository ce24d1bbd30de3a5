"""Process lifecycle: the private work folder, signals, and the parent watch.

Go plugins ignore SIGINT (a Ctrl-C in Vault's terminal reaches the whole
process group, and Vault decides when its plugins stop) and exit on SIGTERM
or when Vault calls GRPCController.Shutdown. A plugin whose Vault died is
not stopped by anyone, so the main thread polls the parent process id and
stops when the process that started the plugin is gone.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from types import FrameType

logger = logging.getLogger(__name__)

WORK_DIR_PREFIX = "agent-bridge-plugin-"
PARENT_POLL_SECONDS = 0.5
# Linux limits a unix socket path to 107 bytes; the work folder contains
# one socket, the one Vault dials.
_MAX_SOCKET_PATH = 107
_LONGEST_SOCKET_NAME = len("plugin.sock")
_FALLBACK_BASE = "/tmp"  # noqa: S108 - used only when the configured base is too long
_WORK_DIR_PATTERN = re.compile(re.escape(WORK_DIR_PREFIX) + r"(\d+)-")


def make_work_dir(base: str | None) -> Path:
    """Create the 0700 folder that contains every socket of this process.

    Its name carries the process id, so a later start can remove the folder
    of a plugin that was killed with SIGKILL and could not clean up.
    """
    root = base or tempfile.gettempdir()
    prefix = f"{WORK_DIR_PREFIX}{os.getpid()}-"
    # mkdtemp appends 8 random characters to the prefix.
    longest = len(os.path.join(root, prefix)) + 8 + 1 + _LONGEST_SOCKET_NAME
    if longest > _MAX_SOCKET_PATH:
        logger.warning(
            "socket folder base is too long for unix socket paths; using %s",
            _FALLBACK_BASE,
            extra={"base": root},
        )
        root = _FALLBACK_BASE
    _remove_stale_work_dirs(root)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=root))


def remove_work_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _remove_stale_work_dirs(base: str) -> None:
    root = Path(base)
    try:
        candidates = list(root.glob(WORK_DIR_PREFIX + "*"))
    except OSError:
        return
    for candidate in candidates:
        match = _WORK_DIR_PATTERN.match(candidate.name)
        if match is None or not candidate.is_dir():
            continue
        try:
            if candidate.stat().st_uid != os.getuid():
                continue
        except OSError:
            continue
        if not _process_exists(int(match.group(1))):
            logger.info(
                "removing the work folder of a dead plugin process",
                extra={"path": str(candidate)},
            )
            shutil.rmtree(candidate, ignore_errors=True)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Lifecycle:
    """Collect the reasons to stop and wait for the first one."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._reason = ""
        self._parent_pid = os.getppid()
        self._interrupts = 0

    @property
    def reason(self) -> str:
        return self._reason

    def request_stop(self, reason: str) -> None:
        if not self._stop.is_set():
            self._reason = reason
            logger.info("plugin stopping", extra={"reason": reason})
            self._stop.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_sigterm)
        signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        self.request_stop("received SIGTERM")

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        self._interrupts += 1
        logger.debug("ignoring SIGINT", extra={"count": self._interrupts})

    def wait(self) -> str:
        """Block until a stop is requested or the parent process is gone."""
        # An orphan is re-parented (to init or a subreaper), so a changed
        # parent id means Vault exited, however it died.
        while not self._stop.wait(PARENT_POLL_SECONDS):
            if os.getppid() != self._parent_pid:
                self.request_stop(f"parent process {self._parent_pid} (Vault) exited")
        return self._reason
