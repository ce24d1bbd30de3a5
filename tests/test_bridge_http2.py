"""Unit tests of the HTTP/2 pieces of the plugin's gRPC server."""

from __future__ import annotations

import random

import hpack
import pytest

from plugin.bridge import http2


def test_header_decoder_matches_hpack_with_reuse() -> None:
    # A small table forces evictions, so cached blocks go stale often.
    encoder = hpack.Encoder()
    encoder.header_table_size = 256
    reference = hpack.Decoder()
    reference.max_allowed_table_size = 256
    decoder = http2.HeaderDecoder()
    decoder._decoder.max_allowed_table_size = 256
    rng = random.Random(7)
    methods = [f"/pb.Backend/Method{n}" for n in range(6)]
    for _ in range(2000):
        headers = [
            (":method", "POST"),
            (":path", rng.choice(methods)),
            ("content-type", "application/grpc"),
            ("multiplex_id", f"mount-{rng.randrange(4)}"),
        ]
        block = encoder.encode(headers)
        expected = [
            (bytes(name), bytes(value))
            for name, value in reference.decode(block, raw=True)
        ]
        assert decoder.decode(block) == expected


def test_header_decoder_reuses_indexed_block() -> None:
    encoder = hpack.Encoder()
    decoder = http2.HeaderDecoder()
    headers = [(":path", "/pb.Backend/HandleRequest"), ("multiplex_id", "m1")]
    decoder.decode(encoder.encode(headers))
    repeated = encoder.encode(headers)

    first = decoder.decode(repeated)

    assert min(repeated) >= 0x80  # only indexed fields
    assert decoder.decode(repeated) is first


def test_header_decoder_rejects_garbage() -> None:
    with pytest.raises(http2.ProtocolError) as caught:
        http2.HeaderDecoder().decode(b"\xbf\xff\xff\xff\xff\xff")
    assert caught.value.code == http2.ErrorCode.COMPRESSION_ERROR


def test_trailers_decode_to_status_and_message() -> None:
    block = http2.RESPONSE_HEADERS + http2.trailers(5, "not found: 100% ✓")
    headers = list(hpack.Decoder().decode(block, raw=True))
    assert headers == [
        (b":status", b"200"),
        (b"content-type", b"application/grpc"),
        (b"grpc-status", b"5"),
        (b"grpc-message", b"not found: 100%25 %E2%9C%93"),
    ]


def test_long_message_uses_multibyte_length() -> None:
    block = http2.trailers(13, "x" * 300)
    headers = list(hpack.Decoder().decode(block, raw=True))
    assert headers[1] == (b"grpc-message", b"x" * 300)


def test_frame_header_round_trip() -> None:
    frame = http2.frame(http2.DATA, http2.END_STREAM, 0x7FFF_FFFF, b"a" * 70_000)
    assert http2.parse_header(frame, 0) == (70_000, http2.DATA, 1, 0x7FFF_FFFF)


def test_settings_with_bad_length_rejected() -> None:
    with pytest.raises(http2.ProtocolError) as caught:
        http2.parse_settings(b"\x00\x04\x00\x00\x00")
    assert caught.value.code == http2.ErrorCode.FRAME_SIZE_ERROR


def test_padding_longer_than_payload_rejected() -> None:
    with pytest.raises(http2.ProtocolError):
        http2.strip_padding(http2.PADDED, b"\x05abc")


def test_padding_is_stripped() -> None:
    assert http2.strip_padding(http2.PADDED, b"\x02abcXX") == b"abc"
