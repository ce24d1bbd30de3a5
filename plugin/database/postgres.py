"""The SQL the backend runs: create, renew and drop users, rotate the admin password.

Every function takes an autocommit connection from `ConnectionPool` and
runs multi-statement steps in one transaction, so a failed step leaves
nothing behind. Each transaction is sent as one query string, so it costs
one round trip to the server. A create takes three: its statements up to the
password, the rest, and its COMMIT.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from plugin.database.pool import redact_errors
from plugin.database.sql import (
    quote_identifier,
    quote_literal,
    render,
    split_statements,
    uses_placeholder,
)

if TYPE_CHECKING:
    import psycopg

logger = logging.getLogger(__name__)

# Marks the roles this plugin created, in their COMMENT, for `tidy`.
COMMENT_MARKER = "agent-bridge "
# Placeholders whose values are secret: errors from their statements hide them.
SECRET_PLACEHOLDERS = ("password",)
DEFAULT_RENEW = "ALTER ROLE {{name}} VALID UNTIL {{expiration}}"
DEFAULT_ROTATE_ROOT = "ALTER ROLE {{name}} WITH PASSWORD {{password}}"
# pg_terminate_backend(pid, timeout) waits for the session to end (PostgreSQL 14+).
_TERMINATE_WAIT_MS = 5000
# Runs of one transaction when concurrent catalog updates keep failing it.
# The loser of a conflict fails only once the winner commits, so each round
# has a winner, and 10 runs cover up to 10 concurrent mints on one object (an
# estimate: new mints may join later rounds). With 5 runs, about 1 in 12 runs
# of the 8-thread test failed.
_CONFLICT_ATTEMPTS = 10


def run_statements(
    conn: psycopg.Connection[Any], statements: list[str], values: Mapping[str, str]
) -> None:
    """Render and run `statements` in one transaction, in one round trip."""
    with redact_errors(_secret_values(values)):
        _execute_batch(
            conn,
            _batch(render(query, values) for query in split_statements(statements)),
        )


def _secret_values(values: Mapping[str, str]) -> list[str]:
    return [values[key] for key in SECRET_PLACEHOLDERS if values.get(key)]


def _execute_batch(conn: psycopg.Connection[Any], *batches: bytes) -> None:
    """Run `batches` in order, all again when a concurrent transaction got in the way.

    Concurrent GRANTs on one object, or DROP OWNED of roles holding
    privileges on one object, update the same catalog row; PostgreSQL then
    fails one transaction with "tuple concurrently updated" (XX000) instead
    of waiting. The batches form one transaction (one implicit transaction,
    or an explicit one that the first batch begins) that rolled back as a
    whole, so running them again is safe.
    """
    import psycopg

    for attempt in range(1, _CONFLICT_ATTEMPTS + 1):
        try:
            for batch in batches:
                conn.execute(batch)
            return
        except psycopg.Error as err:
            if attempt == _CONFLICT_ATTEMPTS or not _is_transient_conflict(err):
                raise
            _roll_back_open(conn)  # a batch that began a transaction left it open
            logger.debug(
                "retrying after a concurrent catalog update attempt=%d sqlstate=%s",
                attempt,
                err.sqlstate,
            )
            time.sleep(random.uniform(0.005, 0.02) * attempt)  # noqa: S311


def _is_transient_conflict(err: Exception) -> bool:
    state = getattr(err, "sqlstate", None)
    if state in ("40001", "40P01"):  # serialization failure, deadlock
        return True
    diag = getattr(err, "diag", None)
    primary = getattr(diag, "message_primary", "") or ""
    return state == "XX000" and "concurrently updated" in primary


def create_user(
    conn: psycopg.Connection[Any],
    statements: list[str],
    values: Mapping[str, str],
    comment: Mapping[str, str],
    before_commit: Callable[[], object] | None = None,
) -> None:
    """Run the creation statements, then label the new role with `comment`.

    Both run in one transaction, so statements that do not create a role
    named `values["name"]` fail as a whole. `before_commit` runs while the
    transaction is open and the role exists for no one else: the caller
    waits there for its WAL entry, whose write overlaps the statements (the
    password's hashing takes PostgreSQL about 2.3 ms). If it raises, the
    transaction rolls back and nothing was created.
    """
    label = COMMENT_MARKER + json.dumps(dict(comment), sort_keys=True)
    role = quote_identifier(values["name"])
    templates = split_statements(statements)
    # PostgreSQL logs the whole query string of a failed statement, so the
    # statements after the last one with the password go in a second query:
    # their failures, such as a conflicting GRANT, then log no password.
    cut = 1 + max(
        (i for i, query in enumerate(templates) if uses_placeholder(query, "password")),
        default=-1,
    )
    head = ["BEGIN"] + [render(query, values) for query in templates[:cut]]
    tail = [render(query, values) for query in templates[cut:]]
    tail.append(f"COMMENT ON ROLE {role} IS {quote_literal(label)}")
    try:
        with redact_errors(_secret_values(values)):
            _execute_batch(conn, _batch(head), _batch(tail))
            if before_commit is not None:
                before_commit()
            conn.execute("COMMIT")
    except BaseException:
        _roll_back_open(conn)
        raise


def _roll_back_open(conn: psycopg.Connection[Any]) -> None:
    """End the transaction a failed step left open; a broken connection is dropped."""
    import psycopg

    if conn.closed or conn.broken:
        return
    try:
        conn.execute("ROLLBACK")
    except psycopg.Error as err:
        logger.warning("rollback of a failed create failed: error=%s", err)


def _batch(queries: Iterable[str]) -> bytes:
    """Join queries into one simple-protocol query string.

    psycopg sends a query without parameters with the simple query protocol,
    and PostgreSQL runs the statements of one such query in one implicit
    transaction: all of them commit, or none. A newline before each `;`
    ends a trailing `--` comment first.
    """
    return "\n;\n".join(queries).encode()


def role_exists(conn: psycopg.Connection[Any], username: str) -> bool:
    row = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (username,))
    return row.fetchone() is not None


def drop_user(
    conn: psycopg.Connection[Any], username: str, owner_role: str = ""
) -> bool:
    """Drop a generated role and hand its objects to `owner_role`.

    Blocks new logins, ends the role's sessions, reassigns what it owns
    (to the connected admin user when `owner_role` is empty), drops its
    remaining privileges and the role. Returns False when the role was
    already gone. REASSIGN and DROP OWNED act on the connected database
    only, so objects the role owns in other databases make DROP ROLE fail.
    """
    if not role_exists(conn, username):
        return False
    role = quote_identifier(username)
    owner = quote_identifier(owner_role) if owner_role else "CURRENT_USER"
    conn.execute(f"ALTER ROLE {role} NOLOGIN".encode())
    terminate_sessions(conn, username)
    _execute_batch(
        conn,
        _batch(
            [
                f"REASSIGN OWNED BY {role} TO {owner}",
                f"DROP OWNED BY {role}",
                f"DROP ROLE {role}",
            ]
        ),
    )
    return True


def terminate_sessions(conn: psycopg.Connection[Any], username: str) -> int:
    """End every session of `username` but ours; return how many were ended."""
    if conn.info.server_version >= 140000:
        query = (
            "SELECT count(pg_terminate_backend(pid, %s)) FROM pg_stat_activity "
            "WHERE usename = %s AND pid <> pg_backend_pid()"
        )
        row = conn.execute(query, (_TERMINATE_WAIT_MS, username)).fetchone()
    else:
        query = (
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE usename = %s AND pid <> pg_backend_pid()"
        )
        row = conn.execute(query, (username,)).fetchone()
    return int(row[0]) if row else 0


def revoke_user(
    conn: psycopg.Connection[Any],
    username: str,
    *,
    statements: list[str],
    owner_role: str,
) -> bool:
    """Revoke with the role's revocation statements, or `drop_user` without any.

    Returns False when the role was already gone: revoking twice succeeds.
    """
    if not statements:
        return drop_user(conn, username, owner_role)
    if not role_exists(conn, username):
        return False
    run_statements(conn, statements, {"name": username})
    return True


def renew_user(
    conn: psycopg.Connection[Any],
    username: str,
    expiration: str,
    statements: list[str],
) -> None:
    """Move the role's VALID UNTIL to `expiration`."""
    values = {"name": username, "expiration": expiration}
    run_statements(conn, statements or [DEFAULT_RENEW], values)


def rotate_password(
    conn: psycopg.Connection[Any],
    username: str,
    password_value: str,
    statements: list[str],
) -> None:
    """Set the admin user's password; `password_value` may be a SCRAM verifier."""
    values = {"name": username, "password": password_value}
    run_statements(conn, statements or [DEFAULT_ROTATE_ROOT], values)


class GeneratedRole(NamedTuple):
    """A role this plugin created: its decoded COMMENT and whether it lapsed."""

    comment: dict[str, Any]
    lapsed: bool  # VALID UNTIL passed more than the grace period ago


def list_generated_roles(
    conn: psycopg.Connection[Any], lapse_grace: int
) -> dict[str, GeneratedRole]:
    """Return the roles this plugin created, by name.

    A role lapsed when its VALID UNTIL lies more than `lapse_grace` seconds
    before the server's clock.
    """
    query = (
        "SELECT rolname, shobj_description(oid, 'pg_authid'), "
        "coalesce(rolvaliduntil < now() - make_interval(secs => %s), false) "
        "FROM pg_roles "
        "WHERE starts_with(coalesce(shobj_description(oid, 'pg_authid'), ''), %s)"
    )
    roles = {}
    rows = conn.execute(query, (lapse_grace, COMMENT_MARKER)).fetchall()
    for name, comment, lapsed in rows:
        decoded = _decode_comment(name, comment)
        if decoded is not None:
            roles[name] = GeneratedRole(decoded, bool(lapsed))
    return roles


def generated_role_comment(
    conn: psycopg.Connection[Any], username: str
) -> dict[str, Any] | None:
    """Return the decoded COMMENT of role `username` if this plugin created it.

    Returns None when the role does not exist, or its COMMENT lacks the
    plugin's marker or is unreadable.
    """
    query = (
        "SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = %s"
    )
    row = conn.execute(query, (username,)).fetchone()
    if row is None or not (row[0] or "").startswith(COMMENT_MARKER):
        return None
    return _decode_comment(username, row[0])


def _decode_comment(username: str, comment: str) -> dict[str, Any] | None:
    try:
        return dict(json.loads(comment[len(COMMENT_MARKER) :]))
    except (TypeError, ValueError):
        logger.warning("unreadable role comment: username=%s", username)
        return None
