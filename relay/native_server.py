"""``--server native``: the relay's own HTTP/1.1 and WebSocket server on asyncio.

Hypercorn is the default server. Its per-message path (h11, wsproto, an
ASGI queue and two tasks per connection) costs more CPU and memory per
connection than a Node.js server, so this server exists as an option. The
figures are in bench/README.md. It serves the same ASGI application:

- A WebSocket upgrade becomes a ``native_websocket.WebSocketSession`` that
  feeds the relay's WebSocket handler ASGI events.
- Any other request is read whole and passed to the HTTP application. Only
  ``Content-Length`` bodies are read: a chunked body gets 411, and one above
  ``--max-message-size`` gets 413 before it is read. The response is written
  with ``Connection: close``, because the document API and the health
  checks do not need keep-alive.

No TLS: put the relay behind a TLS-terminating proxy, as with Hypercorn.
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.parse
from http import HTTPStatus
from typing import Any, Awaitable, Callable

from .direct_write import set_stream_writer
from .native_websocket import App, WebSocketSession, accept_key

LOGGER = logging.getLogger("yrelay.native")

# Larger request heads are rejected with 431, as Hypercorn's h11 does.
MAX_HEAD_BYTES = 16 * 1024
# Seconds a client has to send its request head and body; a connection that
# trickles bytes would otherwise stay open for ever.
REQUEST_TIMEOUT = 10.0
SERVER_HEADER = b"yrelay"


def response_head(status: int, headers: list[tuple[bytes, bytes]]) -> bytes:
    """Return an HTTP/1.1 status line and headers, with ``Connection: close`` added."""
    try:
        phrase = HTTPStatus(status).phrase.encode()
    except ValueError:
        phrase = b""
    lines = [b"HTTP/1.1 %d %s" % (status, phrase)]
    names = set()
    for name, value in headers:
        lines.append(bytes(name) + b": " + bytes(value))
        names.add(bytes(name).lower())
    if b"connection" not in names:
        lines.append(b"connection: close")
    if b"server" not in names:
        lines.append(b"server: " + SERVER_HEADER)
    return b"\r\n".join(lines) + b"\r\n\r\n"


class _Request:
    """A parsed request head."""

    def __init__(self, method: str, target: str, headers: list[tuple[bytes, bytes]]) -> None:
        self.method = method
        self.target = target
        self.headers = headers

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def has_token(self, name: bytes, token: bytes) -> bool:
        value = self.header(name)
        return value is not None and token in (part.strip().lower() for part in value.split(b","))


def _parse_head(head: bytes) -> _Request:
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        raise ValueError("invalid request line")
    headers = []
    for line in lines[1:]:
        name, separator, value = line.partition(b":")
        if not separator or not name or name != name.strip():
            raise ValueError("invalid header line")
        headers.append((name.lower(), value.strip()))
    return _Request(parts[0].decode("ascii"), parts[1].decode("latin-1"), headers)


class HttpProtocol(asyncio.Protocol):
    """One TCP connection: reads a request head, then serves HTTP or a WebSocket."""

    __slots__ = ("app", "max_message_size", "connections", "transport", "_buffer", "_request", "_body_expected",
                 "websocket", "task", "_request_timer")

    def __init__(self, app: App, max_message_size: int, connections: set[HttpProtocol]) -> None:
        self.app = app
        self.max_message_size = max_message_size
        self.connections = connections
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._request: _Request | None = None
        self._body_expected = 0
        self.websocket: WebSocketSession | None = None
        self.task: asyncio.Task[None] | None = None
        self._request_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports do not subclass asyncio.Transport
        self.connections.add(self)
        self._request_timer = asyncio.get_running_loop().call_later(REQUEST_TIMEOUT, self._request_timed_out)

    def _request_timed_out(self) -> None:
        self._request_timer = None
        if self.task is None and self.transport is not None and not self.transport.is_closing():
            self._reply_and_close(408, f"request not received within {REQUEST_TIMEOUT:.0f} s")

    def _stop_request_timer(self) -> None:
        if self._request_timer is not None:
            self._request_timer.cancel()
            self._request_timer = None

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        self._stop_request_timer()
        if self.websocket is not None:
            self.websocket.connection_lost()

    def pause_writing(self) -> None:
        if self.websocket is not None:
            self.websocket.pause_writing()

    def resume_writing(self) -> None:
        if self.websocket is not None:
            self.websocket.resume_writing()

    def data_received(self, data: bytes) -> None:
        if self.websocket is not None:
            self.websocket.feed(data)
            return
        if self.task is not None and self._request is None:
            return  # a response is being produced; nothing more is read
        self._buffer += data
        if self._request is None:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0 and len(self._buffer) <= MAX_HEAD_BYTES:
                return
            if end < 0 or end > MAX_HEAD_BYTES:
                self._reply_and_close(431, "request head is larger than 16 KiB")
                return
            try:
                self._request = _parse_head(bytes(self._buffer[:end]))
            except (ValueError, UnicodeDecodeError):
                self._reply_and_close(400, "malformed HTTP request")
                return
            del self._buffer[:end + 4]
            self._dispatch()
        elif len(self._buffer) >= self._body_expected:
            self._start_http()

    def _dispatch(self) -> None:
        request = self._request
        assert request is not None
        if request.has_token(b"upgrade", b"websocket") and request.method == "GET":
            self._start_websocket(request)
            return
        if request.header(b"transfer-encoding") is not None:
            self._reply_and_close(411, "chunked request bodies are not supported; send Content-Length")
            return
        length = request.header(b"content-length") or b"0"
        if not length.isdigit():
            self._reply_and_close(400, "invalid Content-Length")
            return
        self._body_expected = int(length)
        if self._body_expected > self.max_message_size:
            self._reply_and_close(413, f"body is larger than {self.max_message_size} bytes")
            return
        if len(self._buffer) >= self._body_expected:
            self._start_http()

    def _scope(self, kind: str, request: _Request) -> dict[str, Any]:
        assert self.transport is not None
        raw_path, _, query = request.target.partition("?")
        return {
            "type": kind,
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "scheme": "ws" if kind == "websocket" else "http",
            "method": request.method,
            "path": urllib.parse.unquote(raw_path),
            "raw_path": raw_path.encode("latin-1"),
            "query_string": query.encode("latin-1"),
            "root_path": "",
            "headers": request.headers,
            "client": self.transport.get_extra_info("peername"),
            "server": self.transport.get_extra_info("sockname"),
        }

    def _start_websocket(self, request: _Request) -> None:
        assert self.transport is not None
        key = request.header(b"sec-websocket-key")
        if request.header(b"sec-websocket-version") != b"13" or key is None:
            self._reply_and_close(400, "WebSocket upgrade needs Sec-WebSocket-Version 13 and a Sec-WebSocket-Key")
            return
        scope = self._scope("websocket", request)
        scope["subprotocols"] = []
        scope["extensions"] = {"websocket.http.response": {}}
        session = WebSocketSession(self.transport, self.max_message_size)
        self.websocket = session
        handshake = response_head(101, [
            (b"upgrade", b"websocket"), (b"connection", b"Upgrade"), (b"sec-websocket-accept", accept_key(key)),
        ])
        connected = False

        async def receive() -> dict[str, Any]:
            nonlocal connected
            if not connected:
                connected = True
                return {"type": "websocket.connect"}
            return await session.receive()

        async def send(event: dict[str, Any]) -> None:
            await session.send(event, response_head, handshake)

        self._stop_request_timer()
        leftover = bytes(self._buffer)
        self._buffer.clear()
        # The handler's task inherits this context, so it finds the session
        # as its direct writer.
        set_stream_writer(session)
        self.task = asyncio.get_running_loop().create_task(self._run(scope, receive, send))
        set_stream_writer(None)
        if leftover:
            session.feed(leftover)

    def _start_http(self) -> None:
        request = self._request
        assert request is not None and self.transport is not None
        self._stop_request_timer()
        body = bytes(self._buffer[:self._body_expected])
        self._buffer.clear()
        scope = self._scope("http", request)
        delivered = False
        transport = self.transport
        # A response to HEAD has headers only (RFC 9110, section 9.3.2).
        send_body = request.method != "HEAD"
        self._request = None
        self._body_expected = 0

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # the request has one body; later calls wait forever
            return {"type": "http.disconnect"}

        async def send(event: dict[str, Any]) -> None:
            if transport.is_closing():
                return
            if event["type"] == "http.response.start":
                transport.write(response_head(event["status"], list(event.get("headers", []))))
            elif event["type"] == "http.response.body":
                if send_body:
                    transport.write(event.get("body", b""))
                if not event.get("more_body", False):
                    transport.close()

        self.task = asyncio.get_running_loop().create_task(self._run(scope, receive, send))

    async def _run(self, scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]],
                   send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        try:
            await self.app(scope, receive, send)
        except Exception:
            LOGGER.exception("unhandled error serving path=%s", scope.get("path", "")[:80])
        finally:
            if self.transport is not None and self.websocket is None:
                self.transport.close()

    def _reply_and_close(self, status: int, message: str) -> None:
        assert self.transport is not None
        LOGGER.info("rejected request status=%d peer=%s: %s", status, self.transport.get_extra_info("peername"), message)
        body = json.dumps({"error": message}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        self.transport.write(response_head(status, headers) + body)
        self.transport.close()
        self._request = None


class NativeServer:
    """Listens on pre-bound sockets and serves ``app`` until ``shutdown_trigger`` returns."""

    def __init__(self, app: App, max_message_size: int, graceful_timeout: float) -> None:
        self.app = app
        self.max_message_size = max_message_size
        # Seconds handlers may run on after the trigger before they are cancelled.
        self.graceful_timeout = graceful_timeout
        self.connections: set[HttpProtocol] = set()

    async def serve(self, sockets: list[Any], shutdown_trigger: Callable[[], Awaitable[None]]) -> None:
        """Accept connections on ``sockets``; after the trigger, wait for handlers and close."""
        loop = asyncio.get_running_loop()
        servers = [
            await loop.create_server(
                lambda: HttpProtocol(self.app, self.max_message_size, self.connections), sock=sock, backlog=4096,
            )
            for sock in sockets
        ]
        try:
            await shutdown_trigger()
        finally:
            for server in servers:
                server.close()
            tasks = [p.task for p in self.connections if p.task is not None and not p.task.done()]
            if tasks:
                _, pending = await asyncio.wait(tasks, timeout=self.graceful_timeout)
                for task in pending:
                    task.cancel()
                if pending:
                    await asyncio.wait(pending, timeout=1.0)
            for protocol in list(self.connections):
                if protocol.transport is not None:
                    protocol.transport.abort()
