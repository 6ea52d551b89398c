"""WebSocket binary frames as a server sends them (RFC 6455, section 5.2).

A server frame is not masked, so the bytes of one message are the same for
every connection. The relay builds them once per broadcast and writes them
straight to each connection's transport.
"""

from __future__ import annotations

import struct

_FIN_BINARY = 0x82


def encode_binary_frame(message: bytes) -> bytes:
    """Return ``message`` as one unfragmented, unmasked binary frame."""
    length = len(message)
    if length < 126:
        header = bytes((_FIN_BINARY, length))
    elif length < 1 << 16:
        header = struct.pack("!BBH", _FIN_BINARY, 126, length)
    else:
        header = struct.pack("!BBQ", _FIN_BINARY, 127, length)
    return header + message


def frame_payload(frame: bytes) -> bytes:
    """Return the message inside a frame built by ``encode_binary_frame``."""
    marker = frame[1]
    if marker < 126:
        return frame[2:]
    if marker == 126:
        return frame[4:]
    return frame[10:]
