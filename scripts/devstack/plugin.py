"""Build the plugin file and install it in OpenBao's plugin directory."""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
from pathlib import Path

from devstack.procs import StackError

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
PLUGIN_NAME = "agent-bridge"


def build() -> Path:
    """Run scripts/build-plugin and return the built file."""
    result = subprocess.run(
        [str(ROOT / "scripts" / "build-plugin")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise StackError(
            f"scripts/build-plugin failed:\n{result.stderr}{result.stdout}"
        )
    return ROOT / "build" / "agent-bridge-plugin"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def install(built: Path, plugin_dir: Path, shiv_root: Path) -> str:
    """Copy the file into the plugin directory and return its sha256.

    The shiv root (where the file unpacks its native code) is made here, so
    the registration can point the plugin at it with `SHIV_ROOT`.
    """
    target = plugin_dir / PLUGIN_NAME
    shutil.copyfile(built, target)
    target.chmod(0o755)
    shiv_root.mkdir(parents=True, exist_ok=True, mode=0o700)
    return sha256_of(target)
