"""scripts/build-plugin: reproducible single-file builds that Vault can run."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from plugin.bridge import handshake
from tests.plugin_fixtures.openbao import OpenBao, file_sha256, start_openbao
from tests.test_bridge_tls import vault_identity

ROOT = Path(__file__).resolve().parents[1]
HANDSHAKE = re.compile(r"1\|5\|unix\|(/\S+/plugin\.sock)\|grpc\|[A-Za-z0-9+/]+\n")

pytestmark = pytest.mark.timeout(300)


def build(output_dir: Path, *extra: str) -> Path:
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts/build-plugin"),
            "--output-dir",
            str(output_dir),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    match = re.search(r"^path:\s+(\S+)$", result.stdout, re.MULTILINE)
    assert match, result.stdout
    return Path(match.group(1))


ECHO_BUILD = (
    "--name",
    "echo-plugin",
    "--entry-point",
    "tests.plugin_fixtures.echo_plugin:main",
    "--extra-package",
    "tests/plugin_fixtures",
)


@pytest.fixture(scope="module")
def echo_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("echo-build"), *ECHO_BUILD)


def test_rebuild_is_byte_identical(tmp_path: Path) -> None:
    first = build(tmp_path / "one")
    second = build(tmp_path / "two")

    assert file_sha256(first) == file_sha256(second)
    assert first.read_bytes().startswith(b"#!/")
    assert b" -I\n" in first.read_bytes()[:200]


def test_source_change_changes_sha256(tmp_path: Path, echo_file: Path) -> None:
    production = build(tmp_path / "prod")

    assert file_sha256(production) != file_sha256(echo_file)


def test_built_file_rejects_direct_run(echo_file: Path, tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "SHIV_ROOT": str(tmp_path / "shiv")}
    result = subprocess.run(
        [str(echo_file)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 1
    assert result.stdout == ""
    assert "not meant to be run directly" in result.stderr


@pytest.fixture
def started_plugin(
    echo_file: Path, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    vault_cert = vault_identity().cert_pem.decode()
    env = {
        "PATH": os.environ["PATH"],
        "SHIV_ROOT": str(tmp_path / "shiv"),
        "TMPDIR": str(tmp_path),
        handshake.MAGIC_COOKIE_KEY: handshake.MAGIC_COOKIE_VALUE,
        "PLUGIN_PROTOCOL_VERSIONS": "5",
        "PLUGIN_CLIENT_CERT": vault_cert,
    }
    # HOME is unset on purpose: the file must not need it.
    process = subprocess.Popen(
        [str(echo_file)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    try:
        yield process, line
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        assert process.stderr is not None
        process.stderr.close()
        process.stdout.close()


def test_built_file_handshake_and_sigterm(
    started_plugin: tuple[subprocess.Popen[str], str],
) -> None:
    process, line = started_plugin

    match = HANDSHAKE.fullmatch(line)
    if match is None:
        process.kill()
        assert process.stderr is not None
        pytest.fail(f"no handshake line: {line!r}; stderr: {process.stderr.read()}")
    socket_path = Path(match.group(1))
    assert socket_path.exists()
    assert (socket_path.parent.stat().st_mode & 0o777) == 0o700

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=10) == 0
    assert not socket_path.parent.exists()


@pytest.fixture
def bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenBao]:
    server = start_openbao(tmp_path_factory.mktemp("openbao"))
    try:
        yield server
    finally:
        server.stop()


def test_built_file_serves_openbao(bao: OpenBao, echo_file: Path) -> None:
    target = bao.plugin_dir / echo_file.name
    target.write_bytes(echo_file.read_bytes())
    target.chmod(0o755)
    shiv_root = bao.folder / "shiv"

    started = time.monotonic()
    bao.register("echo-built", echo_file.name, env=[f"SHIV_ROOT={shiv_root}"])
    bao.enable("built", "echo-built")
    bao.request("POST", "built/kv/k", {"v": 1})

    assert bao.request("GET", "built/kv/k")["data"] == {"v": 1}
    assert time.monotonic() - started < 60
    info = bao.request("GET", "sys/plugins/catalog/secret/echo-built?version=v0.1.0")
    assert info["data"]["version"] == "v0.1.0"
    assert any(shiv_root.iterdir())
