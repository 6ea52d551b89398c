"""The y-websocket wire format: parse one frame into a message, build frames.

Each WebSocket binary frame holds exactly one message (y-websocket and
y-protocols never pack two). The layout, from y-protocols ``sync.js`` and
y-websocket's provider:

    varUint type
      0 sync:            varUint sub-type, then
                           0 step 1:  varBytes state vector
                           1 step 2:  varBytes update
                           2 update:  varBytes update
      1 awareness:       varBytes awareness update
      2 auth:            varUint sub-type (0 = permission denied), varString reason
      3 query-awareness: nothing

``parse_message`` checks framing only: lengths, varint sizes, known types,
no trailing bytes. Payload validity (is this a Yjs update? valid awareness
JSON?) is the business of ``document`` and ``awareness``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from .codec import Decoder, encode_varbytes, encode_varstring, encode_varuint
from .errors import InvalidAuthMessage, TrailingBytes, UnknownMessageType


class MessageType(IntEnum):
    """Outer message type, the first varUint of every frame."""

    SYNC = 0
    AWARENESS = 1
    AUTH = 2
    QUERY_AWARENESS = 3


class SyncType(IntEnum):
    """Sync sub-type, the second varUint of a sync message."""

    STEP1 = 0
    STEP2 = 1
    UPDATE = 2


AUTH_PERMISSION_DENIED = 0


@dataclass(frozen=True, slots=True)
class SyncStep1:
    """A peer's state vector, asking for what it lacks."""

    state_vector: bytes


@dataclass(frozen=True, slots=True)
class SyncStep2:
    """The reply to a step 1: every struct and deletion the requester lacks."""

    update: bytes


@dataclass(frozen=True, slots=True)
class SyncUpdate:
    """An incremental document update."""

    update: bytes


@dataclass(frozen=True, slots=True)
class AwarenessUpdate:
    """An encoded awareness update (decoded by ``awareness.decode_awareness_update``)."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class AuthMessage:
    """An auth message: a sub-type and a reason or token string."""

    auth_type: int
    text: str


@dataclass(frozen=True, slots=True)
class QueryAwareness:
    """A request for every awareness state the peer has."""


Message = SyncStep1 | SyncStep2 | SyncUpdate | AwarenessUpdate | AuthMessage | QueryAwareness

_QUERY_AWARENESS = QueryAwareness()


def parse_message(frame: bytes) -> Message:
    """Parse one binary frame.

    Raises a ``ProtocolError`` subclass (which carries the close code) on a
    truncated frame, an over-long varint, an unknown type or trailing bytes,
    and ``InvalidAuthMessage`` on an auth text that is not UTF-8, so a caller
    needs to catch only ``ProtocolError``.
    """
    decoder = Decoder(frame)
    message_type = decoder.read_varuint()
    message: Message
    if message_type == MessageType.SYNC:
        sync_type = decoder.read_varuint()
        payload = decoder.read_varbytes()
        if sync_type == SyncType.UPDATE:
            message = SyncUpdate(payload)
        elif sync_type == SyncType.STEP1:
            message = SyncStep1(payload)
        elif sync_type == SyncType.STEP2:
            message = SyncStep2(payload)
        else:
            raise UnknownMessageType()
    elif message_type == MessageType.AWARENESS:
        message = AwarenessUpdate(decoder.read_varbytes())
    elif message_type == MessageType.AUTH:
        auth_type = decoder.read_varuint()
        raw = decoder.read_varbytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidAuthMessage() from exc
        message = AuthMessage(auth_type, text)
    elif message_type == MessageType.QUERY_AWARENESS:
        message = _QUERY_AWARENESS
    else:
        raise UnknownMessageType()
    if decoder.remaining:
        raise TrailingBytes()
    return message


# --- building frames --------------------------------------------------------

_SYNC_STEP1_PREFIX = bytes((MessageType.SYNC, SyncType.STEP1))
_SYNC_STEP2_PREFIX = bytes((MessageType.SYNC, SyncType.STEP2))
_SYNC_UPDATE_PREFIX = bytes((MessageType.SYNC, SyncType.UPDATE))
_AWARENESS_PREFIX = bytes((MessageType.AWARENESS,))


def encode_sync_step1(state_vector: bytes) -> bytes:
    """Build a sync step 1 frame."""
    return _SYNC_STEP1_PREFIX + encode_varbytes(state_vector)


def encode_sync_step2(update: bytes) -> bytes:
    """Build a sync step 2 frame."""
    return _SYNC_STEP2_PREFIX + encode_varbytes(update)


def encode_sync_update(update: bytes) -> bytes:
    """Build a sync update frame."""
    return _SYNC_UPDATE_PREFIX + encode_varbytes(update)


def encode_awareness(payload: bytes) -> bytes:
    """Build an awareness frame around an encoded awareness update."""
    return _AWARENESS_PREFIX + encode_varbytes(payload)


def encode_auth_permission_denied(reason: str) -> bytes:
    """Build the y-protocols permission-denied auth frame."""
    return encode_varuint(MessageType.AUTH) + encode_varuint(AUTH_PERMISSION_DENIED) + encode_varstring(reason)
