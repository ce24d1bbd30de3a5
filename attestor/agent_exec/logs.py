"""Module loggers for agent-exec that import `logging` only to emit a record.

Importing `logging` takes about 8 ms with what it pulls in (`threading`,
`traceback`, `string`), a tenth of an agent-exec call, and at its default
level agent-exec emits only warnings, which most calls never do. Each module
still has one logger named after it. A record at or above the level set by
`configure` imports `logging` and goes to the standard logger of that name.
"""

from __future__ import annotations

import sys

DEBUG, INFO, WARNING = 10, 20, 30

_level = WARNING
_handler_pending = False


class Logger:
    """A named logger whose records below the agent-exec level cost nothing."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def debug(self, msg: str, *args: object, exc_info: bool = False) -> None:
        self._log(DEBUG, msg, args, exc_info)

    def info(self, msg: str, *args: object) -> None:
        self._log(INFO, msg, args, False)

    def warning(self, msg: str, *args: object) -> None:
        self._log(WARNING, msg, args, False)

    def _log(
        self, level: int, msg: str, args: tuple[object, ...], exc_info: bool
    ) -> None:
        # Once `logging` is loaded (by a test runner, or by an earlier record)
        # its own level checks apply, as for any standard logger.
        if level < _level and "logging" not in sys.modules:
            return
        import logging

        _install_handler()
        logging.getLogger(self.name).log(level, msg, *args, exc_info=exc_info)


def get_logger(name: str) -> Logger:
    """Return the logger of module `name`."""
    return Logger(name)


def configure(verbose: int) -> None:
    """Send records of `-v` (info) or `-vv` (debug) and above to stderr."""
    global _level, _handler_pending  # noqa: PLW0603 - process-wide like logging's own
    _level = (WARNING, INFO, DEBUG)[min(verbose, 2)]
    _handler_pending = True
    if verbose:
        # Imported now, before any signal handler can log: a record emitted
        # from a handler while the main flow is inside `import logging` would
        # meet a partly initialised module.
        import logging  # noqa: F401
    if "logging" in sys.modules:
        _install_handler()


def _install_handler() -> None:
    global _handler_pending  # noqa: PLW0603
    if not _handler_pending:
        return
    import logging

    _handler_pending = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("agent-exec: %(message)s"))
    root = logging.getLogger("attestor")
    root.addHandler(handler)
    root.setLevel(_level)
