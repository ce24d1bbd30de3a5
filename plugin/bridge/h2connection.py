"""The server end of one HTTP/2 connection from Vault: streams become calls.

The thread that reads the connection parses every frame and replies to the
connection-level ones (SETTINGS, PING) itself, in `h2session.Session`. A
stream becomes a call once its request is complete (or at once when the
method streams its requests).
`read` returns a ready call to its thread, which hands reading on to another
thread and runs the call itself. Calls send their responses through
`send_unary`, `send_message` and `send_status`, which wait for flow-control
window when the peer has not granted enough.
"""

from __future__ import annotations

import base64
import binascii
import logging
import queue
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from plugin.bridge import http2
from plugin.bridge.h2session import Session, StreamClosedError, StreamWindow
from plugin.bridge.http2 import ErrorCode, ProtocolError
from plugin.bridge.transport import Transport

logger = logging.getLogger(__name__)

MethodLookup = Callable[[str], Any]
# Headers that carry HTTP/2 or gRPC framing, not call metadata.
_NOT_METADATA = frozenset(
    {b"content-type", b"te", b"grpc-timeout", b"grpc-encoding", b"grpc-accept-encoding"}
)
_UNIMPLEMENTED = 12
_INTERNAL = 13


@dataclass(eq=False)
class Stream(StreamWindow):
    """One call's state; `handler` is grpcio's RpcMethodHandler for its method."""

    method: str = ""
    metadata: tuple[tuple[str, str | bytes], ...] = ()
    handler: Any = None
    body: bytearray = field(default_factory=bytearray)
    requests: queue.SimpleQueue[bytes | None] | None = None
    remote_closed: bool = False
    local_closed: bool = False
    headers_sent: bool = False


