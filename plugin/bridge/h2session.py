"""HTTP/2 work both ends of a connection share: frames, SETTINGS, PING, windows.

`Session` parses frames, replies to SETTINGS and PING, keeps the send
windows the peer grants and tops up the windows it grants. The server
(`h2connection.Connection`) and the client (`h2client.ClientSession`) add
what happens to streams: `_on_header_block`, `_on_data` and `_on_reset`.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass

from plugin.bridge import http2
from plugin.bridge.http2 import ErrorCode, ProtocolError
from plugin.bridge.transport import Transport


class StreamClosedError(Exception):
    """The peer reset the stream or the connection closed."""


@dataclass(eq=False)
class StreamWindow:
    """A stream's flow-control state, shared by server and client streams."""

    id: int
    send_window: int
    unacked: int = 0
    reset: bool = False


class Session:
    """Frame handling and flow control for one connection."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport
        self._decoder = http2.HeaderDecoder()
        self._pending_block: tuple[int, int, bytearray] | None = None
        # Guards the stream tables of subclasses and the send windows.
        self._flow = threading.Condition()
        self._send_window = http2.DEFAULT_WINDOW
        self._peer_initial_window = http2.DEFAULT_WINDOW
        self._unacked = 0
        self._buffer = bytearray()
        self.closed = False

    # --- hooks for the two ends ---------------------------------------------

    def _window_of(self, stream_id: int) -> StreamWindow | None:
        raise NotImplementedError

    def _open_windows(self) -> list[StreamWindow]:
        raise NotImplementedError

    def _on_data(self, flags: int, stream_id: int, data: bytes) -> None:
        raise NotImplementedError

    def _on_header_block(
        self, stream_id: int, flags: int, headers: list[tuple[bytes, bytes]]
    ) -> None:
        raise NotImplementedError

    def _on_reset(self, stream_id: int) -> None:
        raise NotImplementedError

    # --- reading --------------------------------------------------------------

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
            self._grant_window(len(payload), self._window_of(stream_id))
            self._on_data(flags, stream_id, http2.strip_padding(flags, payload))
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
        elif frame_type == http2.GOAWAY:
            self._on_goaway(payload)
        # PRIORITY and unknown types need no action.

    def _on_goaway(self, payload: bytes) -> None:
        """Note that the peer takes no new streams; the server side ignores it."""

    def _grant_window(self, length: int, stream: StreamWindow | None) -> None:
        # Each side advertises the largest window (2^31-1 bytes) and tops it
        # up once half of it is used, so the peer does not wait for window.
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
            self._decode_block(stream_id, flags, block)
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
            self._decode_block(stream_id, first_flags, bytes(block))

    def _decode_block(self, stream_id: int, flags: int, block: bytes) -> None:
        # Every block must be decoded, trailers included, to keep the HPACK
        # dynamic table in step with the peer's.
        self._on_header_block(stream_id, flags, self._decoder.decode(block))

    def _on_settings(self, values: dict[int, int]) -> None:
        # The ACK goes out before a larger window is used, because a peer
        # (grpcio's C core) checks incoming data against acknowledged settings.
        self.send(http2.frame(http2.SETTINGS, http2.ACK, 0))
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
                for stream in self._open_windows():
                    stream.send_window += delta
            self._flow.notify_all()

    def _on_window_update(self, stream_id: int, increment: int) -> None:
        with self._flow:
            if stream_id == 0:
                self._send_window += increment
                if self._send_window > http2.MAX_WINDOW:
                    raise ProtocolError(
                        "connection window exceeds 2^31-1",
                        ErrorCode.FLOW_CONTROL_ERROR,
                    )
            elif stream := self._window_of(stream_id):
                stream.send_window += increment
            self._flow.notify_all()

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

    def _send_data(
        self,
        stream: StreamWindow,
        data: bytes,
        *,
        head: bytes = b"",
        tail: bytes = b"",
        flags: int = 0,
    ) -> None:
        """Send `data` in DATA frames within the windows; `flags` go on the last.

        The common case, a small message within the window, leaves in one
        write together with `head` (headers) and `tail` (trailers).
        """
        view = memoryview(data)
        while True:
            size = self._reserve(stream, len(view))
            last = size == len(view)
            chunk = http2.frame(
                http2.DATA, flags if last else 0, stream.id, bytes(view[:size])
            )
            view = view[size:]
            if last:
                self.send(head + chunk + tail)
                return
            self.send(head + chunk)
            head = b""

    def _reserve(self, stream: StreamWindow, requested: int) -> int:
        """Take up to `requested` bytes of send window, waiting while none is left."""
        with self._flow:
            while True:
                if self.closed or stream.reset:
                    raise StreamClosedError(f"stream {stream.id} is closed")
                # Frames stay at the 16 KiB every peer accepts, whatever
                # larger size the peer allows.
                size = min(
                    requested,
                    self._send_window,
                    stream.send_window,
                    http2.DEFAULT_MAX_FRAME_SIZE,
                )
                if size > 0 or requested == 0:
                    size = max(size, 0)
                    self._send_window -= size
                    stream.send_window -= size
                    return size
                self._flow.wait()

    def _initial_frames(self) -> bytes:
        """Return this side's SETTINGS and the connection window increase."""
        initial = http2.settings(
            {
                http2.SETTINGS_ENABLE_PUSH: 0,
                http2.SETTINGS_INITIAL_WINDOW_SIZE: http2.MAX_WINDOW,
                http2.SETTINGS_MAX_HEADER_LIST_SIZE: http2.MAX_HEADER_LIST_SIZE,
            }
        )
        grow = http2.window_update(0, http2.MAX_WINDOW - http2.DEFAULT_WINDOW)
        return initial + grow

    def _try_send(self, data: bytes) -> None:
        with contextlib.suppress(StreamClosedError):
            self.send(data)

    def _mark_closed(self) -> None:
        with self._flow:
            self.closed = True
            self._flow.notify_all()
