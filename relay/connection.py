"""One client connection's outgoing side: a bounded queue and its writer task.

Everything a connection sends is a WebSocket frame built by
``frames.encode_binary_frame``, so a broadcast builds its frame once. A room
fans an update out by calling ``send_frame`` on every connection. When the
connection has a direct transport (``hypercorn_patches.expose_stream_writer``)
whose buffer is below ``WRITE_HIGH_WATER`` and nothing is queued, the frame is
written at once. Otherwise it is appended to a queue that the connection's
writer task drains into the socket. A slow reader therefore delays no other connection. Its queue is bounded
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

    ``send`` and ``send_frame`` never block. The writer task starts on the
    first frame that has to wait, or on ``close``. A connection whose frames
    all go straight to the transport never has one, which saves memory in
    rooms with many idle clients. ``finished`` is set once the close frame
    is sent or the peer is gone.
    """

    __slots__ = (
        "id", "doc", "grant", "denied_writes", "max_queue_bytes", "close_code", "close_reason",
        "_send_message", "_send_close", "_stream_writer", "_transport", "_queue", "_queued_bytes",
        "_shared_bytes", "_wakeup", "_writer", "_closing", "_transport_closed", "_finished",
        "_finished_event", "_finished_callbacks",
    )

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
        self._send_close = send_close
        # With a stream writer, frames go straight to its transport; without
        # one (another ASGI server), each message goes through ASGI send.
        self._stream_writer = stream_writer
        self._transport = stream_writer.transport if stream_writer is not None else None
        # Created on first use: an empty deque and an Event take about 1.3 KiB.
        self._queue: deque[tuple[bytes, bool]] | None = None
        self._queued_bytes = 0
        self._shared_bytes = 0
        self._wakeup: asyncio.Event | None = None
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        self._transport_closed = False
        self._finished = False
        self._finished_event: asyncio.Event | None = None
        self._finished_callbacks: list[Callable[[], None]] = []

    @property
    def queued_bytes(self) -> int:
        """Bytes waiting to be written to the socket, shared sync frames included."""
        return self._queued_bytes + self._shared_bytes

    @property
    def is_open(self) -> bool:
        """False once a close was requested or the peer went away."""
        return not self._closing and not self._transport_closed

    @property
    def close_requested(self) -> bool:
        """True once the relay decided to close this connection."""
        return self._closing

    @property
    def finished(self) -> asyncio.Event:
        """An event set once the close frame is sent or the peer is gone."""
        if self._finished_event is None:
            self._finished_event = asyncio.Event()
            if self._finished:
                self._finished_event.set()
        return self._finished_event

    def add_finished_callback(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the connection is finished (at once if it is)."""
        if self._finished:
            callback()
        else:
            self._finished_callbacks.append(callback)

    async def wait_finished(self, timeout: float | None) -> None:
        """Wait until the connection is finished; after ``timeout`` seconds, stop its writer."""
        if self._finished:
            return
        try:
            await asyncio.wait_for(self.finished.wait(), timeout)
        except asyncio.TimeoutError:
            if self._writer is not None:
                self._writer.cancel()
            self._set_finished()

    def send(self, message: bytes) -> None:
        """Send one y-protocols message to this connection alone."""
        self.send_frame(encode_binary_frame(message))

    def send_frame(self, frame: bytes) -> None:
        """Write or queue one frame; close with 1013 when the queue bound is exceeded."""
        if self._closing or self._transport_closed:
            return
        transport = self._transport
        if transport is not None and not self._queue and transport.get_write_buffer_size() <= WRITE_HIGH_WATER:
            # A closing transport drops the frame; the server's disconnect
            # event follows, after any messages the peer sent before closing.
            if not transport.is_closing():
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
        self._enqueue(frame, bounded=True)

    def send_initial(self, frames: list[bytes]) -> None:
        """Queue the frames of a sync reply without counting them against the bound."""
        if self._closing or self._transport_closed:
            return
        for frame in frames:
            self._shared_bytes += len(frame)
            self._enqueue(frame, bounded=False)

    def _enqueue(self, frame: bytes, bounded: bool) -> None:
        if self._queue is None:
            self._queue = deque()
        self._queue.append((frame, bounded))
        self._wake_writer()

    def _wake_writer(self) -> None:
        if self._writer is None:
            self._wakeup = asyncio.Event()
            self._writer = asyncio.get_running_loop().create_task(self._run_writer(), name=f"writer:{self.id}")
        assert self._wakeup is not None
        self._wakeup.set()

    def _drop_queue(self) -> None:
        if self._queue is not None:
            self._queue.clear()
        self._queued_bytes = 0
        self._shared_bytes = 0

    def close(self, code: int, reason: str = "") -> None:
        """Drop what is queued and have the writer send a close frame."""
        if self._closing:
            return
        self._closing = True
        self.close_code = code
        self.close_reason = reason
        self._drop_queue()
        if not self._finished:
            self._wake_writer()

    def transport_closed(self) -> None:
        """Record that the peer is gone, so nothing more is written."""
        self._transport_closed = True
        self._drop_queue()
        if self._writer is not None:
            assert self._wakeup is not None
            self._wakeup.set()
        else:
            self._set_finished()

    def _set_finished(self) -> None:
        if self._finished:
            return
        self._finished = True
        if self._finished_event is not None:
            self._finished_event.set()
        callbacks, self._finished_callbacks = self._finished_callbacks, []
        for callback in callbacks:
            callback()

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

    async def _run_writer(self) -> None:
        try:
            await self._write_until_closed()
        finally:
            self._set_finished()

    async def _write_until_closed(self) -> None:
        wakeup = self._wakeup
        assert wakeup is not None
        while True:
            await wakeup.wait()
            wakeup.clear()
            queue = self._queue
            while queue and not self._closing and not self._transport_closed:
                frame, bounded = queue.popleft()
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
