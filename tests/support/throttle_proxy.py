"""An asyncio TCP proxy on 127.0.0.1 that slows down the downstream direction.

Tests put it between a client and the relay to play a client on a slow
network. Bytes from the client go upstream at full speed. Bytes from the
relay go downstream at ``downstream_bytes_per_second`` at most. The proxy
reads from the relay only as fast as it forwards, so the relay gets TCP
backpressure once the kernel socket buffers between them are full.

The upstream is always 127.0.0.1, because tests only reach servers they
started themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

UPSTREAM_HOST = "127.0.0.1"


class ThrottleProxy:
    """A TCP proxy from a local port to ``127.0.0.1:upstream_port``.

    Use it as an async context manager, or call ``start`` and ``close``.
    ``downstream_bytes`` counts the bytes forwarded to clients so far.
    """

    def __init__(
        self,
        upstream_port: int,
        downstream_bytes_per_second: int,
        chunk_bytes: int = 16 * 1024,
    ) -> None:
        if downstream_bytes_per_second <= 0:
            raise ValueError(f"downstream rate must be positive, got {downstream_bytes_per_second}")
        self.upstream_port = upstream_port
        self.rate = downstream_bytes_per_second
        # Reading at most a twentieth of a second's worth at a time keeps the
        # flow smooth at low rates instead of sending one burst per second.
        self.chunk_bytes = max(1, min(chunk_bytes, downstream_bytes_per_second // 20))
        self.downstream_bytes = 0
        self.upstream_bytes = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def port(self) -> int:
        """Local port that clients connect to."""
        assert self._server is not None, "proxy not started"
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        """WebSocket base URL through the proxy, without a trailing slash."""
        return f"ws://127.0.0.1:{self.port}"

    async def start(self) -> ThrottleProxy:
        """Listen on a free port of 127.0.0.1."""
        self._server = await asyncio.start_server(self._handle_client, "127.0.0.1", 0)
        return self

    async def close(self) -> None:
        """Stop listening and drop every proxied connection."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
                await task
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> ThrottleProxy:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _handle_client(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(UPSTREAM_HOST, self.upstream_port)
        except OSError:
            client_writer.close()
            return
        self._writers.update((client_writer, upstream_writer))
        upward = asyncio.create_task(self._pump_upstream(client_reader, upstream_writer))
        downward = asyncio.create_task(self._pump_downstream(upstream_reader, client_writer))
        self._tasks.update((upward, downward))
        try:
            # When either side closes, the whole proxied connection ends.
            await asyncio.wait((upward, downward), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (upward, downward):
                task.cancel()
            for writer in (client_writer, upstream_writer):
                writer.close()
                self._writers.discard(writer)
            for task in (upward, downward):
                with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
                    await task
                self._tasks.discard(task)

    async def _pump_upstream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            data = await reader.read(256 * 1024)
            if not data:
                return
            writer.write(data)
            await writer.drain()
            self.upstream_bytes += len(data)

    async def _pump_downstream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The token bucket stores at most one chunk of credit, so an idle period does
        # not build up credit for a burst above the rate afterwards.
        tokens = float(self.chunk_bytes)
        last = time.monotonic()
        while True:
            data = await reader.read(self.chunk_bytes)
            if not data:
                return
            now = time.monotonic()
            tokens = min(float(self.chunk_bytes), tokens + (now - last) * self.rate)
            last = now
            if tokens < len(data):
                await asyncio.sleep((len(data) - tokens) / self.rate)
                now = time.monotonic()
                tokens += (now - last) * self.rate
                last = now
            tokens -= len(data)
            writer.write(data)
            await writer.drain()
            self.downstream_bytes += len(data)
