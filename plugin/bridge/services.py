"""The go-plugin housekeeping services every plugin process serves.

- `grpc.health.v1.Health`: go-plugin checks service "plugin" before use.
- `plugin.GRPCController/Shutdown`: Vault's request to exit. Without it,
  Vault waits 2 s and kills the process.
- `plugin.GRPCStdio/StreamStdio`: what the plugin writes to stdout after the
  handshake, streamed to Vault, which logs it.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable, Iterator

import grpc
from google.protobuf import empty_pb2

from plugin.bridge import rpc
from plugin.bridge.pb import go_plugin_pb2, health_pb2

logger = logging.getLogger(__name__)

_SERVING = health_pb2.HealthCheckResponse.SERVING
_SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
_HEALTHY_SERVICES = frozenset({"", "plugin"})
_STDIO_QUEUE_CHUNKS = 256
_POLL_SECONDS = 0.5


class HousekeepingServices:
    """Health, controller and stdio; `stopping` is set when the process stops."""

    def __init__(self, request_shutdown: Callable[[str], None]) -> None:
        self._request_shutdown = request_shutdown
        self.stopping = threading.Event()
        self._stdout: queue.Queue[bytes] = queue.Queue(maxsize=_STDIO_QUEUE_CHUNKS)
        self._dropped = 0

    def handlers(self) -> list[rpc.ServiceHandler]:
        health = rpc.service(
            "grpc.health.v1.Health",
            {
                "Check": rpc.unary(self._check, health_pb2.HealthCheckRequest),
                "Watch": rpc.unary_stream(self._watch, health_pb2.HealthCheckRequest),
            },
        )
        controller = rpc.service(
            "plugin.GRPCController",
            {"Shutdown": rpc.unary(self._shutdown, go_plugin_pb2.Empty)},
        )
        stdio = rpc.service(
            "plugin.GRPCStdio",
            {"StreamStdio": rpc.unary_stream(self._stream_stdio, empty_pb2.Empty)},
        )
        return [health, controller, stdio]

    def _check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        if request.service not in _HEALTHY_SERVICES:
            context.abort(
                grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}"
            )
        return health_pb2.HealthCheckResponse(status=_SERVING)

    def _watch(
        self, request: health_pb2.HealthCheckRequest, context: grpc.ServicerContext
    ) -> Iterator[health_pb2.HealthCheckResponse]:
        known = request.service in _HEALTHY_SERVICES
        yield health_pb2.HealthCheckResponse(
            status=_SERVING if known else _SERVICE_UNKNOWN
        )
        # The status never changes while the process serves; the loop only
        # keeps the stream open until the caller leaves or the plugin stops.
        while context.is_active() and not self.stopping.wait(_POLL_SECONDS):
            pass

    def _shutdown(
        self, request: go_plugin_pb2.Empty, context: grpc.ServicerContext
    ) -> go_plugin_pb2.Empty:
        self._request_shutdown("Vault called GRPCController.Shutdown")
        return go_plugin_pb2.Empty()

    def capture_stdout(self) -> None:
        """Point file descriptor 1 at a pipe whose output goes to StreamStdio."""
        read_fd, write_fd = os.pipe()
        os.dup2(write_fd, 1)
        os.close(write_fd)
        threading.Thread(
            target=self._read_stdout, args=(read_fd,), name="stdio", daemon=True
        ).start()

    def _read_stdout(self, read_fd: int) -> None:
        with os.fdopen(read_fd, "rb", buffering=0) as pipe:
            while chunk := pipe.read(64 * 1024):
                try:
                    self._stdout.put_nowait(chunk)
                except queue.Full:
                    # Vault is not reading the stream. Dropping output is
                    # better than a print() blocking a request thread.
                    self._count_dropped()

    def _count_dropped(self) -> None:
        self._dropped += 1
        if self._dropped in (1, 100, 10_000):
            logger.warning(
                "dropping stdout output: Vault is not reading the stdio stream",
                extra={"dropped_chunks": self._dropped},
            )

    def _stream_stdio(
        self, request: empty_pb2.Empty, context: grpc.ServicerContext
    ) -> Iterator[go_plugin_pb2.StdioData]:
        while context.is_active() and not self.stopping.is_set():
            try:
                chunk = self._stdout.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                continue
            yield go_plugin_pb2.StdioData(
                channel=go_plugin_pb2.StdioData.STDOUT, data=chunk
            )
