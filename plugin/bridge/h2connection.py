"""One HTTP/2 connection from Vault: frames in, streams, flow control, frames out.

The thread that reads the connection parses every frame and replies to the
connection-level ones (SETTINGS, PING) itself. A stream becomes a call once
its request is complete (or at once when the method streams its requests).
`read` returns a ready call to its thread, which hands reading on to another
thread and runs the call itself. Calls send their responses through
`send_unary`, `send_message` and `send_status`, which wait for flow-control
window when the peer has not granted enough.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from plugin.bridge import http2
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


class StreamClosedError(Exception):
    """The peer reset the stream or the connection closed."""


@dataclass(eq=False)
class Stream:
    """One call's state; `handler` is grpcio's RpcMethodHandler for its method."""

    id: int
    method: str
    metadata: tuple[tuple[str, str | bytes], ...]
    handler: Any
    send_window: int
    body: bytearray = field(default_factory=bytearray)
    requests: queue.SimpleQueue[bytes | None] | None = None
    unacked: int = 0
    remote_closed: bool = False
    local_closed: bool = False
    reset: bool = False
    headers_sent: bool = False


class Connection:
    """Serve one HTTP/2 connection; `serve` runs on the connection's own thread."""

    def __init__(
        self,
        transport: Transport,
        lookup: MethodLookup,
        on_call: Callable[[Connection, Stream], None],
    ) -> None:
        self._transport = transport
        self._lookup = lookup
        self._on_call = on_call
        self._decoder = http2.HeaderDecoder()
        self._streams: dict[int, Stream] = {}
        self._last_stream_id = 0
        self._pending_block: tuple[int, int, bytearray] | None = None
        # Guards the stream table and the send windows.
        self._flow = threading.Condition()
        self._send_window = http2.DEFAULT_WINDOW
        self._peer_initial_window = http2.DEFAULT_WINDOW
        self._peer_max_frame = http2.DEFAULT_MAX_FRAME_SIZE
        self._unacked = 0
        self._buffer = bytearray()
        self._preface_seen = False
        self._ready: list[Stream] = []
        self.closed = False

    # --- reading --------------------------------------------------------------

    def start(self) -> None:
        """Send this side's preface; call once, before `read`."""
        self._send_preface()

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

    def _handle_frames(self, buffer: bytearray) -> int:
        """Handle every complete frame in `buffer`; return the bytes consumed."""
        offset = 0
        while len(buffer) - offset >= http2.FRAME_HEADER_SIZE:
            length, frame_type, flags, stream_id = http2.parse_header(buffer, offset)
            if length > http2.DEFAULT_MAX_FRAME_SIZE:
                raise ProtocolError(
                    f"frame of {length} bytes exceeds the 16384-byte maximum",
                    ErrorCode.FRAME_SIZE_ERROR,
                )
            end = offset + http2.FRAME_HEADER_SIZE + length
            if len(buffer) < end:
                break
            payload = bytes(buffer[offset + http2.FRAME_HEADER_SIZE : end])
            self._handle_frame(frame_type, flags, stream_id, payload)
            offset = end
        return offset

    def _handle_frame(
        self, frame_type: int, flags: int, stream_id: int, payload: bytes
    ) -> None:
        if self._pending_block is not None and frame_type != http2.CONTINUATION:
            raise ProtocolError("expected a CONTINUATION frame")
        if frame_type == http2.DATA:
            self._on_data(flags, stream_id, payload)
        elif frame_type == http2.HEADERS:
            self._on_headers(flags, stream_id, payload)
        elif frame_type == http2.CONTINUATION:
            self._on_continuation(flags, stream_id, payload)
        elif frame_type == http2.PING:
            if not flags & http2.ACK:
                self.send(http2.frame(http2.PING, http2.ACK, 0, payload))
        elif frame_type == http2.SETTINGS:
            if not flags & http2.ACK:
                self._on_settings(http2.parse_settings(payload))
        elif frame_type == http2.WINDOW_UPDATE:
            self._on_window_update(stream_id, http2.parse_uint32(payload))
        elif frame_type == http2.RST_STREAM:
            self._on_reset(stream_id)
        # PRIORITY, GOAWAY and unknown types need no action from this server:
        # Vault sends GOAWAY before it closes the connection itself.

    def _on_data(self, flags: int, stream_id: int, payload: bytes) -> None:
        self._grant_window(len(payload), self._streams.get(stream_id))
        stream = self._streams.get(stream_id)
        if stream is None or stream.remote_closed:
            return  # the stream was already completed or reset, so its data is moot
        stream.body += http2.strip_padding(flags, payload)
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

    def _grant_window(self, length: int, stream: Stream | None) -> None:
        # The server advertises the largest window (2^31-1 bytes) and tops it
        # up once half of it is used, so a peer does not wait for window.
        self._unacked += length
        updates = b""
        if self._unacked >= http2.MAX_WINDOW // 2:
            updates += http2.window_update(0, self._unacked)
            self._unacked = 0
        if stream is not None:
            stream.unacked += length
            if stream.unacked >= http2.MAX_WINDOW // 2:
                updates += http2.window_update(stream.id, stream.unacked)
                stream.unacked = 0
        if updates:
            self.send(updates)

    def _on_headers(self, flags: int, stream_id: int, payload: bytes) -> None:
        block = http2.strip_padding(flags, payload)
        if flags & http2.PRIORITY_FLAG:
            block = block[5:]
        if flags & http2.END_HEADERS:
            self._on_header_block(stream_id, flags, block)
        else:
            self._pending_block = (stream_id, flags, bytearray(block))

    def _on_continuation(self, flags: int, stream_id: int, payload: bytes) -> None:
        if self._pending_block is None or self._pending_block[0] != stream_id:
            raise ProtocolError("unexpected CONTINUATION frame")
        _, first_flags, block = self._pending_block
        block += payload
        if len(block) > http2.MAX_HEADER_LIST_SIZE:
            raise ProtocolError("header block exceeds 65536 bytes")
        if flags & http2.END_HEADERS:
            self._pending_block = None
            self._on_header_block(stream_id, first_flags, bytes(block))

    def _on_header_block(self, stream_id: int, flags: int, block: bytes) -> None:
        # Every block must be decoded, trailers included, to keep the HPACK
        # dynamic table in step with the peer's.
        headers = self._decoder.decode(block)
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
                stream_id, method, tuple(metadata), None, self._peer_initial_window
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

    def _on_settings(self, values: dict[int, int]) -> None:
        with self._flow:
            window = values.get(http2.SETTINGS_INITIAL_WINDOW_SIZE)
            if window is not None:
                if window > http2.MAX_WINDOW:
                    raise ProtocolError(
                        f"initial window {window} exceeds 2^31-1",
                        ErrorCode.FLOW_CONTROL_ERROR,
                    )
                delta = window - self._peer_initial_window
                self._peer_initial_window = window
                for stream in self._streams.values():
                    stream.send_window += delta
            size = values.get(http2.SETTINGS_MAX_FRAME_SIZE)
            if size is not None:
                self._peer_max_frame = size
            self._flow.notify_all()
        self.send(http2.frame(http2.SETTINGS, http2.ACK, 0))

    def _on_window_update(self, stream_id: int, increment: int) -> None:
        with self._flow:
            if stream_id == 0:
                self._send_window += increment
                if self._send_window > http2.MAX_WINDOW:
                    raise ProtocolError(
                        "connection window exceeds 2^31-1",
                        ErrorCode.FLOW_CONTROL_ERROR,
                    )
            elif stream := self._streams.get(stream_id):
                stream.send_window += increment
            self._flow.notify_all()

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

    def send(self, data: bytes) -> None:
        if self.closed:
            raise StreamClosedError("the connection is closed")
        try:
            self._transport.send(data)
        except OSError as err:
            self._mark_closed()
            self._transport.shutdown()
            raise StreamClosedError(f"sending failed: {err}") from err

    def send_unary(self, stream: Stream, payload: bytes) -> None:
        """Send a unary response: headers, the message and an OK status."""
        head = b"" if stream.headers_sent else self._response_headers(stream)
        self._send_data(
            stream, http2.grpc_message(payload), head=head, tail=self._trailers(stream)
        )

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

    def _send_data(
        self, stream: Stream, data: bytes, *, head: bytes, tail: bytes = b""
    ) -> None:
        # The common case, a small message within the window, leaves in one
        # write together with the response headers and trailers.
        view = memoryview(data)
        while True:
            size = self._reserve(stream, len(view))
            out = head + http2.frame(http2.DATA, 0, stream.id, bytes(view[:size]))
            head = b""
            view = view[size:]
            if not view:
                self.send(out + tail)
                break
            self.send(out)
        if tail:
            self._finish(stream)

    def _reserve(self, stream: Stream, requested: int) -> int:
        """Take up to `requested` bytes of send window, waiting while none is left."""
        with self._flow:
            while True:
                if self.closed or stream.reset:
                    raise StreamClosedError(f"stream {stream.id} is closed")
                size = min(
                    requested,
                    self._send_window,
                    stream.send_window,
                    self._peer_max_frame,
                )
                if size > 0 or requested == 0:
                    size = max(size, 0)
                    self._send_window -= size
                    stream.send_window -= size
                    return size
                self._flow.wait()

    def _finish(self, stream: Stream) -> None:
        stream.local_closed = True
        with self._flow:
            self._streams.pop(stream.id, None)
        if not stream.remote_closed and not stream.reset:
            # The response is complete but the peer may still be sending.
            self._try_send(http2.rst_stream(stream.id, ErrorCode.NO_ERROR))

    def _send_preface(self) -> None:
        initial = http2.settings(
            {
                http2.SETTINGS_ENABLE_PUSH: 0,
                http2.SETTINGS_INITIAL_WINDOW_SIZE: http2.MAX_WINDOW,
                http2.SETTINGS_MAX_HEADER_LIST_SIZE: http2.MAX_HEADER_LIST_SIZE,
            }
        )
        grow = http2.window_update(0, http2.MAX_WINDOW - http2.DEFAULT_WINDOW)
        self.send(initial + grow)

    def _try_send(self, data: bytes) -> None:
        with contextlib.suppress(StreamClosedError):
            self.send(data)

    def _mark_closed(self) -> None:
        with self._flow:
            self.closed = True
            streams = list(self._streams.values())
            self._streams.clear()
            self._flow.notify_all()
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
