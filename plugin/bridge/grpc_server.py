"""The plugin's gRPC server: Vault's TLS, HTTP/2 and the calls, in one hop.

grpcio's server cannot complete a TLS handshake with Vault's P-521
certificate, so it would need a TLS relay in front of it, and each call
would then cross the relay thread, grpcio's poller thread and a worker
thread. This server terminates TLS with Python's `ssl` and parses HTTP/2
on the thread that reads the connection. When a call is complete, that
thread wakes a worker to read on and runs the call itself, writing the
response directly.

Services are the grpcio generic handlers built by `rpc.service`, so
handlers do not know which server runs them. The context passed to a
handler offers `invocation_metadata`, `abort`, `is_active` and `peer`.
Compressed messages and deadlines (`grpc-timeout`) are not supported:
OpenBao 2.7.2 sent neither in any call recorded while testing.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn

import grpc

from plugin.bridge import rpc
from plugin.bridge.h2connection import Connection, Stream
from plugin.bridge.h2session import StreamClosedError
from plugin.bridge.transport import PlainTransport, TlsTransport, TransportClosedError
from plugin.bridge.workers import WorkerPool

logger = logging.getLogger(__name__)

_ACCEPT_BACKLOG = 64


class CallAbortedError(Exception):
    """Raised by `ServicerContext.abort` to end a call with a status."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class ServicerContext:
    """The part of `grpc.ServicerContext` that the bridge's handlers use."""

    def __init__(self, connection: Connection, stream: Stream) -> None:
        self._connection = connection
        self._stream = stream

    def invocation_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return self._stream.metadata

    def abort(self, code: grpc.StatusCode, details: str) -> NoReturn:
        raise CallAbortedError(code, details)

    def is_active(self) -> bool:
        return self._connection.is_active(self._stream)

    def peer(self) -> str:
        return "unix:"


class _CallDetails:
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata: tuple[()] = ()


class GrpcServer:
    """Serve gRPC on a unix socket, with TLS when `tls_context` is given.

    `run_inline(method, request bytes)` names the unary calls that return
    at once without waiting for anything. They run on the thread that reads
    the connection, and no frame is read until they return.
    """

    def __init__(
        self,
        handlers: Sequence[rpc.ServiceHandler],
        *,
        max_workers: int,
        tls_context: ssl.SSLContext | None,
        run_inline: Callable[[str, bytes | bytearray], bool] = lambda m, b: False,
    ) -> None:
        self._handlers = handlers
        self._tls_context = tls_context
        self._run_inline = run_inline
        self._methods: dict[str, Any] = {}
        self._pool = WorkerPool(max_workers, "rpc")
        self._listener: socket.socket | None = None
        self._connections: set[Connection] = set()
        self._lock = threading.Lock()
        self._calls = 0
        self._idle = threading.Condition(self._lock)
        self._stopping = False

    def start(self, path: str) -> None:
        """Listen on the unix socket `path` and accept connections on a thread."""
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen(_ACCEPT_BACKLOG)
        self._listener = listener
        threading.Thread(target=self._accept, name="grpc-accept", daemon=True).start()

    def stop(self, grace: float) -> None:
        """Stop accepting, wait up to `grace` seconds for calls, close everything."""
        with self._lock:
            self._stopping = True
            connections = list(self._connections)
        if self._listener is not None:
            _shutdown_listener(self._listener)
        deadline = time.monotonic() + grace
        with self._idle:
            while self._calls and (left := deadline - time.monotonic()) > 0:
                self._idle.wait(left)
        for connection in connections:
            connection.shutdown()
        self._pool.stop()

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                self._listener.close()
                return  # the listener was shut down
            threading.Thread(
                target=self._serve_connection,
                args=(client,),
                name="grpc-connection",
                daemon=True,
            ).start()

    def _serve_connection(self, client: socket.socket) -> None:
        transport: PlainTransport | TlsTransport
        if self._tls_context is None:
            transport = PlainTransport(client)
        else:
            transport = TlsTransport(client, self._tls_context)
            try:
                transport.handshake()
            except (OSError, ssl.SSLError, TransportClosedError) as err:
                logger.warning("TLS handshake failed", extra={"error": str(err)})
                client.close()
                return
        connection = Connection(transport, self._lookup, self._submit)
        with self._lock:
            if self._stopping:
                client.close()
                return
            self._connections.add(connection)
        logger.debug("gRPC connection opened")
        # A failed start closes the connection; read() then cleans up.
        with contextlib.suppress(StreamClosedError):
            connection.start()
        self._read(connection)

    def _read(self, connection: Connection) -> None:
        """Read `connection` until a call is ready, then hand on reading and run it.

        The call runs on the thread that read it, without a hand-off to a
        worker. Another thread reads meanwhile, so a slow call or one that
        waits for more frames (Setup waits for the broker stream) blocks
        nothing. A call that `run_inline` accepts runs before reading goes
        on, on the same thread, which saves waking another thread.
        """
        while True:
            stream = connection.read()
            if stream is None:
                with self._lock:
                    self._connections.discard(connection)
                logger.debug("gRPC connection closed")
                return
            if stream.requests is None and self._run_inline(stream.method, stream.body):
                self._run(connection, stream, self._count(stream))
                continue
            self._pool.submit(lambda: self._read(connection), beyond_limit=True)
            self._run(connection, stream, self._count(stream))
            return

    def _lookup(self, method: str) -> Any:
        handler = self._methods.get(method)
        if handler is None:
            for service in self._handlers:
                handler = service.service(_CallDetails(method))  # type: ignore[arg-type]
                if handler is not None:
                    self._methods[method] = handler
                    break
        return handler

    def _submit(self, connection: Connection, stream: Stream) -> None:
        counted = self._count(stream)
        self._pool.submit(lambda: self._run(connection, stream, counted))

    def _count(self, stream: Stream) -> bool:
        # A stop waits for calls with one request; request streams, like the
        # broker's, last as long as the connection.
        counted = stream.requests is None
        if counted:
            with self._lock:
                self._calls += 1
        return counted

    def _run(self, connection: Connection, stream: Stream, counted: bool) -> None:
        try:
            _call(connection, stream)
        finally:
            if counted:
                with self._idle:
                    self._calls -= 1
                    if not self._calls:
                        self._idle.notify_all()


