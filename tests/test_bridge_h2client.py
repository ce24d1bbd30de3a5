"""The broker channel (the plugin's own gRPC client) against grpcio's server,
an independent HTTP/2 and gRPC implementation, and, with TLS, against the
plugin's own server holding Vault-style certificates.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from plugin.bridge import rpc, tls
from plugin.bridge.grpc_server import GrpcServer
from plugin.bridge.h2client import BrokerCallError, BrokerChannel
from plugin.bridge.pb.go_plugin_pb2 import StdioData
from tests.plugin_fixtures.folders import socket_folder
from tests.test_bridge_grpc_server import SERVICE, Recorder
from tests.test_bridge_tls import vault_identity

BIG = os.urandom(3 * 1024 * 1024 + 17)


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[Path]:
    yield from socket_folder(tmp_path, "bridge-h2c")


def grpcio_server(path: Path) -> grpc.Server:
    server = grpc.server(
        ThreadPoolExecutor(max_workers=16),
        handlers=Recorder().handlers(),
        options=rpc.CHANNEL_OPTIONS,
    )
    server.add_insecure_port(f"unix:{path}")
    server.start()
    return server


@pytest.fixture
def channel(folder: Path) -> Iterator[BrokerChannel]:
    server = grpcio_server(folder / "vault.sock")
    chan = BrokerChannel(str(folder / "vault.sock"), None)
    yield chan
    chan.close()
    server.stop(None)


def call(chan: BrokerChannel, method: str, data: bytes, timeout: float = 10) -> bytes:
    reply = rpc.UnaryCall[StdioData, StdioData](
        chan, f"/{SERVICE}/{method}", StdioData
    )(StdioData(data=data), timeout=timeout)
    return reply.data


def test_unary_round_trip(channel: BrokerChannel) -> None:
    assert call(channel, "Echo", b"hello") == b"hello"


def test_large_messages_cross_flow_control(channel: BrokerChannel) -> None:
    assert call(channel, "Echo", BIG, timeout=30) == BIG


def test_status_and_details_raised(channel: BrokerChannel) -> None:
    with pytest.raises(BrokerCallError) as caught:
        call(channel, "Fail", b"")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert caught.value.details() == "no such thing: 100% gone ✓"
    assert rpc.status_code(caught.value) == grpc.StatusCode.NOT_FOUND


def test_unknown_method_is_unimplemented(channel: BrokerChannel) -> None:
    with pytest.raises(BrokerCallError) as caught:
        call(channel, "Missing", b"")
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_concurrent_calls_share_connection(channel: BrokerChannel) -> None:
    results: dict[int, bytes] = {}

    def one(number: int) -> None:
        results[number] = call(channel, "Echo", b"%d" % number * 1000)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {n: b"%d" % n * 1000 for n in range(32)}


def test_timeout_raises_deadline_exceeded(channel: BrokerChannel) -> None:
    started = time.monotonic()
    with pytest.raises(BrokerCallError) as caught:
        call(channel, "Sleep", b"2", timeout=0.3)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 1.5
    assert call(channel, "Echo", b"after") == b"after"


def test_redials_after_server_restart(folder: Path) -> None:
    path = folder / "vault.sock"
    server = grpcio_server(path)
    chan = BrokerChannel(str(path), None)
    assert call(chan, "Echo", b"one") == b"one"
    server.stop(None)
    path.unlink(missing_ok=True)
    with pytest.raises(BrokerCallError) as caught:
        call(chan, "Echo", b"down")
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE

    server = grpcio_server(path)
    try:
        assert call(chan, "Echo", b"two") == b"two"
    finally:
        chan.close()
        server.stop(None)


def test_stream_ids_used_up_open_new_connection(channel: BrokerChannel) -> None:
    assert call(channel, "Echo", b"first") == b"first"
    old = channel._session
    assert old is not None
    old._next_id = 2**31 - 1  # the last odd stream id

    assert call(channel, "Echo", b"last id") == b"last id"
    assert call(channel, "Echo", b"new connection") == b"new connection"

    assert channel._session is not old
    assert old.closed


def test_closed_channel_raises_cancelled(channel: BrokerChannel) -> None:
    channel.close()
    with pytest.raises(BrokerCallError) as caught:
        call(channel, "Echo", b"x")
    assert caught.value.code() == grpc.StatusCode.CANCELLED


def tls_channel(
    folder: Path, server_identity: tls.Identity, trusted: tls.Identity
) -> tuple[GrpcServer, BrokerChannel]:
    """Serve with `server_identity`, as Vault's broker server does, and return
    a channel that trusts only `trusted`, as the plugin trusts only Vault."""
    plugin = tls.generate_identity()
    server = GrpcServer(
        Recorder().handlers(),
        max_workers=4,
        tls_context=tls.server_context(
            server_identity, plugin.cert_pem.decode(), folder
        ),
    )
    server.start(str(folder / "vault.sock"))
    context = tls.client_context(plugin, trusted.cert_pem.decode(), folder)
    return server, BrokerChannel(str(folder / "vault.sock"), context)


def test_tls_round_trip_with_vault_certificates(folder: Path) -> None:
    vault = vault_identity()
    server, chan = tls_channel(folder, vault, vault)
    try:
        assert call(chan, "Echo", BIG, timeout=30) == BIG
    finally:
        chan.close()
        server.stop(0.5)


def test_tls_rejects_unknown_server(folder: Path) -> None:
    server, chan = tls_channel(folder, vault_identity(), vault_identity())
    try:
        with pytest.raises(BrokerCallError) as caught:
            call(chan, "Echo", b"x")
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "certificate" in caught.value.details()
    finally:
        chan.close()
        server.stop(0.5)
