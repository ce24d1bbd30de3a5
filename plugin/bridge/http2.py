"""HTTP/2 frames and the fixed gRPC header blocks the plugin's server sends.

Only what a gRPC server needs (RFC 9113 framing, RFC 7541 header
encoding). Incoming header blocks are decoded with the `hpack` package,
because Vault's Go client compresses them with a dynamic table. Outgoing
blocks never use the dynamic table, so the response headers are constant
bytes and trailers are two literal fields.
"""

from __future__ import annotations

import enum
import functools
import struct

import hpack

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
FRAME_HEADER_SIZE = 9
DEFAULT_MAX_FRAME_SIZE = 16_384
DEFAULT_WINDOW = 65_535
MAX_WINDOW = 2**31 - 1
MAX_HEADER_LIST_SIZE = 65_536

# Frame types (RFC 9113 section 6).
DATA = 0x0
HEADERS = 0x1
PRIORITY = 0x2
RST_STREAM = 0x3
SETTINGS = 0x4
PUSH_PROMISE = 0x5
PING = 0x6
GOAWAY = 0x7
WINDOW_UPDATE = 0x8
CONTINUATION = 0x9

# Flags. ACK shares its bit with END_STREAM.
END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

# Settings identifiers.
SETTINGS_HEADER_TABLE_SIZE = 0x1
SETTINGS_ENABLE_PUSH = 0x2
SETTINGS_INITIAL_WINDOW_SIZE = 0x4
SETTINGS_MAX_HEADER_LIST_SIZE = 0x6


class ErrorCode(enum.IntEnum):
    NO_ERROR = 0x0
    PROTOCOL_ERROR = 0x1
    INTERNAL_ERROR = 0x2
    FLOW_CONTROL_ERROR = 0x3
    FRAME_SIZE_ERROR = 0x6
    REFUSED_STREAM = 0x7
    CANCEL = 0x8
    COMPRESSION_ERROR = 0x9


class ProtocolError(Exception):
    """The peer broke HTTP/2; the connection must end with GOAWAY `code`."""

    def __init__(self, message: str, code: ErrorCode = ErrorCode.PROTOCOL_ERROR):
        super().__init__(message)
        self.code = code


# Length (24 bits, split 8 + 16), type, flags, stream id.
_HEADER = struct.Struct(">BHBBI")
_SETTING = struct.Struct(">HI")
_UINT32 = struct.Struct(">I")
_GOAWAY = struct.Struct(">II")


def parse_header(buffer: bytes | bytearray, offset: int) -> tuple[int, int, int, int]:
    """Return (length, type, flags, stream id) of the frame at `offset`."""
    high, low, frame_type, flags, stream_id = _HEADER.unpack_from(buffer, offset)
    return (high << 16) | low, frame_type, flags, stream_id & 0x7FFF_FFFF


