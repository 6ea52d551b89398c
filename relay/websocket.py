"""The WebSocket endpoint: one ASGI connection from upgrade to close.

The handler checks the token, accepts the upgrade, attaches the connection
to its room (which may be loading), greets it with the room's state vector
and awareness, and then feeds every frame to the room. Frames the client
sent during the load wait in the server's receive queue and are handled in
order afterwards.

A token in the URL (``?token=``) or an ``Authorization: Bearer`` header is
checked before the upgrade, and a bad one gets an HTTP error status,
so no frame of that client is ever read. A client without either may send
its token as the first message: a y-protocols auth message (type 2) of
sub-type 0 whose string is the token. Any other first message, or none
within ``--auth-timeout``, closes the connection with 4401. The same auth
message later in the session replaces the token, which is how a client
extends its session before the token expires. When the token expires, the
connection is closed with 4401.

Every way a connection can fail maps to one close code (docs/close-codes.md)
and one INFO log line naming the document and the connection; the peer gets
a short fixed reason, never exception text.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable

from auth import AuthError
from persistence import StoreUnavailable
from sync.errors import CloseCode, ProtocolError
from sync.messages import AuthMessage, encode_auth_permission_denied, parse_message

from .access import AccessPolicy, Grant, token_from_scope
from .connection import Connection
from .direct_write import current_stream_writer
from .names import InvalidDocumentName, document_name_from_path
from .room import Room
from .rooms import RoomManager

LOGGER = logging.getLogger("yrelay.websocket")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

# Seconds the peer has to reply to our close frame before we drop it.
CLOSE_TIMEOUT = 5.0
# The y-protocols auth sub-type that carries a token from the client. The
# relay sends the same sub-type number as permission-denied.
AUTH_TOKEN = 0
TOKEN_NOT_NEEDED = "this relay does not check tokens"


class TextFrame(ProtocolError):
    """y-websocket sends binary frames only."""

    close_code = CloseCode.UNSUPPORTED_DATA
    reason = "text frames are not supported"


def close_code_for(exc: AuthError) -> CloseCode:
    """Return the close code for an auth failure after the upgrade."""
    if exc.status == 403:
        return CloseCode.FORBIDDEN
    if exc.status == 503:
        return CloseCode.TRY_AGAIN_LATER
    return CloseCode.UNAUTHORIZED


class WebSocketEndpoint:
    """ASGI handler for ``ws://host/<document name>``."""

    def __init__(
        self,
        rooms: RoomManager,
        send_queue_bytes: int,
        is_shutting_down: Callable[[], bool],
        access: AccessPolicy | None = None,
        auth_timeout: float = 10.0,
        direct_writes: bool = True,
    ) -> None:
        self.rooms = rooms
        self.send_queue_bytes = send_queue_bytes
        self.is_shutting_down = is_shutting_down
        self.access = access or AccessPolicy(None)
        self.auth_timeout = auth_timeout
        # Write frames straight to Hypercorn's transport; off when
        # permessage-deflate may be negotiated, since those frames bypass it.
        self.direct_writes = direct_writes
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
        token = token_from_scope(scope)
        grant: Grant | None = None
        if token is not None or not self.access.requires_token:
            try:
                grant = await self.access.grant(token, name)
            except AuthError as exc:
                self.metrics.auth_failures.labels(status=str(exc.status)).inc()
                LOGGER.info("rejected upgrade doc=%s status=%d: %s", name, exc.status, exc.message)
                await _reject(scope, send, exc.status, exc.message)
                return
        await send({"type": "websocket.accept"})

        async def send_message(message: bytes) -> None:
            await send({"type": "websocket.send", "bytes": message})

        async def send_close(code: int, reason: str) -> None:
            await send({"type": "websocket.close", "code": code, "reason": reason})

        stream_writer = current_stream_writer() if self.direct_writes else None
        connection = Connection(name, send_message, send_close, self.send_queue_bytes, stream_writer=stream_writer)
        self.metrics.connections.inc()
        LOGGER.debug("opened doc=%s conn=%s", name, connection.id)
        try:
            if grant is None:
                grant = await self._authenticate_first_message(connection, receive)
            if grant is not None:
                connection.grant = grant
                await self._serve(connection, receive)
            else:
                await connection.wait_finished(CLOSE_TIMEOUT)
        finally:
            self.metrics.connections.dec()
            if not connection.finished.is_set():
                connection.transport_closed()
                await connection.wait_finished(None)
            code = connection.close_code
            self.metrics.connections_closed.labels(code=str(code if code is not None else 1005)).inc()

    async def _authenticate_first_message(self, connection: Connection, receive: Receive) -> Grant | None:
        """Wait for the token in an auth message; return None after closing the connection."""
        try:
            event = await asyncio.wait_for(receive(), self.auth_timeout)
        except asyncio.TimeoutError:
            self._close_logged(connection, CloseCode.UNAUTHORIZED, "no token within the authentication timeout")
            return None
        if event["type"] == "websocket.disconnect":
            connection.transport_closed()
            return None
        data = event.get("bytes")
        try:
            message = parse_message(data) if data is not None else None
        except ProtocolError as exc:
            self._close_logged(connection, exc.close_code, exc.reason)
            return None
        if not isinstance(message, AuthMessage) or message.auth_type != AUTH_TOKEN:
            self._close_logged(connection, CloseCode.UNAUTHORIZED, "token required before any other message")
            return None
        try:
            return await self.access.grant(message.text, connection.doc)
        except AuthError as exc:
            self.metrics.auth_failures.labels(status=str(exc.status)).inc()
            self._close_logged(connection, close_code_for(exc), exc.message)
            return None

    def _close_logged(self, connection: Connection, code: int, reason: str) -> None:
        LOGGER.info("closing doc=%s conn=%s code=%d: %s", connection.doc, connection.id, code, reason)
        connection.close(code, reason)

    async def _replace_token(self, connection: Connection, message: AuthMessage, expiry: _ExpiryTimer) -> None:
        """Check a token sent during the session; it replaces the old one, or the connection closes."""
        if not self.access.requires_token:
            connection.send(encode_auth_permission_denied(TOKEN_NOT_NEEDED))
            return
        if message.auth_type != AUTH_TOKEN:
            return
        try:
            grant = await self.access.grant(message.text, connection.doc)
        except AuthError as exc:
            self.metrics.auth_failures.labels(status=str(exc.status)).inc()
            self._close_logged(connection, close_code_for(exc), exc.message)
            return
        connection.grant = grant
        expiry.schedule(grant.expires_at)
        LOGGER.debug("token replaced doc=%s conn=%s role=%s", connection.doc, connection.id, grant.role.name.lower())

    async def _serve(self, connection: Connection, receive: Receive) -> None:
        try:
            room = await self.rooms.acquire(connection.doc, connection)
        except StoreUnavailable as exc:
            LOGGER.warning("closing doc=%s conn=%s code=%d: %s", connection.doc, connection.id, 1013, exc)
            connection.close(CloseCode.TRY_AGAIN_LATER, "storage unavailable")
            await connection.wait_finished(CLOSE_TIMEOUT)
            return
        try:
            room.greet(connection)
            await self._receive_loop(connection, room, receive)
        finally:
            self.rooms.release(room, connection)

    async def _receive_loop(self, connection: Connection, room: Room, receive: Receive) -> None:
        # When the room closes this connection (its send queue overflowed, or
        # the relay shuts down), the writer sends the close frame; a peer
        # that never answers it must not keep this loop waiting forever.
        handler = asyncio.current_task()
        assert handler is not None
        watchdog = _cancel_after_close(connection, handler)
        expiry = _ExpiryTimer(connection, self._close_logged)
        expiry.schedule(connection.grant.expires_at)
        try:
            # Messages the peer sent before it closed are still handled after
            # a write to it failed. The loop ends at the disconnect event or
            # when the relay closes the connection.
            while not connection.close_requested:
                event = await receive()
                kind = event["type"]
                if kind == "websocket.disconnect":
                    self._log_peer_close(connection, event.get("code"), event.get("reason"))
                    connection.transport_closed()
                    return
                if kind != "websocket.receive":
                    continue
                data = event.get("bytes")
                if data is None:
                    raise TextFrame()
                # The timer may not have run yet when a frame arrives just
                # after the expiry, so the time is checked here too.
                if expiry.expired():
                    break
                message = parse_message(data)
                if isinstance(message, AuthMessage):
                    await self._replace_token(connection, message, expiry)
                else:
                    room.handle(connection, message)
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
            expiry.cancel()
        await connection.wait_finished(CLOSE_TIMEOUT)

    @staticmethod
    def _log_peer_close(connection: Connection, code: int | None, reason: str | None = None) -> None:
        if reason is not None and code is not None:
            # The native server closed the connection for a frame that
            # breaks RFC 6455; it sent the close frame already.
            LOGGER.info("closing doc=%s conn=%s code=%d: %s", connection.doc, connection.id, code, reason)
            connection.close_code = code
        elif code == CloseCode.MESSAGE_TOO_BIG:
            LOGGER.info(
                "closing doc=%s conn=%s code=1009: message larger than the maximum size",
                connection.doc, connection.id,
            )
            connection.close_code = CloseCode.MESSAGE_TOO_BIG
        else:
            LOGGER.debug("peer closed doc=%s conn=%s code=%s", connection.doc, connection.id, code)
            if connection.close_code is None:
                connection.close_code = code


