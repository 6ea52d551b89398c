"""Errors raised by the sans-I/O core, each carrying the close code to send.

The relay maps an exception to a WebSocket close frame in one place: it reads
``close_code`` and ``reason`` from the exception. Reasons are short, stable
and safe to show to a user; they never contain decoder internals.
"""

from __future__ import annotations

from enum import IntEnum


class CloseCode(IntEnum):
    """WebSocket close codes used by yrelay (the table in docs/close-codes.md)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    MALFORMED_MESSAGE = 1002
    UNSUPPORTED_DATA = 1003
    INVALID_PAYLOAD = 1007
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    INVALID_DOCUMENT_NAME = 4400
    # Missing, invalid or expired token: reconnect with a new one.
    UNAUTHORIZED = 4401
    # The token is valid but grants no access to this document.
    FORBIDDEN = 4403
    DOCUMENT_DELETED = 4410


class ProtocolError(Exception):
    """The peer sent bytes that break the y-protocols wire format."""

    close_code: CloseCode = CloseCode.MALFORMED_MESSAGE
    reason: str = "malformed message"


class TruncatedMessage(ProtocolError):
    """A varint, length prefix or payload runs past the end of the frame."""

    reason = "truncated message"


class VarintOverflow(ProtocolError):
    """A varUint is longer than 64 bits, which no Yjs encoder produces."""

    reason = "varint too long"


class UnknownMessageType(ProtocolError):
    """The outer message type or the sync sub-type is not defined."""

    reason = "unknown message type"


class TrailingBytes(ProtocolError):
    """Bytes remain after a complete message, so the frame was not built by y-protocols."""

    reason = "trailing bytes after message"


class InvalidPayload(ProtocolError):
    """A well-framed message carries a payload the CRDT layer rejects."""

    close_code = CloseCode.INVALID_PAYLOAD
    reason = "invalid payload"


class InvalidUpdate(InvalidPayload):
    """A Yjs update that cannot be decoded or applied.

    ``integrated`` is an update holding what yrs integrated into the
    document before it failed, or None; the caller forwards and stores it.
    """

    reason = "invalid update"

    def __init__(self, *args: object, integrated: bytes | None = None) -> None:
        super().__init__(*args)
        self.integrated = integrated


class InvalidStateVector(InvalidPayload):
    """A sync step 1 whose state vector cannot be decoded."""

    reason = "invalid state vector"


class InvalidAwareness(InvalidPayload):
    """An awareness update that is not a list of (client, clock, JSON state)."""

    reason = "invalid awareness update"


class InvalidAuthMessage(InvalidPayload):
    """An auth message whose text is not UTF-8."""

    reason = "invalid auth message"
