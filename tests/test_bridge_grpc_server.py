"""The plugin's own gRPC server, driven by grpcio's client (an independent
HTTP/2 and gRPC implementation) over unix sockets, with and without TLS.

With TLS, the client side is grpcio behind a test relay that presents a
P-521 certificate, as Vault's go-plugin does.
"""

from __future__ import annotations

import os
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from plugin.bridge import rpc, tls, transport
from plugin.bridge.grpc_server import GrpcServer
from plugin.bridge.pb.go_plugin_pb2 import ConnInfo, StdioData
from tests.plugin_fixtures.folders import socket_folder
from tests.plugin_fixtures.tls_relay import TlsRelay
from tests.test_bridge_tls import vault_identity

SERVICE = "test.Bridge"
BIG = os.urandom(3 * 1024 * 1024 + 17)


class Recorder:
    """Handlers of the test service, and what they observed."""

    def __init__(self) -> None:
        self.cancelled = threading.Event()
        self.release = threading.Event()

    def handlers(self) -> list[rpc.ServiceHandler]:
        return [
            rpc.service(
                SERVICE,
                {
                    "Echo": rpc.unary(self.echo, StdioData),
                    "Fail": rpc.unary(self.fail, StdioData),
                    "Crash": rpc.unary(self.crash, StdioData),
                    "Metadata": rpc.unary(self.metadata, StdioData),
                    "Sleep": rpc.unary(self.sleep, StdioData),
                    "Count": rpc.unary_stream(self.count, StdioData),
                    "Wait": rpc.unary_stream(self.wait, StdioData),
                    "Chat": rpc.stream_stream(self.chat, ConnInfo),
                },
            )
        ]

    def echo(self, request: StdioData, context: grpc.ServicerContext) -> StdioData:
        return StdioData(data=request.data)

    def fail(self, request: StdioData, context: grpc.ServicerContext) -> StdioData:
        context.abort(grpc.StatusCode.NOT_FOUND, "no such thing: 100% gone ✓")

    def crash(self, request: StdioData, context: grpc.ServicerContext) -> StdioData:
        raise RuntimeError("secret=do-not-leak")

    def metadata(self, request: StdioData, context: grpc.ServicerContext) -> StdioData:
        pairs = [f"{key}={value!s}" for key, value in context.invocation_metadata()]
        return StdioData(data=";".join(sorted(pairs)).encode())

    def sleep(self, request: StdioData, context: grpc.ServicerContext) -> StdioData:
        time.sleep(float(request.data.decode()))
        return StdioData(data=b"slept")

    def count(
        self, request: StdioData, context: grpc.ServicerContext
    ) -> Iterator[StdioData]:
        for number in range(int(request.data.decode())):
            yield StdioData(data=str(number).encode())

    def wait(
        self, request: StdioData, context: grpc.ServicerContext
    ) -> Iterator[StdioData]:
        yield StdioData(data=b"started")
        while context.is_active() and not self.release.is_set():
            time.sleep(0.01)
        if not context.is_active():
            self.cancelled.set()

    def chat(
        self, requests: Iterator[ConnInfo], context: grpc.ServicerContext
    ) -> Iterator[ConnInfo]:
        for info in requests:
            yield ConnInfo(service_id=info.service_id + 1, address=info.address)


def unary(channel: grpc.Channel, method: str) -> rpc.UnaryCall[StdioData, StdioData]:
    return rpc.UnaryCall(channel, f"/{SERVICE}/{method}", StdioData)


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[Path]:
    yield from socket_folder(tmp_path, "bridge-grpc")


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture(params=["plain", "tls"])
def channel(
    request: pytest.FixtureRequest, folder: Path, recorder: Recorder
) -> Iterator[grpc.Channel]:
    with_tls = request.param == "tls"
    vault = vault_identity()
    plugin = tls.generate_identity()
    server_context = tls.server_context(plugin, vault.cert_pem.decode(), folder)
    server = GrpcServer(
        recorder.handlers(),
        max_workers=32,
        tls_context=server_context if with_tls else None,
    )
    server.start(str(folder / "plugin.sock"))
    target = folder / "plugin.sock"
    relay = None
    if with_tls:
        # The relay dials the server as Vault would: P-521 client certificate.
        context = tls.client_context(vault, plugin.cert_pem.decode(), folder)
        relay = TlsRelay(folder / "relay.sock", target, context)
        target = folder / "relay.sock"
    with grpc.insecure_channel(f"unix:{target}", options=rpc.CHANNEL_OPTIONS) as chan:
        yield chan
    server.stop(0.5)
    if relay is not None:
        relay.close()


def test_unary_round_trip(channel: grpc.Channel) -> None:
    reply = unary(channel, "Echo")(StdioData(data=b"hello"), timeout=10)
    assert reply.data == b"hello"


def test_large_messages_cross_flow_control(channel: grpc.Channel) -> None:
    reply = unary(channel, "Echo")(StdioData(data=BIG), timeout=30)
    assert reply.data == BIG