class _ExpiryTimer:
    """Closes a connection with 4401 when its token expires."""

    def __init__(self, connection: Connection, close: Callable[[Connection, int, str], None]) -> None:
        self._connection = connection
        self._close = close
        self._expires_at: float | None = None
        self._timer: asyncio.TimerHandle | None = None

    def schedule(self, expires_at: float | None) -> None:
        self.cancel()
        self._expires_at = expires_at
        if expires_at is not None:
            delay = max(0.0, expires_at - time.time())
            self._timer = asyncio.get_running_loop().call_later(delay, self._fire)

    def expired(self) -> bool:
        if self._expires_at is None or time.time() < self._expires_at:
            return False
        self._fire()
        return True

    def _fire(self) -> None:
        if self._connection.is_open:
            self._close(self._connection, CloseCode.UNAUTHORIZED, "token expired")

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class _CloseWatchdog:
    """Cancels the receive loop if the peer ignores our close frame."""

    def __init__(self, handler: asyncio.Task[Any]) -> None:
        self.fired = False
        self._handler = handler
        self._timer: asyncio.TimerHandle | None = None
        self._armed = True

    def writer_done(self) -> None:
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


def _cancel_after_close(connection: Connection, handler: asyncio.Task[Any]) -> _CloseWatchdog:
    watchdog = _CloseWatchdog(handler)
    connection.add_finished_callback(watchdog.writer_done)
    return watchdog


async def _reject(scope: Scope, send: Send, status: int, message: str) -> None:
    """Refuse an upgrade with an HTTP status, where the server supports it."""
    if "websocket.http.response" in scope.get("extensions", {}):
        body = ('{"error": %s}' % _json_string(message)).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if status == 401:
            headers.append((b"www-authenticate", b'Bearer error="invalid_token"'))
        await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008})


def _json_string(text: str) -> str:
    import json

    return json.dumps(text)
