"""Unary gRPC calls to Vault's broker server over Python ssl and HTTP/2.

Storage and system view calls go to the server that Vault announces on the
broker stream. grpcio cannot do TLS with Vault's P-521 certificate, so a
grpcio channel would need a TLS relay, and each call would cross grpcio's
threads and the relay's. `BrokerChannel` dials the server itself: the calling
thread writes its request, and one reader thread per connection reads the
responses and wakes their callers.

`BrokerChannel.unary_unary` has the shape of `grpc.Channel.unary_unary`, so
`rpc.UnaryCall` works on either. Failures raise `BrokerCallError`, a
`grpc.RpcError` with `code()` and `details()`.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from plugin.bridge import http2
from plugin.bridge.h2session import Session, StreamClosedError, StreamWindow
from plugin.bridge.http2 import ErrorCode, ProtocolError
from plugin.bridge.transport import PlainTransport, TlsTransport, Transport

logger = logging.getLogger(__name__)

DIAL_TIMEOUT = 5.0
# Client stream ids are odd and at most 2^31-1; a connection that used them
# all is replaced by a new one.
_MAX_STREAM_ID = 2**31 - 1
_STATUS_CODES = {code.value[0]: code for code in grpc.StatusCode}


class BrokerCallError(grpc.RpcError):
    """A call to Vault's broker server failed with a gRPC status."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self._code = code
        self._details = details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


@dataclass(eq=False)
class _Call(StreamWindow):
    done: threading.Event = field(default_factory=threading.Event)
    body: bytearray = field(default_factory=bytearray)
    status: int | None = None
    message: str = ""
    failure: str = ""  # why the call ended without a status


class ClientSession(Session):
    """The client end of one HTTP/2 connection; a reader thread handles responses."""

    def __init__(self, transport: Transport, *, tls: bool) -> None:
        super().__init__(transport)
        self._tls = tls
        self._calls: dict[int, _Call] = {}
        self._next_id = 1
        self._open_lock = threading.Lock()
        self.going_away = False  # GOAWAY received: open no new streams
        self._retired = False  # replaced by a new connection: shut down when idle

    def start(self) -> None:
        self.send(http2.PREFACE + self._initial_frames())
        threading.Thread(
            target=self._read_loop, name="broker-read", daemon=True
        ).start()

    def call(self, method: str, payload: bytes, timeout: float | None) -> bytes:
        """Send one request and return the response message; raise BrokerCallError.

        Raises StreamClosedError when the connection had ended before the
        request was sent, so the caller can dial again safely.
        """
        call = self._open(method)
        try:
            message = http2.grpc_message(payload)
            self._send_data(call, message, flags=http2.END_STREAM)
        except StreamClosedError as err:
            self._forget(call)
            raise BrokerCallError(grpc.StatusCode.UNAVAILABLE, str(err)) from err
        if not call.done.wait(timeout):
            self._forget(call)
            self._try_send(http2.rst_stream(call.id, ErrorCode.CANCEL))
            raise BrokerCallError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"{method} timed out after {timeout} s",
            )
        return _result(method, call)

    def shutdown(self) -> None:
        self._try_send(http2.goaway(0, ErrorCode.NO_ERROR))
        self._mark_closed()
        self._transport.shutdown()

    def retire(self) -> None:
        """Shut down once the calls in flight have ended; open no new ones."""
        with self._flow:
            self.going_away = True
            self._retired = True
            idle = not self._calls
        if idle:
            self.shutdown()

    def _open(self, method: str) -> _Call:
        # Stream ids must reach the peer in increasing order, so taking an id
        # and sending its HEADERS happen under one lock.
        with self._open_lock:
            with self._flow:
                if self._next_id > _MAX_STREAM_ID:
                    self.going_away = True  # the channel dials a new connection
                if self.closed or self.going_away:
                    raise StreamClosedError("the broker connection is closed")
                call = _Call(self._next_id, self._peer_initial_window)
                self._next_id += 2
                self._calls[call.id] = call
            block = http2.request_headers(method, self._tls)
            self.send(http2.frame(http2.HEADERS, http2.END_HEADERS, call.id, block))
        return call

    def _read_loop(self) -> None:
        try:
            while data := self._transport.recv():
                self._buffer += data
                del self._buffer[: self._handle_frames(self._buffer)]
        except ProtocolError as err:
            logger.warning("closing a broker connection", extra={"error": str(err)})
            self._try_send(http2.goaway(0, err.code))
        except (OSError, StreamClosedError) as err:
            logger.debug("broker connection ended", extra={"error": str(err)})
        self._mark_closed()
        self._transport.close()

    def _window_of(self, stream_id: int) -> StreamWindow | None:
        return self._calls.get(stream_id)

    def _open_windows(self) -> list[StreamWindow]:
        return list(self._calls.values())

    def _on_data(self, flags: int, stream_id: int, data: bytes) -> None:
        call = self._calls.get(stream_id)
        if call is None:
            return
        call.body += data
        if flags & http2.END_STREAM:
            self._complete(call, "the response ended without a status")

    def _on_header_block(
        self, stream_id: int, flags: int, headers: list[tuple[bytes, bytes]]
    ) -> None:
        call = self._calls.get(stream_id)
        if call is None:
            return
        for name, value in headers:
            if name == b"grpc-status":
                call.status = int(value)
            elif name == b"grpc-message":
                call.message = urllib.parse.unquote(value.decode("ascii", "replace"))
        if flags & http2.END_STREAM:
            self._complete(call, "")

    def _on_reset(self, stream_id: int) -> None:
        call = self._calls.get(stream_id)
        if call is not None:
            call.reset = True
            self._complete(call, "Vault's broker server reset the call")

    def _on_goaway(self, payload: bytes) -> None:
        last_id = http2.parse_uint32(payload[:4]) if len(payload) >= 8 else 0
        self.going_away = True
        # Calls above the last id were not processed and never will be.
        with self._flow:
            unprocessed = [c for c in self._calls.values() if c.id > last_id]
        for call in unprocessed:
            self._complete(call, "Vault's broker server is going away")

    def _complete(self, call: _Call, failure: str) -> None:
        if call.status is None and not call.failure:
            call.failure = failure
        self._forget(call)
        call.done.set()

    def _forget(self, call: _Call) -> None:
        with self._flow:
            self._calls.pop(call.id, None)
            self._flow.notify_all()
            last_of_retired = self._retired and not self._calls and not self.closed
        if last_of_retired:
            self.shutdown()

    def _mark_closed(self) -> None:
        super()._mark_closed()
        with self._flow:
            calls = list(self._calls.values())
        for call in calls:
            call.reset = True
            self._complete(call, "the connection to Vault's broker server closed")


