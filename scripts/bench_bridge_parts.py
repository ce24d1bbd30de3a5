"""Parts of scripts/bench-bridge: one RPC sent straight to a plugin process, the
in-process dispatch, and the start time of the single-file plugin.
"""

from __future__ import annotations

import base64
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc

from plugin.bridge import handshake, rpc, tls
from plugin.bridge.dispatch import Dispatcher
from plugin.bridge.pb import backend_pb2, go_plugin_pb2
from tests.plugin_fixtures.echo_backend import EchoBackend
from tests.plugin_fixtures.tls_relay import TlsRelay
from tests.test_bridge_tls import vault_identity

ROOT = Path(__file__).resolve().parent.parent


class DirectPlugin:
    """An echo plugin process this benchmark talks to as Vault would."""

    def __init__(self, folder: Path, *, with_tls: bool) -> None:
        self.vault = vault_identity()
        env = {
            "PATH": os.environ["PATH"],
            "TMPDIR": str(folder),
            handshake.MAGIC_COOKIE_KEY: handshake.MAGIC_COOKIE_VALUE,
            "PLUGIN_PROTOCOL_VERSIONS": "5",
        }
        if with_tls:
            env["PLUGIN_CLIENT_CERT"] = self.vault.cert_pem.decode()

        launcher = (
            f"import sys; sys.path.insert(0, {str(ROOT)!r}); "
            "from tests.plugin_fixtures.echo_plugin import main; main()"
        )
        self.process = subprocess.Popen(
            [sys.executable, "-I", "-c", launcher],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.process.stdout is not None
        fields = self.process.stdout.readline().strip().split("|")

        # grpcio cannot present Vault's P-521 certificate, so with TLS it
        # dials through a relay that does.
        self.relay: TlsRelay | None = None
        target = fields[3]
        if with_tls:
            target = self._relay(folder, fields[3], fields[5])
        self.channel = grpc.insecure_channel(
            f"unix:{target}", options=rpc.CHANNEL_OPTIONS
        )
        self._stop_broker = threading.Event()
        self._start_broker()

    def _relay(self, folder: Path, address: str, cert_b64: str) -> str:
        der = base64.b64decode(cert_b64 + "=" * (-len(cert_b64) % 4))
        plugin_pem = ssl.DER_cert_to_PEM_cert(der)
        context = tls.client_context(self.vault, plugin_pem, folder)
        relay = folder / "bench-relay.sock"
        self.relay = TlsRelay(relay, Path(address), context)
        return str(relay)

    def _start_broker(self) -> None:
        def announcements() -> Iterator[go_plugin_pb2.ConnInfo]:
            # The address is never dialled: `ping` touches no storage.
            yield go_plugin_pb2.ConnInfo(
                service_id=1, network="unix", address="/nowhere"
            )
            self._stop_broker.wait()

        stream = self.channel.stream_stream(
            "/plugin.GRPCBroker/StartStream",
            request_serializer=go_plugin_pb2.ConnInfo.SerializeToString,
            response_deserializer=go_plugin_pb2.ConnInfo.FromString,
        )
        self._responses = stream(announcements())
        setup = rpc.UnaryCall[backend_pb2.SetupArgs, backend_pb2.SetupReply](
            self.channel, "/pb.Backend/Setup", backend_pb2.SetupReply
        )
        reply = setup(backend_pb2.SetupArgs(broker_id=1), timeout=10)
        if reply.err:
            raise RuntimeError(f"plugin setup failed: {reply.err}")

    def time_requests(self, count: int) -> list[float]:
        call = rpc.UnaryCall[
            backend_pb2.HandleRequestArgs, backend_pb2.HandleRequestReply
        ](self.channel, "/pb.Backend/HandleRequest", backend_pb2.HandleRequestReply)
        args = backend_pb2.HandleRequestArgs(
            request=backend_pb2.Request(operation="read", path="ping", data="{}")
        )
        samples = []
        for _ in range(count):
            started = time.perf_counter()
            call(args, timeout=10)
            samples.append(time.perf_counter() - started)
        return samples

    def close(self) -> None:
        self._stop_broker.set()
        self.channel.close()
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=10)
        if self.relay is not None:
            self.relay.close()


def bench_dispatch(count: int) -> list[float]:
    backend = EchoBackend()
    dispatcher = Dispatcher(backend, storage=None)  # type: ignore[arg-type]
    message = backend_pb2.Request(operation="read", path="ping", data="{}")
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        dispatcher.handle_request(message)
        samples.append(time.perf_counter() - started)
    return samples


def bench_rpc(count: int) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-rpc-", dir="/tmp") as temp:
        for label, with_tls in (
            ("RPC, no TLS", False),
            ("RPC, mutual TLS", True),
        ):
            plugin = DirectPlugin(Path(temp), with_tls=with_tls)
            try:
                plugin.time_requests(100)
                results[label] = plugin.time_requests(count)
            finally:
                plugin.close()
    results["Python dispatch only (in process)"] = bench_dispatch(count)
    return results


def built_file() -> Path:
    output = ROOT / "build" / "agent-bridge-plugin"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build-plugin")],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return output


def time_start(path: Path, shiv_root: Path, tmp: Path) -> float:
    env = {
        "PATH": os.environ["PATH"],
        "SHIV_ROOT": str(shiv_root),
        "TMPDIR": str(tmp),
        handshake.MAGIC_COOKIE_KEY: handshake.MAGIC_COOKIE_VALUE,
        "PLUGIN_PROTOCOL_VERSIONS": "5",
        "PLUGIN_CLIENT_CERT": vault_identity().cert_pem.decode(),
    }
    started = time.perf_counter()
    process = subprocess.Popen(
        [str(path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    elapsed = time.perf_counter() - started
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=10)
    process.stdout.close()
    if not line.startswith("1|5|unix|"):
        raise RuntimeError(f"no handshake from {path}: {line!r}")
    return elapsed


def bench_start(starts: int) -> dict[str, list[float]]:
    path = built_file()
    cold: list[float] = []
    warm: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-start-", dir="/tmp") as temp:
        for attempt in range(3):
            root = Path(temp) / f"root-{attempt}"
            cold.append(time_start(path, root, Path(temp)))
        for _ in range(starts):
            warm.append(time_start(path, Path(temp) / "root-0", Path(temp)))
    return {"first start after install (unpack)": cold, "warm start": warm}
