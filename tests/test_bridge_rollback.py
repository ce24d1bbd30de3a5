"""Vault's periodic rollback reaches the backend through the bridge.

Vault sends operation `rollback` on path "" to every mount about once a
minute, so this test waits up to 90 s for the first one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.plugin_fixtures.openbao import install_echo_plugin, start_openbao, wait_for

pytestmark = pytest.mark.timeout(180)


def test_rollback_reaches_backend(tmp_path: Path) -> None:
    bao = start_openbao(tmp_path, log_level="info")
    try:
        install_echo_plugin(bao, "echo")
        bao.register("echo", "echo")
        bao.enable("r", "echo")

        def rolled_back() -> bool:
            counts = bao.request("GET", "r/stats")["data"]["counts"]
            return int(counts.get("rollback", 0)) >= 1

        assert wait_for(rolled_back, 90, interval=2)
        log_lines = bao.log_path.read_text().splitlines()
        errors = [
            line for line in log_lines if "[ERROR]" in line and "rollback" in line
        ]
        assert errors == []
    finally:
        bao.stop()
