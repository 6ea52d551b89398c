"""One client connection's outgoing side: a bounded queue and its writer task.

Everything a connection sends is a WebSocket frame built by
``frames.encode_binary_frame``, so a broadcast builds its frame once. A room
fans an update out by calling ``send_frame`` on every connection. When the
connection has a direct transport (``hypercorn_patches.expose_stream_writer``)
whose buffer is below ``WRITE_HIGH_WATER`` and nothing is queued, the frame is
written at once. Otherwise it is appended to a queue that the connection's
writer task drains into the socket. A slow reader therefore delays nobody else. Its queue is bounded
in bytes: past ``max_queue_bytes`` the connection is closed with 1013 and
its queue dropped, because a client that reconnects gets everything it lacks
through the sync handshake anyway. The frames of the initial sync reply do
not count against that bound: they are the room's cached frames, shared by
every joiner, so queueing them costs no memory per connection.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import deque
from typing import Awaitable, Callable

from sync.errors import CloseCode

from .access import ANONYMOUS, Grant
from .frames import encode_binary_frame, frame_payload

LOGGER = logging.getLogger("yrelay.connection")

SendMessage = Callable[[bytes], Awaitable[None]]
SendClose = Callable[[int, str], Awaitable[None]]

# Bytes in the transport's buffer above which frames are queued instead of
# written, and the writer waits for the socket to drain (asyncio's default).
WRITE_HIGH_WATER = 64 * 1024


class Connection:
    """A client socket as the room sees it.

    ``send`` never blocks. ``run_writer`` must run as a task for the life of
    the connection; it returns after ``close`` once the close frame is sent.
    """

    def __init__(
        self,
        doc: str,
        send_message: SendMessage,
        send_close: SendClose,
        max_queue_bytes: int,
        grant: Grant = ANONYMOUS,
        stream_writer: asyncio.StreamWriter | None = None,
    ) -> None:
        self.id = secrets.token_hex(4)
        self.doc = doc
        # The role and token expiry; replaced when the client sends a new token.
        self.grant = grant
        self.denied_writes = 0
        self.max_queue_bytes = max_queue_bytes
        self.close_code: int | None = None
        self.close_reason = ""
        self._send_message = send_message
        # With a stream writer, frames go straight to its transport; without
        # one (another ASGI server), each message goes through ASGI send.
        self._stream_writer = stream_writer
        self._transport = stream_writer.transport if stream_writer is not None else None
        self._send_close = send_close
        self._queue: deque[tuple[bytes, bool]] = deque()
        self._queued_bytes = 0
        self._shared_bytes = 0
        self._wakeup = asyncio.Event()
        self._closing = False
        self._transport_closed = False
        self.finished = asyncio.Event()

    @property
    def queued_bytes(self) -> int:
        """Bytes waiting to be written to the socket, shared sync frames included."""
        return self._queued_bytes + self._shared_bytes

    @property
    def is_open(self) -> bool:
        """False once a close was requested or the peer went away."""
        return not self._closing and not self._transport_closed

    def send(self, message: bytes) -> None:
        """Send one y-protocols message to this connection alone."""
        self.send_frame(encode_binary_frame(message))

    def send_frame(self, frame: bytes) -> None:
        """Write or queue one frame; close with 1013 when the queue bound is exceeded."""
        if self._closing or self._transport_closed:
            return
        transport = self._transport
        if transport is not None and not self._queue and transport.get_write_buffer_size() <= WRITE_HIGH_WATER:
            if transport.is_closing():
                self.transport_closed()
            else:
                transport.write(frame)
            return
        self._queued_bytes += len(frame)
        if self._queued_bytes > self.max_queue_bytes and self._queue:
            LOGGER.warning(
                "send queue overflow doc=%s conn=%s queued_bytes=%d limit=%d",
                self.doc, self.id, self._queued_bytes, self.max_queue_bytes,
            )
            self.close(CloseCode.TRY_AGAIN_LATER, "send queue full")
            return
        self._queue.append((frame, True))
        self._wakeup.set()

    def send_initial(self, frames: list[bytes]) -> None:
        """Queue the frames of a sync reply without counting them against the bound."""
        if self._closing or self._transport_closed:
            return
        for frame in frames:
            self._shared_bytes += len(frame)
            self._queue.append((frame, False))
        self._wakeup.set()

    def close(self, code: int, reason: str = "") -> None:
        """Drop what is queued and ask the writer to send a close frame."""
        if self._closing:
            return
        self._closing = True
        self.close_code = code
        self.close_reason = reason
        self._queue.clear()
        self._queued_bytes = 0
        self._shared_bytes = 0
        self._wakeup.set()

    async def _write(self, frame: bytes) -> None:
        if self._stream_writer is None:
            await self._send_message(frame_payload(frame))
            return
        transport = self._stream_writer.transport
        if transport.is_closing():
            raise ConnectionResetError("transport is closing")
        transport.write(frame)
        if transport.get_write_buffer_size() > WRITE_HIGH_WATER:
            await self._stream_writer.drain()

    def transport_closed(self) -> None:
        """Record that the peer is gone, so nothing more is written."""
        self._transport_closed = True
        self._queue.clear()
        self._queued_bytes = 0
        self._shared_bytes = 0
        self._wakeup.set()

    async def run_writer(self) -> None:
        """Write queued frames until the connection closes; sets ``finished``."""
        try:
            await self._write_until_closed()
        finally:
            self.finished.set()

    async def _write_until_closed(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue and not self._closing and not self._transport_closed:
                frame, bounded = self._queue.popleft()
                if bounded:
                    self._queued_bytes -= len(frame)
                else:
                    self._shared_bytes -= len(frame)
                try:
                    await self._write(frame)
                except Exception as exc:  # the ASGI server raises its own types once the socket is gone
                    LOGGER.debug("write failed doc=%s conn=%s: %s", self.doc, self.id, exc)
                    self.transport_closed()
            if self._transport_closed:
                return
            if self._closing:
                assert self.close_code is not None
                try:
                    await self._send_close(self.close_code, self.close_reason)
                except Exception as exc:  # the ASGI server raises its own types once the socket is gone
                    LOGGER.debug("close frame not sent doc=%s conn=%s: %s", self.doc, self.id, exc)
                return
