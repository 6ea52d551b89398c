"""lib0 binary encoding as used by y-protocols: varUint, varBytes, varString.

The decoder checks every length against the bytes that remain, so a hostile
length prefix can neither read past the frame nor make us allocate memory in
proportion to a claimed size. The encoding follows lib0's ``encoding.js`` and
``decoding.js`` (LEB128, 7 bits per byte, high bit set on all but the last).
"""

from __future__ import annotations

from .errors import TruncatedMessage, VarintOverflow

# lib0 writes JavaScript numbers (at most 53 bits) and yrs writes u64, so ten
# bytes is the longest varUint any real encoder emits.
MAX_VARUINT_BYTES = 10


def encode_varuint(value: int) -> bytes:
    """Encode a non-negative integer as a LEB128 varUint."""
    if value < 0:
        raise ValueError(f"varUint must be non-negative, got {value}")
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value > 0x7F:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_varbytes(payload: bytes) -> bytes:
    """Encode a byte string prefixed with its length."""
    return encode_varuint(len(payload)) + payload


def encode_varstring(text: str) -> bytes:
    """Encode a UTF-8 string prefixed with its byte length."""
    return encode_varbytes(text.encode("utf-8"))


class Decoder:
    """A cursor over one frame that raises ``ProtocolError`` subclasses on bad input."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes | memoryview, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    @property
    def remaining(self) -> int:
        """Number of unread bytes."""
        return len(self.data) - self.pos

    def read_varuint(self) -> int:
        """Read a LEB128 varUint of at most ten bytes."""
        data = self.data
        pos = self.pos
        end = len(data)
        result = 0
        shift = 0
        for _ in range(MAX_VARUINT_BYTES):
            if pos >= end:
                raise TruncatedMessage()
            byte = data[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                self.pos = pos
                return result
            shift += 7
        raise VarintOverflow()

    def read_bytes(self, length: int) -> bytes:
        """Read exactly ``length`` bytes."""
        end = self.pos + length
        if end > len(self.data):
            raise TruncatedMessage()
        chunk = bytes(self.data[self.pos : end])
        self.pos = end
        return chunk

    def read_varbytes(self) -> bytes:
        """Read a length-prefixed byte string."""
        return self.read_bytes(self.read_varuint())

    def read_varstring(self) -> str:
        """Read a length-prefixed UTF-8 string; bad UTF-8 raises ``UnicodeDecodeError``."""
        return self.read_varbytes().decode("utf-8")

    def read_rest(self) -> bytes:
        """Read every unread byte."""
        chunk = bytes(self.data[self.pos :])
        self.pos = len(self.data)
        return chunk