def test_abort_sends_code_and_details(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        unary(channel, "Fail")(StdioData(), timeout=10)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert caught.value.details() == "no such thing: 100% gone ✓"


def test_crash_hides_exception_text(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        unary(channel, "Crash")(StdioData(), timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNKNOWN
    assert "do-not-leak" not in str(caught.value.details())


def test_unknown_method_is_unimplemented(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        unary(channel, "Missing")(StdioData(), timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_metadata_reaches_handler(channel: grpc.Channel) -> None:
    call = channel.unary_unary(
        f"/{SERVICE}/Metadata",
        request_serializer=StdioData.SerializeToString,
        response_deserializer=StdioData.FromString,
    )
    reply = call(StdioData(), metadata=(("multiplex_id", "mount-7"),), timeout=10)
    assert "multiplex_id=mount-7" in reply.data.decode().split(";")


def test_calls_run_concurrently(channel: grpc.Channel) -> None:
    sleep = unary(channel, "Sleep")
    results: list[bytes] = []

    def call() -> None:
        results.append(sleep(StdioData(data=b"0.3"), timeout=10).data)

    threads = [threading.Thread(target=call) for _ in range(16)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [b"slept"] * 16
    assert time.monotonic() - started < 2.5


def test_server_stream_sends_every_message(channel: grpc.Channel) -> None:
    count = channel.unary_stream(
        f"/{SERVICE}/Count",
        request_serializer=StdioData.SerializeToString,
        response_deserializer=StdioData.FromString,
    )
    numbers = [reply.data for reply in count(StdioData(data=b"500"), timeout=10)]
    assert numbers == [str(number).encode() for number in range(500)]


def test_bidi_stream_echoes_until_close(channel: grpc.Channel) -> None:
    chat = channel.stream_stream(
        f"/{SERVICE}/Chat",
        request_serializer=ConnInfo.SerializeToString,
        response_deserializer=ConnInfo.FromString,
    )
    requests = (ConnInfo(service_id=n, address="x" * n) for n in range(50))
    replies = list(chat(requests, timeout=10))
    assert [reply.service_id for reply in replies] == list(range(1, 51))
    assert replies[-1].address == "x" * 49


def test_cancel_makes_context_inactive(
    channel: grpc.Channel, recorder: Recorder
) -> None:
    wait = channel.unary_stream(
        f"/{SERVICE}/Wait",
        request_serializer=StdioData.SerializeToString,
        response_deserializer=StdioData.FromString,
    )
    call: Any = wait(StdioData(), timeout=10)
    assert next(call).data == b"started"
    call.cancel()
    assert recorder.cancelled.wait(5)


def test_inline_calls_answer_beside_slow_call(folder: Path, recorder: Recorder) -> None:
    server = GrpcServer(
        recorder.handlers(),
        max_workers=4,
        tls_context=None,
        run_inline=lambda method, body: method.endswith("/Echo"),
    )
    server.start(str(folder / "plugin.sock"))
    with grpc.insecure_channel(f"unix:{folder / 'plugin.sock'}") as chan:
        echo = unary(chan, "Echo")
        sleep = unary(chan, "Sleep")
        slow = threading.Thread(
            target=lambda: sleep(StdioData(data=b"1.0"), timeout=10)
        )
        slow.start()
        time.sleep(0.1)
        replies = [echo(StdioData(data=b"%d" % n), timeout=10).data for n in range(50)]
        # Sleep is not inline, so it must not hold up the reading of Echo.
        sleep_still_running = slow.is_alive()
        slow.join()
    server.stop(0.5)
    assert replies == [b"%d" % n for n in range(50)]
    assert sleep_still_running


def test_stop_waits_for_running_call(folder: Path, recorder: Recorder) -> None:
    server = GrpcServer(recorder.handlers(), max_workers=4, tls_context=None)
    server.start(str(folder / "plugin.sock"))
    results: list[bytes] = []
    with grpc.insecure_channel(f"unix:{folder / 'plugin.sock'}") as chan:
        sleep = unary(chan, "Sleep")
        caller = threading.Thread(
            target=lambda: results.append(
                sleep(StdioData(data=b"0.5"), timeout=10).data
            )
        )
        caller.start()
        time.sleep(0.2)
        server.stop(3.0)
        caller.join()
    assert results == [b"slept"]


@pytest.fixture
def tls_server(folder: Path, recorder: Recorder) -> Iterator[tls.Identity]:
    vault = vault_identity()
    plugin = tls.generate_identity()
    server = GrpcServer(
        recorder.handlers(),
        max_workers=4,
        tls_context=tls.server_context(plugin, vault.cert_pem.decode(), folder),
    )
    server.start(str(folder / "plugin.sock"))
    yield plugin
    server.stop(0.5)


def test_tls_requires_vault_cert(folder: Path, tls_server: tls.Identity) -> None:
    anonymous = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    anonymous.load_verify_locations(cadata=tls_server.cert_pem.decode())
    with socket.socket(socket.AF_UNIX) as raw:
        raw.connect(str(folder / "plugin.sock"))
        conn = anonymous.wrap_socket(raw, server_hostname="localhost")
        # TLS 1.3 reports the missing client certificate after the client
        # finished its side: as an alert on read, or as a closed socket.
        with conn, pytest.raises((ssl.SSLError, ConnectionError)):
            conn.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            if not conn.recv(10):
                raise ConnectionError("closed without an alert")


def test_silent_client_is_dropped(
    folder: Path, tls_server: tls.Identity, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transport, "HANDSHAKE_TIMEOUT", 0.3)
    with socket.socket(socket.AF_UNIX) as raw:
        raw.connect(str(folder / "plugin.sock"))
        raw.settimeout(5)
        started = time.monotonic()

        assert raw.recv(10) == b""
        assert time.monotonic() - started < 3