def _result(method: str, call: _Call) -> bytes:
    if call.status is None:
        raise BrokerCallError(
            grpc.StatusCode.UNAVAILABLE, f"{method} failed: {call.failure}"
        )
    if call.status:
        code = _STATUS_CODES.get(call.status, grpc.StatusCode.UNKNOWN)
        raise BrokerCallError(code, call.message)
    body = call.body
    if len(body) < 5 or body[0] or int.from_bytes(body[1:5], "big") != len(body) - 5:
        raise BrokerCallError(
            grpc.StatusCode.INTERNAL,
            f"{method} returned {len(body)} bytes that are not one gRPC message",
        )
    return bytes(body[5:])


class BrokerChannel:
    """A channel to one broker server; redials when its connection has ended."""

    def __init__(self, address: str, tls_context: ssl.SSLContext | None) -> None:
        self._address = address
        self._tls_context = tls_context
        self._lock = threading.Lock()
        self._session: ClientSession | None = None
        self._closed = False

    def unary_unary(
        self,
        method: str,
        request_serializer: Callable[[Any], bytes],
        response_deserializer: Callable[[bytes], Any],
    ) -> Callable[..., Any]:
        def call(request: Any, timeout: float | None = None) -> Any:
            payload = request_serializer(request)
            try:
                reply = self._session_for_call().call(method, payload, timeout)
            except StreamClosedError:
                # The connection ended before the call was sent: dial again.
                reply = self._session_for_call().call(method, payload, timeout)
            return response_deserializer(reply)

        return call

    def close(self) -> None:
        with self._lock:
            self._closed = True
            session, self._session = self._session, None
        if session is not None:
            session.shutdown()

    def _session_for_call(self) -> ClientSession:
        with self._lock:
            if self._closed:
                raise BrokerCallError(
                    grpc.StatusCode.CANCELLED, "the channel is closed"
                )
            session = self._session
            if session is None or session.closed or session.going_away:
                if session is not None:
                    session.retire()
                session = self._session = self._dial()
            return session

    def _dial(self) -> ClientSession:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(DIAL_TIMEOUT)
            sock.connect(self._address)
            sock.settimeout(None)
            transport: Transport = PlainTransport(sock)
            if self._tls_context is not None:
                tls = TlsTransport(sock, self._tls_context, server_hostname="localhost")
                tls.handshake()
                transport = tls
            session = ClientSession(transport, tls=self._tls_context is not None)
            session.start()
        except (OSError, ssl.SSLError, StreamClosedError) as err:
            sock.close()
            raise BrokerCallError(
                grpc.StatusCode.UNAVAILABLE,
                f"cannot reach Vault's broker server at {self._address}: {err}",
            ) from err
        logger.debug("broker connection opened", extra={"address": self._address})
        return session
