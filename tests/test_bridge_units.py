"""Unit tests of the bridge's parts: log format, translation, broker, start-up."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from plugin.bridge import convert, handshake, hclog, lifecycle, tls
from plugin.bridge.backend_service import BackendService
from plugin.bridge.broker import Broker, BrokerError
from plugin.bridge.pb import backend_pb2, go_plugin_pb2
from plugin.logical import ErrorKind, LeaseOptions, Operation, Response, Secret
from tests.plugin_fixtures.echo_backend import EchoBackend

ROOT = Path(__file__).resolve().parents[1]
# Go's layout "2006-01-02T15:04:05.000000Z07:00", which go-plugin parses.
GO_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


class _NoStorage:
    def get(self, key: str) -> bytes | None:
        raise AssertionError("storage is not used here")

    def put(self, key: str, value: bytes) -> None:
        raise AssertionError("storage is not used here")

    def delete(self, key: str) -> None:
        raise AssertionError("storage is not used here")

    def list_page(self, prefix: str, after: str, limit: int) -> list[str]:
        raise AssertionError("storage is not used here")

    def list(self, prefix: str) -> list[str]:
        raise AssertionError("storage is not used here")


def test_hclog_line_fields() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(hclog.HclogFormatter())
    logger = logging.getLogger("plugin.test.hclog")
    logger.addHandler(handler)
    logger.propagate = False
    logger.warning("mounted %s", "e1", extra={"multiplex_id": "abc"})
    logger.removeHandler(handler)

    entry = json.loads(stream.getvalue())
    assert entry["@level"] == "warn"
    assert entry["@message"] == "mounted e1"
    assert entry["@module"] == "plugin.test.hclog"
    assert GO_TIMESTAMP.fullmatch(entry["@timestamp"])
    assert entry["multiplex_id"] == "abc"


@pytest.mark.parametrize(
    ("levelno", "name"),
    [
        (hclog.TRACE, "trace"),
        (logging.DEBUG, "debug"),
        (logging.INFO, "info"),
        (logging.WARNING, "warn"),
        (logging.ERROR, "error"),
        (logging.CRITICAL, "error"),
    ],
)
def test_hclog_level_names(levelno: int, name: str) -> None:
    assert hclog.hclog_level(levelno) == name


def test_log_level_from_environment() -> None:
    assert hclog.level_from_env({}) == logging.INFO
    assert hclog.level_from_env({"BAO_LOG_LEVEL": "debug"}) == logging.DEBUG
    assert hclog.level_from_env({"VAULT_LOG_LEVEL": "TRACE"}) == hclog.TRACE
    both = {"AGENT_BRIDGE_LOG_LEVEL": "error", "BAO_LOG_LEVEL": "debug"}
    assert hclog.level_from_env(both) == logging.ERROR


def test_handshake_line_format() -> None:
    line = handshake.handshake_line("/tmp/x/plugin.sock", "QUJD")

    assert line == "1|5|unix|/tmp/x/plugin.sock|grpc|QUJD\n"


@pytest.mark.parametrize(
    ("offered", "chosen"), [("5", 5), ("3,4,5", 5), ("3,4", 4), ("4", 4), ("3", 3)]
)
def test_protocol_version_highest_offered(offered: str, chosen: int) -> None:
    environ = {"PLUGIN_PROTOCOL_VERSIONS": offered}
    assert handshake.negotiate_protocol_version(environ) == chosen


@pytest.mark.parametrize("offered", ["", "2", "6", "1,2"])
def test_protocol_version_unknown_rejected(offered: str) -> None:
    with pytest.raises(handshake.HandshakeError) as caught:
        handshake.negotiate_protocol_version({"PLUGIN_PROTOCOL_VERSIONS": offered})

    message = str(caught.value)
    assert f"offered plugin protocol versions {offered!r}" in message
    assert "speaks versions 3 to 5" in message


def test_handshake_line_names_version() -> None:
    line = handshake.handshake_line("/tmp/x/plugin.sock", "", 4)
    assert line == "1|4|unix|/tmp/x/plugin.sock|grpc|\n"


def test_missing_cookie_exits_with_message() -> None:
    env = {k: v for k, v in os.environ.items() if k != handshake.MAGIC_COOKIE_KEY}
    result = subprocess.run(
        [sys.executable, "-m", "plugin"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert result.returncode == 1
    assert result.stdout == ""
    assert "VAULT_BACKEND_PLUGIN is missing" in result.stderr


def test_stdout_guard_keeps_handshake_first() -> None:
    script = (
        "from plugin.bridge import handshake\n"
        "handshake.prepare_process()\n"
        "print('noise before the handshake')\n"
        "handshake.write_handshake(handshake.handshake_line('/s', 'C'))\n"
        "print('noise after the handshake', flush=True)\n"
    )
    env = {**os.environ, handshake.MAGIC_COOKIE_KEY: handshake.MAGIC_COOKIE_VALUE}
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout == "1|5|unix|/s|grpc|C\n"
    assert "noise before the handshake" in result.stderr


def test_secret_durations_in_nanoseconds() -> None:
    secret = Secret(
        lease=LeaseOptions(ttl=300, max_ttl=600, renewable=True),
        internal_data={"serial": "s1", "n": 2},
    )
    before = time.time()

    message = convert.secret_to_proto(secret)

    options = message.lease_options
    assert options.TTL == 300 * 10**9
    assert options.MaxTTL == 600 * 10**9
    assert options.renewable is True
    assert options.issue_time.seconds >= int(before)
    assert json.loads(message.internal_data) == {"serial": "s1", "n": 2}


def test_secret_roundtrip_keeps_values() -> None:
    issued = Timestamp(seconds=1_700_000_000, nanos=500_000_000)
    message = backend_pb2.Secret(
        lease_options=backend_pb2.LeaseOptions(
            TTL=60 * 10**9, MaxTTL=120 * 10**9, increment=30 * 10**9, issue_time=issued
        ),
        internal_data='{"role": "r1"}',
        lease_id="mount/creds/r1/abc",
    )

    secret = convert.secret_from_proto(message)

    assert secret.lease.ttl == 60
    assert secret.lease.max_ttl == 120
    assert secret.lease.increment == 30
    assert secret.lease.issue_time == 1_700_000_000.5
    assert secret.internal_data == {"role": "r1"}
    assert secret.lease_id == "mount/creds/r1/abc"


def test_request_translation() -> None:
    message = backend_pb2.Request(
        id="req-1",
        operation="update",
        path="kv/a",
        data='{"x": 1}',
        mount_point="e1/",
        entity_id="ent",
        client_token_accessor="acc",
        display_name="jwt-agent",
        headers={"X-Tool": backend_pb2.Header(header=["psql"])},
        connection=backend_pb2.Connection(remote_addr="127.0.0.1", remote_port=5000),
    )

    request = convert.request_from_proto(message, _NoStorage())

    assert request.operation is Operation.UPDATE
    assert request.data == {"x": 1}
    assert request.headers == {"X-Tool": ["psql"]}
    assert request.connection is not None
    assert request.connection.remote_port == 5000
    assert (request.entity_id, request.client_token_accessor) == ("ent", "acc")


def test_unknown_operation_is_unsupported() -> None:
    message = backend_pb2.Request(operation="scan-everything", path="x")

    with pytest.raises(Exception) as failure:
        convert.request_from_proto(message, _NoStorage())

    assert getattr(failure.value, "kind", None) is ErrorKind.UNSUPPORTED_OPERATION


@pytest.mark.parametrize(
    ("kind", "err_type", "has_response"),
    [
        (ErrorKind.BAD_REQUEST, convert.ERR_INVALID_REQUEST, True),
        (ErrorKind.PERMISSION_DENIED, convert.ERR_PERMISSION_DENIED, True),
        (ErrorKind.UNSUPPORTED_PATH, convert.ERR_UNSUPPORTED_PATH, False),
        (ErrorKind.UNSUPPORTED_OPERATION, convert.ERR_UNSUPPORTED_OPERATION, False),
        (ErrorKind.INTERNAL, convert.ERR_UNKNOWN, False),
    ],
)
def test_error_encoding(kind: ErrorKind, err_type: int, has_response: bool) -> None:
    response, error = convert.error_to_proto(kind, "boom")

    assert error.err_type == err_type
    assert error.err_msg == "boom"
    assert (response is not None) == has_response
    if response is not None:
        assert json.loads(response.data) == {"error": "boom"}


def test_response_without_secret() -> None:
    message = convert.response_to_proto(Response(data={"a": [1]}, warnings=["w"]))

    assert json.loads(message.data) == {"a": [1]}
    assert list(message.warnings) == ["w"]
    assert not message.HasField("secret")


@pytest.mark.parametrize(
    ("method", "operation", "inline"),
    [
        ("/pb.Backend/HandleRequest", "resolve-path", True),
        ("/pb.Backend/HandleRequest", "read", False),
        ("/pb.Backend/HandleExistenceCheck", "resolve-path", False),
    ],
)
def test_only_resolve_path_runs_inline(
    tmp_path: Path, method: str, operation: str, inline: bool
) -> None:
    service = BackendService(EchoBackend, Broker(None), "v0")
    args = backend_pb2.HandleRequestArgs(
        request=backend_pb2.Request(operation=operation, path="ping")
    )
    assert service.runs_inline(method, args.SerializeToString()) is inline


def test_garbage_request_does_not_run_inline(tmp_path: Path) -> None:
    service = BackendService(EchoBackend, Broker(None), "v0")
    assert not service.runs_inline("/pb.Backend/HandleRequest", b"\xff\xff")


def test_broker_announcement_after_dial(tmp_path: Path) -> None:
    broker = Broker(tls_context=None)
    announce = go_plugin_pb2.ConnInfo(service_id=7, network="unix", address="/x.sock")
    timer = threading.Timer(0.2, broker._announce, args=(announce,))
    timer.start()

    connection = broker.dial(7, timeout=5)

    timer.join()
    assert connection.service_id == 7
    broker.close(connection)


def test_broker_announcement_before_dial(tmp_path: Path) -> None:
    broker = Broker(tls_context=None)
    broker._announce(go_plugin_pb2.ConnInfo(service_id=3, network="unix", address="/y"))

    connection = broker.dial(3, timeout=1)

    assert connection.service_id == 3
    broker.close(connection)


def test_broker_dial_times_out(tmp_path: Path) -> None:
    broker = Broker(tls_context=None)

    with pytest.raises(
        BrokerError, match="waiting for Vault to announce broker service 9"
    ):
        broker.dial(9, timeout=0.2)


def test_broker_rejects_tcp(tmp_path: Path) -> None:
    broker = Broker(tls_context=None)
    broker._announce(go_plugin_pb2.ConnInfo(service_id=4, network="tcp", address="x:1"))

    with pytest.raises(BrokerError, match="only dials unix sockets"):
        broker.dial(4, timeout=1)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # pytest's tmp_path is too long a base for unix socket paths.
    path = Path(tempfile.mkdtemp(prefix="wd-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_work_dir_is_private(short_dir: Path) -> None:
    base = short_dir

    work_dir = lifecycle.make_work_dir(str(base))

    assert work_dir.parent == base
    assert work_dir.name.startswith(f"agent-bridge-plugin-{os.getpid()}-")
    assert (work_dir.stat().st_mode & 0o777) == 0o700
    lifecycle.remove_work_dir(work_dir)
    assert not work_dir.exists()


def test_long_work_dir_base_falls_back(tmp_path: Path) -> None:
    base = tmp_path / ("long-" * 20)
    base.mkdir()

    work_dir = lifecycle.make_work_dir(str(base))

    assert work_dir.parent == Path("/tmp")
    lifecycle.remove_work_dir(work_dir)


def test_stale_work_dirs_removed(short_dir: Path) -> None:
    dead_pid = _exited_pid()
    stale = short_dir / f"agent-bridge-plugin-{dead_pid}-abcdefgh"
    live = short_dir / f"agent-bridge-plugin-{os.getppid()}-abcdefgh"
    unrelated = short_dir / "agent-bridge-plugin-notapid"
    for folder in (stale, live, unrelated):
        folder.mkdir()

    work_dir = lifecycle.make_work_dir(str(short_dir))

    assert not stale.exists()
    assert live.exists()
    assert unrelated.exists()
    lifecycle.remove_work_dir(work_dir)


def _exited_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def _jwt_with(claims: object) -> str:
    def part(value: object) -> str:
        raw = base64.urlsafe_b64encode(json.dumps(value).encode())
        return raw.rstrip(b"=").decode()

    return f"{part({'alg': 'ES512'})}.{part(claims)}.c2ln"


def test_wrapping_token_address_read() -> None:
    token = _jwt_with({"addr": "http://127.0.0.1:8200", "accessor": "x"})
    assert tls._wrapping_token_address(token) == "http://127.0.0.1:8200"


@pytest.mark.parametrize(
    ("token", "problem"),
    [
        ("s.notajwt", "is not a JWT"),
        (_jwt_with({"accessor": "x"}), "has no addr claim"),
        (_jwt_with({"addr": ""}), "has no addr claim"),
        (_jwt_with(["addr"]), "has no addr claim"),
        ("a.!!!.c", "claims are not JSON"),
    ],
)
def test_wrapping_token_address_rejects(token: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        tls._wrapping_token_address(token)
