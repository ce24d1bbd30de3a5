"""Log output for the daemon: one JSON object per line on stderr.

Decision records carry their facts in `extra={"fields": {...}}`. The
formatter merges them into the line, so a log shipper gets pid, exe, agent,
jti and the rest as separate keys.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from typing import Any


class JSONFormatter(logging.Formatter):
    """Formats a record as one JSON line with `time`, `level`, `logger`, `message`."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, separators=(",", ":"))


def configure_logging(level: str = "INFO") -> None:
    """Send every log record to stderr as JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class RepeatFilter:
    """Lets one record per key (a uid) and interval reach the log; thread-safe."""

    def __init__(self, interval: float = 1.0, max_keys: int = 65536) -> None:
        self.interval = interval
        self.max_keys = max_keys
        self._last: dict[int, float] = {}
        self._lock = threading.Lock()

    def should_log(self, key: int) -> bool:
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(key, -self.interval) < self.interval:
                return False
            if len(self._last) >= self.max_keys:
                self._last.clear()
            self._last[key] = now
            return True
