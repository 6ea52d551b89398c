"""A WebSocket connection served straight from an asyncio protocol, without Hypercorn.

``native_server`` hands a connection here once the upgrade request is
parsed. This module speaks RFC 6455 to the client and ASGI to the relay's
handler: the handler gets the same ``websocket.*`` events it gets under
Hypercorn, so every rule about tokens, rooms and close codes lives in one
place (``websocket.WebSocketEndpoint``).

It differs from Hypercorn and wsproto in three ways. Client frames are
unmasked with one integer XOR per frame. A message goes to the handler
without an intermediate event object per frame. No task runs per connection
besides the handler's own. It does not negotiate extensions, so
permessage-deflate offers are declined.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import struct
from typing import Any, Awaitable, Callable

from .frames import encode_binary_frame

LOGGER = logging.getLogger("yrelay.native")

App = Callable[[dict[str, Any], Callable[[], Awaitable[dict[str, Any]]], Callable[[dict[str, Any]], Awaitable[None]]],
               Awaitable[None]]

_WEBSOCKET_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_OPCODE_CONTINUATION = 0x0
_OPCODE_TEXT = 0x1
_OPCODE_BINARY = 0x2
_OPCODE_CLOSE = 0x8
_OPCODE_PING = 0x9
_OPCODE_PONG = 0xA
# Received messages waiting for the handler; above this many bytes the
# socket is not read until the handler catches up.
_RECEIVE_HIGH_WATER = 4 * 1024 * 1024
CLOSE_TIMEOUT = 5.0


def accept_key(client_key: bytes) -> bytes:
    """Return the Sec-WebSocket-Accept value for a Sec-WebSocket-Key (RFC 6455, section 4.2.2)."""
    return base64.b64encode(hashlib.sha1(client_key + _WEBSOCKET_GUID).digest())


def unmask(payload: bytes | bytearray, mask: bytes) -> bytes:
    """XOR ``payload`` with the repeating 4-byte ``mask``."""
    length = len(payload)
    if length == 0:
        return b""
    repeated = (mask * (length // 4 + 1))[:length]
    value = int.from_bytes(payload, "little") ^ int.from_bytes(repeated, "little")
    return value.to_bytes(length, "little")


def _close_frame(code: int, reason: str) -> bytes:
    body = struct.pack("!H", code) + reason.encode("utf-8")[:123]
    return bytes((0x80 | _OPCODE_CLOSE, len(body))) + body


class _ProtocolViolation(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class WebSocketSession:
    """One upgraded connection: frame parsing, the ASGI adapter and flow control.

    The server calls ``feed`` with bytes from the socket and ``connection_lost``
    when it closes. ``pause_writing`` and ``resume_writing`` come from the
    transport's flow control, and ``drain`` waits on them.
    """

    __slots__ = (
        "transport", "max_message_size", "_buffer", "_fragments", "_fragments_size", "_fragment_opcode",
        "_events", "_queued_bytes", "_waiter", "_accepted", "_close_sent", "_finished", "_reading_paused",
        "_write_paused", "_drain_waiters", "_close_timer",
    )

    def __init__(self, transport: asyncio.Transport, max_message_size: int) -> None:
        self.transport = transport
        self.max_message_size = max_message_size
        self._buffer = bytearray()
        self._fragments: list[bytes] = []
        self._fragments_size = 0
        self._fragment_opcode = 0
        # A list, not a deque: it rarely contains more than one event, and
        # an empty deque costs 600 bytes per connection.
        self._events: list[dict[str, Any]] = []
        self._queued_bytes = 0
        self._waiter: asyncio.Future[None] | None = None
        self._accepted = False
        self._close_sent = False
        self._finished = False
        self._reading_paused = False
        self._write_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._close_timer: asyncio.TimerHandle | None = None

    # --- the writer interface of direct_write --------------------------------

    async def drain(self) -> None:
        """Wait until the transport's buffer is below its low-water mark."""
        if not self._write_paused or self.transport.is_closing():
            return
        waiter = asyncio.get_running_loop().create_future()
        self._drain_waiters.append(waiter)
        await waiter

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_drain_waiters()

    def _wake_drain_waiters(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # --- ASGI side ------------------------------------------------------------

    async def receive(self) -> dict[str, Any]:
        """Return the next ASGI event for the handler."""
        while not self._events:
            if self._finished:
                return {"type": "websocket.disconnect", "code": 1006}
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        event = self._events.pop(0)
        data = event.get("bytes") or event.get("text") or b""
        self._queued_bytes -= len(data)
        if self._reading_paused and self._queued_bytes <= _RECEIVE_HIGH_WATER // 2 and not self._finished:
            self._reading_paused = False
            self.transport.resume_reading()
        return event

    async def send(self, event: dict[str, Any], response_head: Callable[[int, list[tuple[bytes, bytes]]], bytes],
                   handshake: bytes) -> None:
        """Carry out one ASGI event from the handler."""
        kind = event["type"]
        if self.transport.is_closing():
            return
        if kind == "websocket.send":
            data = event.get("bytes")
            if data is not None:
                self.transport.write(encode_binary_frame(data))
            else:
                text = event.get("text", "").encode("utf-8")
                self.transport.write(bytes((0x80 | _OPCODE_TEXT,)) + encode_binary_frame(text)[1:])
        elif kind == "websocket.accept":
            self._accepted = True
            self.transport.write(handshake)
        elif kind == "websocket.close":
            if not self._accepted:
                # ASGI: closing before accepting rejects the upgrade with 403.
                self.transport.write(response_head(403, [(b"content-length", b"0")]))
                self.finish()
                self.transport.close()
                return
            self._send_close(event.get("code", 1000), event.get("reason") or "")
        elif kind == "websocket.http.response.start":
            self.transport.write(response_head(event["status"], list(event.get("headers", []))))
        elif kind == "websocket.http.response.body":
            self.transport.write(event.get("body", b""))
            if not event.get("more_body", False):
                self.finish()
                self.transport.close()

    def _send_close(self, code: int, reason: str) -> None:
        if self._close_sent:
            return
        self._close_sent = True
        self.transport.write(_close_frame(code, reason))
        # The peer should reply with its own close frame. A peer that does
        # not is dropped after CLOSE_TIMEOUT.
        self._close_timer = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, self.transport.abort)

    # --- socket side ----------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Parse bytes from the socket into ASGI events."""
        if self._finished:
            return
        self._buffer += data
        try:
            self._parse()
        except _ProtocolViolation as violation:
            self._push({"type": "websocket.disconnect", "code": violation.code, "reason": violation.reason})
            self._send_close(violation.code, violation.reason)
            self.finish()
            # Closing now, with the rest of a bad or oversized frame unread,
            # would make the kernel send a reset that can destroy the close
            # frame on its way. So only the sending side is shut down: what
            # still arrives is discarded until the peer closes, or the close
            # timer aborts the connection.
            if self.transport.can_write_eof():
                self.transport.write_eof()
            return
        if self._queued_bytes > _RECEIVE_HIGH_WATER and not self._reading_paused:
            self._reading_paused = True
            self.transport.pause_reading()

    def connection_lost(self) -> None:
        """Tell the handler the peer is gone."""
        if self._close_timer is not None:
            self._close_timer.cancel()
        if not self._finished:
            self._push({"type": "websocket.disconnect", "code": 1006})
            self.finish()
        self._wake_drain_waiters()

    def finish(self) -> None:
        """Stop producing events; the handler's next receive after the queued ones is a disconnect."""
        self._finished = True
        self._wake()

    def _push(self, event: dict[str, Any]) -> None:
        self._events.append(event)
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _parse(self) -> None:
        buffer = self._buffer
        offset = 0
        while True:
            available = len(buffer) - offset
            if available < 2:
                break
            first, second = buffer[offset], buffer[offset + 1]
            if first & 0x70:
                raise _ProtocolViolation(1002, "reserved bits set without an extension")
            if not second & 0x80:
                raise _ProtocolViolation(1002, "client frame is not masked")
            opcode = first & 0x0F
            length = second & 0x7F
            header = 2
            if length == 126:
                if available < 4:
                    break
                length = struct.unpack_from("!H", buffer, offset + 2)[0]
                header = 4
            elif length == 127:
                if available < 10:
                    break
                length = struct.unpack_from("!Q", buffer, offset + 2)[0]
                header = 10
            if opcode >= 0x8 and (length > 125 or not first & 0x80):
                raise _ProtocolViolation(1002, "invalid control frame")
            if opcode < 0x8 and self._fragments_size + length > self.max_message_size:
                raise _ProtocolViolation(1009, "message larger than the maximum size")
            end = offset + header + 4 + length
            if len(buffer) < end:
                break
            mask = bytes(buffer[offset + header:offset + header + 4])
            payload = unmask(buffer[offset + header + 4:end], mask)
            offset = end
            self._handle_frame(first & 0x80 != 0, opcode, payload)
            if self._finished:
                break
        if offset:
            del buffer[:offset]

    def _handle_frame(self, fin: bool, opcode: int, payload: bytes) -> None:
        if opcode == _OPCODE_PING:
            if not self._close_sent:
                self.transport.write(bytes((0x80 | _OPCODE_PONG, len(payload))) + payload)
            return
        if opcode == _OPCODE_PONG:
            return
        if opcode == _OPCODE_CLOSE:
            code = struct.unpack_from("!H", payload)[0] if len(payload) >= 2 else 1005
            self._push({"type": "websocket.disconnect", "code": code})
            if not self._close_sent:
                self._close_sent = True
                self.transport.write(_close_frame(code if len(payload) >= 2 else 1000, ""))
            self.finish()
            self.transport.close()
            return
        if opcode == _OPCODE_CONTINUATION:
            if not self._fragments:
                raise _ProtocolViolation(1002, "continuation frame without a message")
        elif opcode in (_OPCODE_TEXT, _OPCODE_BINARY):
            if self._fragments:
                raise _ProtocolViolation(1002, "new message before the last one ended")
            self._fragment_opcode = opcode
        else:
            raise _ProtocolViolation(1002, "unknown opcode")
        if not fin:
            self._fragments.append(payload)
            self._fragments_size += len(payload)
            return
        if self._fragments:
            self._fragments.append(payload)
            payload = b"".join(self._fragments)
            self._fragments = []
            self._fragments_size = 0
        if self._fragment_opcode == _OPCODE_TEXT:
            try:
                text = payload.decode("utf-8")
            except UnicodeDecodeError:
                raise _ProtocolViolation(1007, "text frame is not UTF-8") from None
            self._queued_bytes += len(text)
            self._push({"type": "websocket.receive", "text": text})
        else:
            self._queued_bytes += len(payload)
            self._push({"type": "websocket.receive", "bytes": payload})