def frame(frame_type: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    length = len(payload)
    header = _HEADER.pack(length >> 16, length & 0xFFFF, frame_type, flags, stream_id)
    return header + payload


def settings(values: dict[int, int]) -> bytes:
    payload = b"".join(_SETTING.pack(key, value) for key, value in values.items())
    return frame(SETTINGS, 0, 0, payload)


def parse_settings(payload: bytes) -> dict[int, int]:
    if len(payload) % _SETTING.size:
        raise ProtocolError(
            f"SETTINGS payload of {len(payload)} bytes is not a multiple of 6",
            ErrorCode.FRAME_SIZE_ERROR,
        )
    return dict(_SETTING.iter_unpack(payload))


def window_update(stream_id: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, stream_id, _UINT32.pack(increment))


def parse_uint32(payload: bytes) -> int:
    if len(payload) != 4:
        raise ProtocolError(
            f"expected a 4-byte payload, got {len(payload)} bytes",
            ErrorCode.FRAME_SIZE_ERROR,
        )
    value: int = _UINT32.unpack(payload)[0]
    return value & 0x7FFF_FFFF


def goaway(last_stream_id: int, code: ErrorCode) -> bytes:
    return frame(GOAWAY, 0, 0, _GOAWAY.pack(last_stream_id, code))


def rst_stream(stream_id: int, code: ErrorCode) -> bytes:
    return frame(RST_STREAM, 0, stream_id, _UINT32.pack(code))


def strip_padding(flags: int, payload: bytes) -> bytes:
    """Return the payload of a DATA or HEADERS frame without its padding."""
    if not flags & PADDED:
        return payload
    if not payload or payload[0] >= len(payload):
        raise ProtocolError("padding is longer than the frame payload")
    return payload[1 : len(payload) - payload[0]]


class HeaderDecoder:
    """Decode request header blocks, reusing the result of a repeated block.

    A block made only of one-byte indexed fields leaves the dynamic table as
    it is, so while the table is unchanged the same bytes decode to the same
    headers. Vault's Go client sends such a block for each repeated call of
    a method; decoding it again costs about 12 us (a micro-benchmark).
    """

    _MAX_CACHED = 256

    def __init__(self) -> None:
        self._decoder = hpack.Decoder()
        self._cache: dict[bytes, list[tuple[bytes, bytes]]] = {}

    def decode(self, block: bytes) -> list[tuple[bytes, bytes]]:
        cached = self._cache.get(block)
        if cached is not None:
            return cached
        try:
            headers = [
                (bytes(name), bytes(value))
                for name, value in self._decoder.decode(block, raw=True)
            ]
        except hpack.HPACKError as err:
            raise ProtocolError(
                f"invalid header block: {err}", ErrorCode.COMPRESSION_ERROR
            ) from err
        # 0xFF starts a multi-byte index, which the check below cannot follow.
        only_indexed = bool(block) and min(block) >= 0x80 and 0xFF not in block
        if not only_indexed or len(self._cache) >= self._MAX_CACHED:
            self._cache.clear()  # this block may have changed the table
        if only_indexed:
            self._cache[block] = headers
        return headers


# --- header blocks the server sends ------------------------------------------


def _hpack_int(value: int, prefix_bits: int, first: int = 0) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _string(value: bytes) -> bytes:
    return _hpack_int(len(value), 7) + value


def _literal(name: bytes, value: bytes) -> bytes:
    """Encode a field as a literal without indexing, with a literal name."""
    return b"\x00" + _string(name) + _string(value)


def _named(index: int, value: bytes) -> bytes:
    """Encode a literal without indexing whose name is static table entry `index`."""
    return _hpack_int(index, 4) + _string(value)


# ":status: 200" is entry 8 of the static table, sent as an indexed field
# (high bit set); "content-type" is entry 31.
RESPONSE_HEADERS = b"\x88" + _named(31, b"application/grpc")


@functools.lru_cache(maxsize=64)
def request_headers(path: str, tls: bool) -> bytes:
    """Return the header block of a gRPC request for the method `path`."""
    # Static entries: 3 ":method: POST", 6 and 7 ":scheme: http/https",
    # 4 ":path", 1 ":authority", 31 "content-type".
    return (
        b"\x83"
        + (b"\x87" if tls else b"\x86")
        + _named(4, path.encode())
        + _named(1, b"localhost")
        + _named(31, b"application/grpc")
        + _literal(b"te", b"trailers")
    )


_MESSAGE_LIMIT = 4096


def trailers(code: int, message: str) -> bytes:
    """Return the header block of a status, percent-encoded as gRPC requires."""
    block = _literal(b"grpc-status", str(code).encode())
    if message:
        encoded = percent_encode(message[:_MESSAGE_LIMIT])
        block += _literal(b"grpc-message", encoded)
    return block


def percent_encode(message: str) -> bytes:
    out = bytearray()
    for byte in message.encode():
        if 0x20 <= byte <= 0x7E and byte != 0x25:
            out.append(byte)
        else:
            out += b"%%%02X" % byte
    return bytes(out)


def grpc_message(payload: bytes) -> bytes:
    """Prefix a serialized message with gRPC's flag byte and length."""
    return b"\x00" + _UINT32.pack(len(payload)) + payload
