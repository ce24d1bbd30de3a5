"""Short private folders for unix sockets in tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path


def socket_folder(tmp_path: Path, prefix: str) -> Iterator[Path]:
    """Yield a 0700 folder under /tmp, removed afterwards, for unix sockets.

    Unix socket paths are limited to 107 bytes, and pytest's tmp_path can be
    longer, so the folder takes only the last 8 characters of its name.
    """
    path = Path(f"/tmp/{prefix}-{os.getpid()}-{tmp_path.name[-8:]}")
    path.mkdir(mode=0o700)
    yield path
    for child in path.iterdir():
        child.unlink()
    path.rmdir()
