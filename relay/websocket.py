"""The WebSocket endpoint: one ASGI connection from upgrade to close.

The handler accepts the upgrade, attaches the connection to its room (which
may be loading), greets it with the room's state vector and awareness, and
then feeds every frame to the room. Frames the client sent during the load
wait in the server's receive queue and are handled in order afterwards.

Every way a connection can fail maps to one close code (docs/close-codes.md)
and one INFO log line naming the document and the connection; the peer gets
a short fixed reason, never exception text.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable

from persistence import StoreUnavailable
from sync.errors import CloseCode, ProtocolError
from sync.messages import parse_message

from .connection import Connection
from .names import InvalidDocumentName, document_name_from_path
from .room import Room
from .rooms import RoomManager

LOGGER = logging.getLogger("yrelay.websocket")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

# Seconds the peer has to reply to our close frame before we drop it.
CLOSE_TIMEOUT = 5.0


class TextFrame(ProtocolError):
    """y-websocket sends binary frames only."""

    close_code = CloseCode.UNSUPPORTED_DATA
    reason = "text frames are not supported"


class WebSocketEndpoint:
    """ASGI handler for ``ws://host/<document name>``."""

    def __init__(self, rooms: RoomManager, send_queue_bytes: int, is_shutting_down: Callable[[], bool]) -> None:
        self.rooms = rooms
        self.send_queue_bytes = send_queue_bytes
        self.is_shutting_down = is_shutting_down
        self.metrics = rooms.metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        connect = await receive()
        if connect["type"] != "websocket.connect":
            return
        try:
            name = document_name_from_path(scope["path"])
        except InvalidDocumentName as exc:
            LOGGER.info("rejected upgrade path=%r: %s", scope["path"][:80], exc)
            await _reject(scope, send, 400, str(exc))
            return
        if self.is_shutting_down():
            LOGGER.info("rejected upgrade doc=%s: relay is shutting down", name)
            await _reject(scope, send, 503, "relay is shutting down")
            return
        await send({"type": "websocket.accept"})

        async def send_frame(frame: bytes) -> None:
            await send({"type": "websocket.send", "bytes": frame})

        async def send_close(code: int, reason: str) -> None:
            await send({"type": "websocket.close", "code": code, "reason": reason})

        connection = Connection(name, send_frame, send_close, self.send_queue_bytes)
        self.metrics.connections.inc()
        LOGGER.debug("opened doc=%s conn=%s", name, connection.id)
        writer = asyncio.create_task(connection.run_writer(), name=f"writer:{connection.id}")
        try:
            await self._serve(connection, receive, writer)
        finally:
            self.metrics.connections.dec()
            if not writer.done():
                connection.transport_closed()
                await writer
            code = connection.close_code
            self.metrics.connections_closed.labels(code=str(code if code is not None else 1005)).inc()

    async def _serve(self, connection: Connection, receive: Receive, writer: asyncio.Task[None]) -> None:
        try:
            room = await self.rooms.acquire(connection.doc, connection)
        except StoreUnavailable as exc:
            LOGGER.warning("closing doc=%s conn=%s code=%d: %s", connection.doc, connection.id, 1013, exc)
            connection.close(CloseCode.TRY_AGAIN_LATER, "storage unavailable")
            await _wait_writer(writer)
            return
        try:
            room.greet(connection)
            await self._receive_loop(connection, room, receive, writer)
        finally:
            self.rooms.release(room, connection)

    async def _receive_loop(self, connection: Connection, room: Room, receive: Receive, writer: asyncio.Task[None]) -> None:
        # When the room closes this connection (its send queue overflowed, or
        # the relay shuts down), the writer sends the close frame; a peer
        # that never answers it must not keep this loop waiting forever.
        handler = asyncio.current_task()
        assert handler is not None
        watchdog = _cancel_after_close(writer, handler)
        try:
            while connection.is_open:
                event = await receive()
                kind = event["type"]
                if kind == "websocket.disconnect":
                    self._log_peer_close(connection, event.get("code"))
                    connection.transport_closed()
                    return
                if kind != "websocket.receive":
                    continue
                data = event.get("bytes")
                if data is None:
                    raise TextFrame()
                room.handle(connection, parse_message(data))
        except ProtocolError as exc:
            LOGGER.info(
                "closing doc=%s conn=%s code=%d: %s", connection.doc, connection.id, exc.close_code, exc.reason
            )
            connection.close(exc.close_code, exc.reason)
        except asyncio.CancelledError:
            if not watchdog.fired:
                raise
            LOGGER.debug("peer did not answer the close frame doc=%s conn=%s", connection.doc, connection.id)
        except Exception:
            LOGGER.exception("internal error doc=%s conn=%s, closing with 1011", connection.doc, connection.id)
            connection.close(CloseCode.INTERNAL_ERROR, "")
        finally:
            watchdog.disarm()
        await _wait_writer(writer)

    @staticmethod
    def _log_peer_close(connection: Connection, code: int | None) -> None:
        if code == CloseCode.MESSAGE_TOO_BIG:
            LOGGER.info(
                "closing doc=%s conn=%s code=1009: message larger than the maximum size",
                connection.doc, connection.id,
            )
            connection.close_code = CloseCode.MESSAGE_TOO_BIG
        else:
            LOGGER.debug("peer closed doc=%s conn=%s code=%s", connection.doc, connection.id, code)
            if connection.close_code is None:
                connection.close_code = code


class _CloseWatchdog:
    """Cancels the receive loop if the peer ignores our close frame."""

    def __init__(self, handler: asyncio.Task[Any]) -> None:
        self.fired = False
        self._handler = handler
        self._timer: asyncio.TimerHandle | None = None
        self._armed = True

    def writer_done(self, _writer: asyncio.Task[None]) -> None:
        if self._armed:
            self._timer = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, self._fire)

    def _fire(self) -> None:
        if self._armed:
            self.fired = True
            self._handler.cancel()

    def disarm(self) -> None:
        self._armed = False
        if self._timer is not None:
            self._timer.cancel()


def _cancel_after_close(writer: asyncio.Task[None], handler: asyncio.Task[Any]) -> _CloseWatchdog:
    watchdog = _CloseWatchdog(handler)
    writer.add_done_callback(watchdog.writer_done)
    return watchdog


async def _wait_writer(writer: asyncio.Task[None]) -> None:
    try:
        await asyncio.wait_for(asyncio.shield(writer), CLOSE_TIMEOUT)
    except asyncio.TimeoutError:
        writer.cancel()


async def _reject(scope: Scope, send: Send, status: int, message: str) -> None:
    """Refuse an upgrade with an HTTP status, where the server supports it."""
    if "websocket.http.response" in scope.get("extensions", {}):
        body = ('{"error": %s}' % _json_string(message)).encode()
        await send({
            "type": "websocket.http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        })
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008})


def _json_string(text: str) -> str:
    import json

    return json.dumps(text)
