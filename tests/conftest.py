"""Fixtures shared by the whole suite.

The `stack` fixture starts the embedded stack (PostgreSQL, the attestor,
OpenBao with the built plugin registered and configured) once per session in
a temporary folder, so the suite never touches a stack a developer runs in
`.stack/`. Fixture modules of the individual parts live in `tests/support/`
and are imported below.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from devstack import stack as devstack  # noqa: E402


@pytest.fixture(scope="session")
def stack() -> Iterator[devstack.StackState]:
    # Not under pytest's 0700 temporary root: agents running as other users
    # must reach the attestor socket, and PostgreSQL's user its data folder.
    state_dir = Path(tempfile.mkdtemp(prefix="agent-bridge-stack-"))
    state_dir.chmod(0o755)
    state = devstack.up(state_dir)
    try:
        yield state
    finally:
        devstack.down(state_dir)
        shutil.rmtree(state_dir, ignore_errors=True)


# --- database backend fixtures (plugin/database): a PostgreSQL cluster per
# session and a backend mount per test, defined in tests/support/database.py.
from tests.support.database import mount, pg_cluster  # noqa: E402, F401
