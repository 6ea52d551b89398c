"""Frame parsing and building, fed raw bytes as a client would send them."""

from __future__ import annotations

import pytest

from sync.codec import Decoder, encode_varuint
from sync.errors import (
    CloseCode,
    InvalidAuthMessage,
    ProtocolError,
    TrailingBytes,
    TruncatedMessage,
    UnknownMessageType,
    VarintOverflow,
)
from sync.messages import (
    AuthMessage,
    AwarenessUpdate,
    QueryAwareness,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
    encode_auth_permission_denied,
    encode_awareness,
    encode_sync_step1,
    encode_sync_step2,
    encode_sync_update,
    parse_message,
)

U_HI = bytes.fromhex("01 01 01 00 04 01 01 74 02 68 69 00")


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 2**32 - 1, 2**53, 2**64 - 1])
def test_varuint_round_trip(value: int) -> None:
    encoded = encode_varuint(value)
    decoder = Decoder(encoded)
    assert decoder.read_varuint() == value
    assert decoder.remaining == 0


def test_varuint_longer_than_ten_bytes_is_rejected() -> None:
    with pytest.raises(VarintOverflow):
        Decoder(bytes.fromhex("ff ff ff ff ff ff ff ff ff ff 01")).read_varuint()


def test_length_past_end_is_truncation() -> None:
    with pytest.raises(TruncatedMessage):
        Decoder(bytes.fromhex("05 01 02")).read_varbytes()


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (encode_sync_step1(b"\x00"), SyncStep1(b"\x00")),
        (encode_sync_step2(U_HI), SyncStep2(U_HI)),
        (encode_sync_update(U_HI), SyncUpdate(U_HI)),
        (encode_awareness(b"\x00"), AwarenessUpdate(b"\x00")),
        (bytes.fromhex("03"), QueryAwareness()),
        (encode_auth_permission_denied("x"), AuthMessage(0, "x")),
    ],
)
def test_parse_inverts_encode(frame: bytes, expected: object) -> None:
    assert parse_message(frame) == expected


@pytest.mark.parametrize(
    ("hex_frame", "error"),
    [
        ("", TruncatedMessage),
        ("00", TruncatedMessage),
        ("00 02", TruncatedMessage),
        ("00 02 0c 01 01", TruncatedMessage),
        ("01", TruncatedMessage),
        ("07", UnknownMessageType),
        ("00 09 00", UnknownMessageType),
        ("ff ff ff ff ff ff ff ff ff ff 01", VarintOverflow),
        ("00 00 01 00 00", TrailingBytes),
        ("03 00", TrailingBytes),
        ("02 00 02 ff fe", InvalidAuthMessage),
    ],
)
def test_malformed_frames_raise_with_close_code(hex_frame: str, error: type[ProtocolError]) -> None:
    with pytest.raises(error) as caught:
        parse_message(bytes.fromhex(hex_frame))
    expected_code = CloseCode.INVALID_PAYLOAD if error is InvalidAuthMessage else CloseCode.MALFORMED_MESSAGE
    assert caught.value.close_code == expected_code


def test_sync_step1_bytes_match_y_protocols() -> None:
    # y-protocols writeSyncStep1 on an empty document produces 00 00 01 00.
    assert encode_sync_step1(b"\x00") == bytes.fromhex("00 00 01 00")


def test_permission_denied_bytes_match_y_protocols() -> None:
    assert encode_auth_permission_denied("read-only") == bytes.fromhex("02 00 09") + b"read-only"
