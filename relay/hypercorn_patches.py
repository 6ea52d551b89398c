"""Three changes to Hypercorn 0.18, applied at start-up.

They replace a module attribute or wrap a method of Hypercorn's
``protocol.ws_stream`` and ``asyncio.tcp_server`` modules. The pyproject
pins Hypercorn below 0.19, and tests/relay cover each behaviour, so an
upgrade that breaks them fails the suite.

permessage-deflate
------------------

Hypercorn 0.18 accepts permessage-deflate whenever a client offers it and
has no setting to refuse it. Browsers and Node's ``ws`` client offer it, so
every Yjs update, typically tens of bytes, was compressed and decompressed
on both sides. Node's ``ws`` runs zlib asynchronously through a small pool,
and replaying a 260,000-keystroke trace through one y-websocket provider
took about 100 s with deflate against about 12 s without it.
@y/websocket-server (on ``ws``) does not enable it either.

Hypercorn builds the extension from the name ``PerMessageDeflate`` in its
``protocol.ws_stream`` module for each handshake; this module points that
name at a subclass that declines every offer, or back at wsproto's class.

Oversized messages
------------------
When a message passes ``websocket_max_message_size``, Hypercorn sends a 1009
close frame but keeps the stream open: the rest of the message makes it
raise again, and the client's close reply is lost in the events it skips,
so the TCP connection and the application task stay open forever and the
application never hears of it. ``finish_oversized_close`` ends the stream
right after that close frame and tells the application with code 1009.

Direct writes
-------------

Every ASGI ``websocket.send`` goes through Hypercorn's stream, wsproto's
frame encoder and a lock before the bytes reach the socket, and each one
costs tens of microseconds. A broadcast to hundreds of connections pays
that once per connection. ``expose_stream_writer`` records each TCP
connection's ``asyncio.StreamWriter`` in a context variable (``direct_write``), which the
application task inherits because Hypercorn creates it from the
connection's task. The relay then writes its own pre-built frames to the
transport. Hypercorn still writes the handshake, pongs and close frames,
and a frame is always written whole, so the two writers never split a frame.
"""

from __future__ import annotations

from typing import Any

from hypercorn.asyncio.tcp_server import TCPServer
from hypercorn.protocol import ws_stream
from hypercorn.protocol.events import StreamClosed
from wsproto.extensions import PerMessageDeflate

from .direct_write import set_stream_writer

MESSAGE_TOO_BIG = 1009


class DeclinedPerMessageDeflate(PerMessageDeflate):
    """A permessage-deflate extension that never accepts an offer."""

    def accept(self, offer: str) -> None:  # type: ignore[override]  # None declines the offer in wsproto
        return None


def set_permessage_deflate(enabled: bool) -> None:
    """Make Hypercorn accept (True) or decline (False) permessage-deflate."""
    ws_stream.PerMessageDeflate = PerMessageDeflate if enabled else DeclinedPerMessageDeflate  # type: ignore[misc]  # module attribute swap


_original_handle_events = ws_stream.WSStream._handle_events


async def _handle_events_then_close_oversized(self: Any) -> None:
    await _original_handle_events(self)
    buffer = self.buffer
    if buffer.length > buffer.max_length and not self.closed:
        # Hypercorn has sent the 1009 close frame. Tell the application
        # first, because a closed stream ignores StreamClosed afterwards,
        # then close the stream, which closes the TCP connection.
        buffer.clear()
        self.closed = True
        if self.app_put is not None:
            await self.app_put({"type": "websocket.disconnect", "code": MESSAGE_TOO_BIG})
        await self.send(StreamClosed(stream_id=self.stream_id))


def finish_oversized_close() -> None:
    """Make Hypercorn close the connection after its 1009 close frame."""
    ws_stream.WSStream._handle_events = _handle_events_then_close_oversized  # type: ignore[method-assign]  # wraps the original


_original_tcp_run = TCPServer.run


async def _run_with_writer(self: Any) -> None:
    set_stream_writer(self.writer)
    await _original_tcp_run(self)


def expose_stream_writer() -> None:
    """Make ``direct_write.current_stream_writer`` work inside the application's WebSocket handlers."""
    TCPServer.run = _run_with_writer  # type: ignore[method-assign]