class Connection(Session):
    """Serve one HTTP/2 connection from Vault."""

    def __init__(
        self,
        transport: Transport,
        lookup: MethodLookup,
        on_call: Callable[[Connection, Stream], None],
    ) -> None:
        super().__init__(transport)
        self._lookup = lookup
        self._on_call = on_call
        self._streams: dict[int, Stream] = {}
        self._last_stream_id = 0
        self._preface_seen = False
        self._ready: list[Stream] = []

    # --- reading --------------------------------------------------------------

    def start(self) -> None:
        """Send this side's preface; call once, before `read`."""
        self.send(self._initial_frames())

    def read(self) -> Stream | None:
        """Read and handle frames until calls are ready or the connection ends.

        Every ready call but the last goes to `on_call`; the last is returned
        for the caller to run, after it has handed reading to another thread.
        Returns None once the connection has ended; then it is closed.
        Only one thread may read at a time.
        """
        try:
            while data := self._transport.recv():
                self._buffer += data
                if not self._preface_seen and not self._take_preface():
                    continue
                del self._buffer[: self._handle_frames(self._buffer)]
                if self._ready:
                    ready, self._ready = self._ready, []
                    for stream in ready[:-1]:
                        self._on_call(self, stream)
                    return ready[-1]
        except ProtocolError as err:
            logger.warning("closing an HTTP/2 connection", extra={"error": str(err)})
            self._try_send(http2.goaway(self._last_stream_id, err.code))
        except (OSError, StreamClosedError) as err:
            logger.debug("HTTP/2 connection ended", extra={"error": str(err)})
        self._mark_closed()
        self._transport.close()
        return None

    def _take_preface(self) -> bool:
        if len(self._buffer) < len(http2.PREFACE):
            return False
        if self._buffer[: len(http2.PREFACE)] != http2.PREFACE:
            raise ProtocolError("connection did not start with the preface")
        del self._buffer[: len(http2.PREFACE)]
        self._preface_seen = True
        return True

    def _window_of(self, stream_id: int) -> StreamWindow | None:
        return self._streams.get(stream_id)

    def _open_windows(self) -> list[StreamWindow]:
        return list(self._streams.values())

    def _on_data(self, flags: int, stream_id: int, data: bytes) -> None:
        stream = self._streams.get(stream_id)
        if stream is None or stream.remote_closed:
            return  # the stream was already completed or reset, so its data is moot
        stream.body += data
        end = bool(flags & http2.END_STREAM)
        if stream.requests is not None:
            for message in self._take_messages(stream):
                stream.requests.put(message)
        if end:
            stream.remote_closed = True
            self._request_complete(stream)

    def _request_complete(self, stream: Stream) -> None:
        if stream.requests is not None:
            stream.requests.put(None)
            return
        messages = list(self._take_messages(stream))
        if len(messages) != 1 or stream.body:
            self.send_status(
                stream, _INTERNAL, f"expected one request message, got {len(messages)}"
            )
            return
        stream.body = bytearray(messages[0])
        self._ready.append(stream)

    def _take_messages(self, stream: Stream) -> list[bytes]:
        body = stream.body
        messages = []
        while len(body) >= 5:
            size = int.from_bytes(body[1:5], "big")
            if len(body) < 5 + size:
                break
            if body[0]:
                raise ProtocolError("compressed gRPC messages are not supported")
            messages.append(bytes(body[5 : 5 + size]))
            del body[: 5 + size]
        return messages

    def _on_header_block(
        self, stream_id: int, flags: int, headers: list[tuple[bytes, bytes]]
    ) -> None:
        stream = self._streams.get(stream_id)
        if stream is not None:
            if flags & http2.END_STREAM:  # trailers end the request side
                stream.remote_closed = True
                self._request_complete(stream)
            return
        if stream_id <= self._last_stream_id or stream_id % 2 == 0:
            return  # a late block for a stream this side already closed
        self._last_stream_id = stream_id
        self._open_stream(stream_id, flags, headers)

    def _open_stream(
        self, stream_id: int, flags: int, headers: Iterable[tuple[bytes, bytes]]
    ) -> None:
        method = ""
        metadata: list[tuple[str, str | bytes]] = []
        for raw_name, raw_value in headers:
            if raw_name == b":path":
                method = raw_value.decode("ascii", "replace")
            elif raw_name[:1] != b":" and raw_name not in _NOT_METADATA:
                metadata.append(_metadatum(raw_name, raw_value))
        with self._flow:
            stream = Stream(
                stream_id,
                self._peer_initial_window,
                method=method,
                metadata=tuple(metadata),
            )
        stream.handler = self._lookup(method)
        if stream.handler is None:
            self.send_status(stream, _UNIMPLEMENTED, f"unknown method {method}")
            return
        with self._flow:
            self._streams[stream_id] = stream
        if stream.handler.request_streaming:
            stream.requests = queue.SimpleQueue()
            self._ready.append(stream)
        if flags & http2.END_STREAM:
            stream.remote_closed = True
            self._request_complete(stream)

    def _on_reset(self, stream_id: int) -> None:
        with self._flow:
            stream = self._streams.pop(stream_id, None)
            if stream is None:
                return
            stream.reset = True
            self._flow.notify_all()
        if stream.requests is not None:
            stream.requests.put(None)

    # --- writing ----------------------------------------------------------------

    def send_unary(self, stream: Stream, payload: bytes) -> None:
        """Send a unary response: headers, the message and an OK status."""
        head = b"" if stream.headers_sent else self._response_headers(stream)
        self._send_data(
            stream, http2.grpc_message(payload), head=head, tail=self._trailers(stream)
        )
        self._finish(stream)

    def send_message(self, stream: Stream, payload: bytes) -> None:
        head = b"" if stream.headers_sent else self._response_headers(stream)
        self._send_data(stream, http2.grpc_message(payload), head=head)

    def send_status(self, stream: Stream, code: int, message: str = "") -> None:
        """End the call with `code`; a call that sent nothing gets trailers only."""
        if stream.reset or stream.local_closed:
            return
        block = http2.trailers(code, message)
        if not stream.headers_sent:
            block = http2.RESPONSE_HEADERS + block
            stream.headers_sent = True
        flags = http2.END_STREAM | http2.END_HEADERS
        self.send(http2.frame(http2.HEADERS, flags, stream.id, block))
        self._finish(stream)

    def is_active(self, stream: Stream) -> bool:
        return not (self.closed or stream.reset or stream.local_closed)

    def shutdown(self) -> None:
        """Tell the peer no new calls are taken, then end the connection."""
        self._try_send(http2.goaway(self._last_stream_id, ErrorCode.NO_ERROR))
        self._mark_closed()
        self._transport.shutdown()

    def _response_headers(self, stream: Stream) -> bytes:
        stream.headers_sent = True
        flags = http2.END_HEADERS
        return http2.frame(http2.HEADERS, flags, stream.id, http2.RESPONSE_HEADERS)

    def _trailers(self, stream: Stream) -> bytes:
        flags = http2.END_STREAM | http2.END_HEADERS
        return http2.frame(http2.HEADERS, flags, stream.id, http2.trailers(0, ""))

    def _finish(self, stream: Stream) -> None:
        stream.local_closed = True
        with self._flow:
            self._streams.pop(stream.id, None)
        if not stream.remote_closed and not stream.reset:
            # The response is complete but the peer may still be sending.
            self._try_send(http2.rst_stream(stream.id, ErrorCode.NO_ERROR))

    def _mark_closed(self) -> None:
        with self._flow:
            streams = list(self._streams.values())
            self._streams.clear()
        super()._mark_closed()
        for stream in streams:
            stream.reset = True
            if stream.requests is not None:
                stream.requests.put(None)


def _metadatum(name: bytes, value: bytes) -> tuple[str, str | bytes]:
    """Return a metadata pair as grpcio does: `-bin` values decoded from base64."""
    key = name.decode("ascii", "replace")
    if not key.endswith("-bin"):
        return key, value.decode("latin-1")
    try:
        return key, base64.b64decode(value + b"=" * (-len(value) % 4))
    except binascii.Error as err:
        raise ProtocolError(f"metadata {key} is not valid base64") from err