def _call(connection: Connection, stream: Stream) -> None:
    """Run the method of `stream` and send its response or status."""
    handler = stream.handler
    context = ServicerContext(connection, stream)
    try:
        request = _request(stream, handler)
        if handler.response_streaming:
            for response in _behavior(handler)(request, context):
                connection.send_message(stream, handler.response_serializer(response))
            connection.send_status(stream, grpc.StatusCode.OK.value[0])
        else:
            response = _behavior(handler)(request, context)
            connection.send_unary(stream, handler.response_serializer(response))
    except CallAbortedError as err:
        _send_status(connection, stream, err.code, err.details)
    except StreamClosedError:
        logger.debug("call ended by the caller", extra={"method": stream.method})
    except Exception:
        logger.exception("gRPC method failed", extra={"method": stream.method})
        _send_status(
            connection,
            stream,
            grpc.StatusCode.UNKNOWN,
            f"the plugin's {stream.method} failed; the Vault log has the details",
        )


def _request(stream: Stream, handler: Any) -> Any:
    if stream.requests is None:
        return handler.request_deserializer(bytes(stream.body))
    return _requests(stream, handler.request_deserializer)


def _requests(stream: Stream, deserialize: Any) -> Iterator[Any]:
    assert stream.requests is not None
    while (message := stream.requests.get()) is not None:
        yield deserialize(message)


def _behavior(handler: Any) -> Any:
    if handler.request_streaming:
        return (
            handler.stream_stream
            if handler.response_streaming
            else handler.stream_unary
        )
    return handler.unary_stream if handler.response_streaming else handler.unary_unary


def _send_status(
    connection: Connection, stream: Stream, code: grpc.StatusCode, details: str
) -> None:
    with contextlib.suppress(StreamClosedError):
        connection.send_status(stream, code.value[0], details)


def _shutdown_listener(listener: socket.socket) -> None:
    # shutdown() wakes the thread blocked in accept(), which then closes the
    # socket. The socket file goes with the plugin's private folder.
    with contextlib.suppress(OSError):
        listener.shutdown(socket.SHUT_RDWR)
