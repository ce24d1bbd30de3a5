"""A throwaway PostgreSQL cluster with password (scram-sha-256) authentication.

initdb refuses to run as root, so when the stack runs as root the cluster runs
as the dedicated system user `agentbridge-pg`. Every connection, over TCP and
over the Unix socket, must present a password, so a wrong password is refused
and a child process cannot connect as the superuser without it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import pwd
import secrets
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from devstack.procs import StackError, is_alive, port_open, wait_until

log = logging.getLogger(__name__)

SERVICE_USER = "agentbridge-pg"
SUPERUSER = "postgres"

DEMO_SQL = """
CREATE TABLE public.orders (
    id serial PRIMARY KEY,
    customer text NOT NULL,
    amount_cents integer NOT NULL,
    placed_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO public.orders (customer, amount_cents) VALUES
    ('acme', 12900), ('globex', 4500), ('initech', 78000), ('umbrella', 1999);
ALTER TABLE public.orders OWNER TO demo_owner;
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO PUBLIC;
"""


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    superuser: str
    password: str
    data_dir: Path
    socket_dir: Path
    pid: int

    def conninfo(self, dbname: str = "postgres") -> dict[str, str | int]:
        """Connection parameters for psycopg; the password is never in a DSN."""
        return {
            "host": self.host,
            "port": self.port,
            "user": self.superuser,
            "password": self.password,
            "dbname": dbname,
        }


def find_bin_dir() -> Path:
    """Return the newest /usr/lib/postgresql/N/bin that has initdb."""
    override = os.environ.get("AGENT_BRIDGE_PG_BIN")
    if override:
        return Path(override)
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: (
            int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0
        ),
    )
    if not candidates:
        raise StackError(
            "PostgreSQL server binaries not found under /usr/lib/postgresql; "
            "install Debian's postgresql package or set AGENT_BRIDGE_PG_BIN"
        )
    return candidates[-1].parent


def _service_user() -> str | None:
    """Return the user the cluster runs as, creating it when we are root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVICE_USER)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                SERVICE_USER,
            ],
            check=True,
        )
        log.info("created system user %s", SERVICE_USER)
    return SERVICE_USER


def _uid_of(user: str | None) -> int:
    return os.geteuid() if user is None else pwd.getpwnam(user).pw_uid


def _reachable_by(user: str | None, path: Path) -> bool:
    if user is None:
        return True
    probe = subprocess.run(
        [
            "setpriv",
            "--reuid",
            user,
            "--regid",
            user,
            "--clear-groups",
            "test",
            "-x",
            str(path),
        ],
        check=False,
    )
    return probe.returncode == 0


def _cluster_home(state_dir: Path, user: str | None) -> Path:
    """Return where the cluster's files live.

    The service user must be able to walk to its data directory. When the
    checkout sits under a private home (for example /root), the cluster
    lives under /var/tmp instead, named after the state folder, and the
    state folder links to it.
    """
    link = state_dir / "postgres"
    if _reachable_by(user, state_dir):
        if link.is_symlink():
            link.unlink()
        return link
    digest = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:12]
    # /var/tmp is shared: refuse a folder of that name that someone else made.
    home = Path("/var/tmp") / f"agent-bridge-pg-{digest}"  # noqa: S108
    if home.exists() and home.stat().st_uid not in (0, os.geteuid(), _uid_of(user)):
        raise StackError(f"{home} belongs to another user; remove it and retry")
    if not link.is_symlink():
        link.symlink_to(home)
    return home


def start(state_dir: Path, port: int, bin_dir: Path | None = None) -> Postgres:
    """Create (first time) and start the cluster on 127.0.0.1:`port`.

    `bin_dir` contains the server's initdb and pg_ctl; the default is
    `find_bin_dir()`.
    """
    if bin_dir is None:
        bin_dir = find_bin_dir()
    user = _service_user()
    home = _cluster_home(state_dir, user)
    data_dir, socket_dir = home / "data", home / "run"
    password_file = state_dir / "postgres-superuser-password"

    if not (data_dir / "PG_VERSION").exists():
        _init_cluster(bin_dir, home, user, password_file)
    password = password_file.read_text().strip()

    log_path = home / "server.log"
    options = (
        f"-c listen_addresses=127.0.0.1 -c port={port} "
        f"-c unix_socket_directories={socket_dir} -c fsync=off "
        "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
    )
    _run_as(
        user,
        [
            str(bin_dir / "pg_ctl"),
            "start",
            "-w",
            "-t",
            "60",
            "-D",
            str(data_dir),
            "-l",
            str(log_path),
            "-o",
            options,
        ],
        cwd=home,
    )
    pid = int((data_dir / "postmaster.pid").read_text().split()[0])
    wait_until(
        "PostgreSQL", lambda: port_open(port), timeout=30, pid=pid, log_path=log_path
    )
    pg = Postgres("127.0.0.1", port, SUPERUSER, password, data_dir, socket_dir, pid)
    _create_demo(pg)
    return pg


def _init_cluster(
    bin_dir: Path, home: Path, user: str | None, password_file: Path
) -> None:
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True, mode=0o700)
    (home / "run").mkdir(mode=0o755)
    password = secrets.token_urlsafe(24)
    password_file.write_text(password + "\n")
    password_file.chmod(0o600)
    initdb_pw = home / "initdb-password"
    initdb_pw.write_text(password + "\n")
    if user is not None:
        for path in (home, home / "run", initdb_pw):
            shutil.chown(path, user, user)
    try:
        _run_as(
            user,
            [
                str(bin_dir / "initdb"),
                "-D",
                str(home / "data"),
                "--auth=scram-sha-256",
                f"--username={SUPERUSER}",
                f"--pwfile={initdb_pw}",
                "--encoding=UTF8",
                "--locale=C",
            ],
            cwd=home,
        )
    finally:
        initdb_pw.unlink(missing_ok=True)
    log.info("initialised PostgreSQL cluster in %s", home / "data")


def _run_as(user: str | None, argv: list[str], *, cwd: Path) -> None:
    result = subprocess.run(
        argv,
        cwd=cwd,
        user=user,
        group=user,
        extra_groups=[] if user else None,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise StackError(
            f"{Path(argv[0]).name} failed with exit code {result.returncode}: "
            f"{result.stderr.strip() or result.stdout.strip()}"
        )


def _create_demo(pg: Postgres) -> None:
    """Create the `demo` database with its `orders` table once."""
    import psycopg

    with psycopg.connect(**pg.conninfo(), autocommit=True) as conn:  # type: ignore[arg-type]
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = 'demo'").fetchone():
            return
        conn.execute("CREATE ROLE demo_owner NOLOGIN")
        conn.execute("CREATE DATABASE demo OWNER demo_owner")
    with psycopg.connect(**pg.conninfo("demo"), autocommit=True) as conn:  # type: ignore[arg-type]
        conn.execute(DEMO_SQL)
    log.info("created database demo with table public.orders")


def remove(state_dir: Path) -> None:
    """Delete a stopped cluster's files, also when they live under /var/tmp."""
    link = state_dir / "postgres"
    if link.is_symlink():
        shutil.rmtree(link.resolve(), ignore_errors=True)
        link.unlink()
    elif link.exists():
        shutil.rmtree(link, ignore_errors=True)


def stop(pid: int, data_dir: Path) -> None:
    """Fast shutdown: SIGINT to the postmaster, then wait for it to go."""
    if not is_alive(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGINT)
    wait_until("PostgreSQL shutdown", lambda: not is_alive(pid), timeout=30)
    log.info("stopped PostgreSQL pid=%d data=%s", pid, data_dir)
