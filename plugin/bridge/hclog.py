"""Log to stderr as hclog JSON lines, the format Vault re-logs from plugins.

go-plugin parses each stderr line of a plugin as JSON and re-logs it through
Vault's own logger. `@level` picks the level and `@message` the message.
`@timestamp` must match Go's layout `2006-01-02T15:04:05.000000Z07:00`, with
exactly six fractional digits. Every other key becomes a key/value pair. A
line that does not parse is logged verbatim at debug level.

OpenBao 2.7.2 passes no log level to the plugin. The plugin inherits Vault's
environment, so `BAO_LOG_LEVEL` or `VAULT_LOG_LEVEL` reach it when Vault was
started with them. `AGENT_BRIDGE_LOG_LEVEL` overrides both.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from datetime import UTC, datetime
from typing import Any, TextIO

TRACE = 5
LEVEL_ENV_VARS = ("AGENT_BRIDGE_LOG_LEVEL", "BAO_LOG_LEVEL", "VAULT_LOG_LEVEL")
DEFAULT_LEVEL = "info"

_PYTHON_LEVELS = {
    "trace": TRACE,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "off": logging.CRITICAL + 10,
}

# Attributes every LogRecord has; anything else came in through `extra=` and
# is written as an hclog key/value pair.
_RECORD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


def hclog_level(levelno: int) -> str:
    """Return the hclog name of a Python log level."""
    if levelno <= TRACE:
        return "trace"
    if levelno <= logging.DEBUG:
        return "debug"
    if levelno <= logging.INFO:
        return "info"
    if levelno <= logging.WARNING:
        return "warn"
    return "error"


def level_from_env(environ: dict[str, str] | os._Environ[str]) -> int:
    """Return the Python log level named by the first level variable set."""
    for name in LEVEL_ENV_VARS:
        value = environ.get(name, "").strip().lower()
        if value in _PYTHON_LEVELS:
            return _PYTHON_LEVELS[value]
    return _PYTHON_LEVELS[DEFAULT_LEVEL]


class HclogFormatter(logging.Formatter):
    """Format a record as one hclog JSON line."""

    def format(self, record: logging.LogRecord) -> str:
        created = datetime.fromtimestamp(record.created, UTC)
        entry: dict[str, Any] = {
            "@level": hclog_level(record.levelno),
            "@message": record.getMessage(),
            "@module": record.name,
            "@timestamp": created.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            entry["error"] = f"{type(error).__name__}: {error}"
            entry["stack"] = "".join(traceback.format_tb(record.exc_info[2]))
        return json.dumps(entry, default=str, separators=(",", ":"))


def configure(stream: TextIO | None = None, level: int | None = None) -> None:
    """Send every log record of this process to stderr as hclog JSON."""
    logging.addLevelName(TRACE, "TRACE")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(HclogFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level if level is not None else level_from_env(os.environ))
    # grpcio logs through the "grpc" logger; its debug output is noise here.
    logging.getLogger("grpc").setLevel(max(root.level, logging.INFO))
