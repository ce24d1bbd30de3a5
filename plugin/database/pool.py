"""A small thread-safe pool of psycopg connections for one connection config.

psycopg is imported on first use, so a mount that never touches a database
starts without it. A connection failure raises at once instead of waiting
for a background reconnect, so a revoke against a stopped server fails
fast and Vault retries it later.
"""

from __future__ import annotations

import contextlib
import logging
import select
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plugin.database.errors import (
    AuthenticationFailedError,
    DatabaseUnavailableError,
    StatementFailedError,
)

if TYPE_CHECKING:
    import psycopg

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5
CHECKOUT_TIMEOUT = 30.0
# An idle connection older than this gets a `SELECT 1` before reuse, because
# a firewall may have dropped it silently. Younger ones get only a check of
# their socket, which costs no round trip.
PING_AFTER_IDLE = 30.0
# SQLSTATE classes that mean the server went away, not that a statement failed.
_UNAVAILABLE_STATES = ("08", "57P")
# Attribute of a psycopg error that lists the secrets its statement contained.
STATEMENT_SECRETS = "agent_bridge_statement_secrets"


@dataclass(frozen=True)
class PoolSettings:
    """Limits of one pool; zero `max_lifetime` keeps connections forever."""

    max_open: int = 4
    max_idle: int = 0
    max_lifetime: int = 0


class ConnectionPool:
    """Connections to one server, reused across requests and threads."""

    def __init__(
        self,
        name: str,
        params: dict[str, Any],
        password: str,
        settings: PoolSettings,
        tls_files: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self._params = dict(params)
        self._password = password
        self._settings = settings
        self._slots = threading.BoundedSemaphore(max(settings.max_open, 1))
        # (connection, monotonic time it opened, monotonic time it went idle)
        self._idle: list[tuple[psycopg.Connection[Any], float, float]] = []
        self._lock = threading.Lock()
        self._closed = False
        self._tls_dir = _write_tls_files(self._params, tls_files or {})

    @property
    def target(self) -> str:
        """The server and user, for messages: `user@host:port/dbname`."""
        p = self._params
        host = p.get("host", "localhost")
        return f"{p.get('user')}@{host}:{p.get('port', 5432)}/{p.get('dbname', '')}"

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """Lend an autocommit connection; errors become the backend's errors."""
        if not self._slots.acquire(timeout=CHECKOUT_TIMEOUT):
            raise DatabaseUnavailableError(
                f"timed out after {CHECKOUT_TIMEOUT:.0f} s waiting for a free "
                f"connection to {self.target} (config {self.name!r}); raise "
                "max_open_connections or retry"
            )
        try:
            conn, born = self._checkout()
            try:
                with translate_errors(f"config {self.name!r}", [self._password]):
                    yield conn
            finally:
                self._checkin(conn, born)
        finally:
            self._slots.release()

    def close(self) -> None:
        """Close idle connections and remove TLS files.

        Connections lent out at the time close when they are returned.
        """
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn, _, _ in idle:
            conn.close()
        if self._tls_dir is not None:
            shutil.rmtree(self._tls_dir, ignore_errors=True)

    def _checkout(self) -> tuple[psycopg.Connection[Any], float]:
        while True:
            with self._lock:
                if not self._idle:
                    break
                conn, born, idle_since = self._idle.pop()
            if self._usable(conn, born, idle_since):
                return conn, born
            conn.close()
        return self._connect(), time.monotonic()

    def _usable(
        self, conn: psycopg.Connection[Any], born: float, idle_since: float
    ) -> bool:
        now = time.monotonic()
        lifetime = self._settings.max_lifetime
        if conn.closed or conn.broken or (lifetime and now - born > lifetime):
            return False
        if _has_input(conn):
            # An idle connection receives nothing unless the server ended it,
            # as a restart does: it sends an error and closes the socket.
            return False
        if now - idle_since < PING_AFTER_IDLE:
            return True
        try:
            conn.execute("SELECT 1")
        except Exception:  # any failure just means: open a new one
            return False
        return True

    def _checkin(self, conn: psycopg.Connection[Any], born: float) -> None:
        """Return a healthy connection to the idle list, or close it.

        A broken connection closes the idle ones too.
        """
        from psycopg.pq import TransactionStatus

        max_idle = self._settings.max_idle or self._settings.max_open
        reusable = (
            not conn.closed
            and not conn.broken
            and conn.info.transaction_status == TransactionStatus.IDLE
        )
        with self._lock:
            if reusable and not self._closed and len(self._idle) < max_idle:
                self._idle.append((conn, born, time.monotonic()))
                return
            # Connections opened before a failure like this one are likely
            # dead too, so the next request reconnects instead of failing.
            stale = self._idle if conn.broken else []
            if conn.broken:
                self._idle = []
        conn.close()
        for other, _, _ in stale:
            other.close()

    def _connect(self) -> psycopg.Connection[Any]:
        import psycopg

        try:
            return psycopg.connect(
                **self._params,
                password=self._password,
                autocommit=True,
                connect_timeout=CONNECT_TIMEOUT,
            )
        except psycopg.Error as err:
            reason = scrub(str(err).strip(), [self._password])
            logger.warning(
                "connect failed: config=%s target=%s error=%s",
                self.name,
                self.target,
                reason,
            )
            # libpq reports connection failures without a SQLSTATE (psycopg
            # 3.3), so a rejected password is recognised by its message.
            failed = "authentication failed" in reason
            error = AuthenticationFailedError if failed else DatabaseUnavailableError
            raise error(
                f"unable to connect to PostgreSQL {self.target} for config "
                f"{self.name!r}: {reason}"
            ) from None


@contextlib.contextmanager
def translate_errors(context: str, secrets: Sequence[str]) -> Iterator[None]:
    """Turn psycopg errors into the backend's errors, without secrets or SQL text."""
    import psycopg

    try:
        yield
    except psycopg.Error as err:
        state = err.sqlstate or ""
        primary = err.diag.message_primary or _client_reason(err)
        message = scrub(
            f"{context}: {primary} (SQLSTATE {state or 'none'})",
            [*secrets, *getattr(err, STATEMENT_SECRETS, ())],
        )
        if not state or state.startswith(_UNAVAILABLE_STATES):
            raise DatabaseUnavailableError(
                f"PostgreSQL unavailable: {message}"
            ) from None
        # `from None`: psycopg's own message quotes the failing SQL, which
        # may contain a password.
        raise StatementFailedError(f"statement failed: {message}") from None


def _client_reason(err: Exception) -> str:
    """Return the error class and libpq's reason for an error without a server message.

    A lost connection has no diagnostics from the server, and psycopg's text
    is then libpq's message, such as "server closed the connection
    unexpectedly", with no SQL in it. Its lines are joined into one.
    """
    reason = " ".join(str(err).split())
    name = type(err).__name__
    return f"{name}: {reason}" if reason else name


def scrub(text: str, secrets: Sequence[str]) -> str:
    """Replace every non-empty secret in `text` with `<redacted>`.

    Each secret is also replaced in its SQL-escaped forms, which an error
    quoting the statement's text (a syntax error's token) contains.
    """
    forms = {
        form
        for secret in secrets
        if secret
        for form in (
            secret,
            secret.replace("'", "''"),
            secret.replace("\\", "\\\\").replace("'", "''"),
        )
    }
    # Longest first, so a secret that contains another is replaced whole.
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, "<redacted>")
    return text


