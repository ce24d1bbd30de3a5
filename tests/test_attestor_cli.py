"""The `agent-attestor` command line against a daemon it started itself."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import jwt
import pytest

from tests.support.attestor_env import CLI, serve_in_subprocess, wait_for, write_config

pytestmark = pytest.mark.timeout(120)

AGENTS = """
[[agent]]
name = "operator"
selectors = ["uid:0"]
"""


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    config: Path
    socket: str
    log: Path

    def log_lines(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line]

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "AGENT_ATTESTOR_SOCKET": self.socket}
        return subprocess.run(
            [CLI, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=check,
        )


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    config = write_config(tmp_path, AGENTS)
    socket_path = str(tmp_path / "run" / "agent.sock")
    with serve_in_subprocess(config) as (process, log):
        yield Served(process, config, socket_path, log)


def test_token_prints_jwt(served: Served) -> None:
    result = served.run("token", "--tool", "psql")

    claims = jwt.decode(result.stdout.strip(), options={"verify_signature": False})
    assert claims["sub"] == "operator"
    assert claims["asserted"] == {"tool": "psql"}
    assert claims["process"]["script"]["path"] == CLI


def test_whoami_shows_identity(served: Served) -> None:
    result = served.run("whoami")
    as_json = json.loads(served.run("inspect", "--json").stdout)

    assert "agent:      operator" in result.stdout
    assert f"script:     file {CLI}" in result.stdout
    assert as_json["agent"] == "operator"
    assert as_json["process"]["uid"] == "0"


def test_keys_rotate_while_serving(served: Served) -> None:
    before = jwt.get_unverified_header(served.run("token").stdout.strip())["kid"]
    listed = served.run("keys", "list", "--config", str(served.config)).stdout
    upcoming = re.search(r"next:\s+(\S+)", listed)
    assert upcoming is not None

    rotated = served.run("keys", "rotate", "--config", str(served.config))
    after = jwt.get_unverified_header(served.run("token").stdout.strip())["kid"]

    assert f"current: {upcoming.group(1)}" in rotated.stdout
    assert f"retired: {before}" in rotated.stdout
    assert rotated.stderr == ""
    assert after == upcoming.group(1)


def test_sighup_reload_keeps_config_on_error(served: Served) -> None:
    good = served.config.read_text()
    served.config.write_text(good.replace('"uid:0"', '"uid:0", "ttl:5"'))

    served.process.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "reload failed" in served.log.read_text(), timeout=10)
    still = served.run("token")

    errors = [line for line in served.log_lines() if line["level"] == "error"]
    assert f"{served.config}: agent 'operator': field 'selectors'" in str(
        errors[-1]["message"]
    )
    assert "unknown kind 'ttl'" in str(errors[-1]["message"])
    assert jwt.decode(still.stdout.strip(), options={"verify_signature": False})[
        "sub"
    ] == ("operator")


def test_sighup_reload_applies_agents(served: Served) -> None:
    served.config.write_text(served.config.read_text().replace("operator", "renamed"))

    served.process.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "reloaded" in served.log.read_text(), timeout=10)

    claims = jwt.decode(
        served.run("token").stdout.strip(), options={"verify_signature": False}
    )
    assert claims["sub"] == "renamed"


def test_sigterm_removes_socket(served: Served) -> None:
    served.process.terminate()

    assert served.process.wait(timeout=20) == 0
    assert not os.path.exists(served.socket)
    assert "agent-attestor stopped" in served.log.read_text()


def test_token_without_daemon_explains(tmp_path: Path) -> None:
    missing = str(tmp_path / "none.sock")

    result = subprocess.run(
        [CLI, "token", "--socket", missing],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 1
    assert f"no attestor is listening at {missing}" in result.stderr
    assert "[unavailable]" in result.stderr


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (lambda path: path.write_text("x"), "regular file"),
        (lambda path: path.mkdir(), "directory"),
    ],
)
def test_token_names_non_socket_path(
    tmp_path: Path, make: Callable[[Path], object], kind: str
) -> None:
    target = tmp_path / "not-a-socket"
    make(target)

    result = subprocess.run(
        [CLI, "token", "--socket", str(target)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 1
    assert f"{target} is a {kind}, not a socket" in result.stderr
    assert "no attestor is listening" not in result.stderr


def test_serve_rejects_bad_config(tmp_path: Path) -> None:
    config = write_config(tmp_path, AGENTS.replace("uid:0", "uid:-1"))

    result = subprocess.run(
        [CLI, "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 1
    assert f"{config}: agent 'operator': field 'selectors'" in result.stderr