@contextlib.contextmanager
def redact_errors(secrets: Sequence[str]) -> Iterator[None]:
    """Mark a psycopg error raised inside with `secrets`, for `translate_errors`.

    The statements run on a lent connection may contain secrets the pool
    does not know, such as a generated password. PostgreSQL's messages
    quote them, for example in "invalid input syntax for type integer".
    """
    import psycopg

    try:
        yield
    except psycopg.Error as err:
        known = getattr(err, STATEMENT_SECRETS, ())
        setattr(err, STATEMENT_SECRETS, (*known, *secrets))
        raise


def _has_input(conn: psycopg.Connection[Any]) -> bool:
    """Return whether the connection's socket has data or EOF waiting."""
    try:
        readable, _, _ = select.select([conn.fileno()], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _write_tls_files(params: dict[str, Any], pem: dict[str, str]) -> Path | None:
    """Write PEM values to private files and point libpq at them."""
    wanted = {k: v for k, v in pem.items() if v}
    if not wanted:
        return None
    folder = Path(tempfile.mkdtemp(prefix="agent-bridge-tls-"))
    for param, text in wanted.items():
        path = folder / param
        path.touch(mode=0o600)
        path.write_text(text)
        params[param] = str(path)
    if "sslrootcert" in wanted:
        params.setdefault("sslmode", "verify-full")
    return folder
