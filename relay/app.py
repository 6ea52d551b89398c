"""The ASGI application of one relay: WebSocket endpoint, health and metrics.

WebSocket scopes go straight to ``WebSocketEndpoint`` (no routing layer on the
hot path); HTTP and lifespan scopes go to a Starlette app.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from typing import AsyncIterator

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from persistence import DocumentStore
from persistence.sqlite import SQLiteStore
from sync.errors import CloseCode

from .config import RelayConfig
from .metrics import RelayMetrics
from .rooms import RoomManager
from .websocket import CLOSE_TIMEOUT, Receive, Scope, Send, WebSocketEndpoint

LOGGER = logging.getLogger("yrelay.app")


class Relay:
    """One relay node: its store, rooms, metrics and ASGI entry point."""

    def __init__(self, config: RelayConfig, store: DocumentStore | None = None) -> None:
        self.config = config
        self.metrics = RelayMetrics()
        self.store = store or SQLiteStore(config.data_dir, synchronous=config.sqlite_synchronous)
        self.rooms = RoomManager(self.store, config, self.metrics)
        self.shutting_down = False
        self.websocket = WebSocketEndpoint(self.rooms, config.send_queue_bytes, lambda: self.shutting_down)
        self.http = Starlette(
            routes=[
                Route("/healthz", self._healthz),
                Route("/readyz", self._readyz),
                Route("/metrics", self._metrics),
            ],
            lifespan=self._lifespan,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self.websocket(scope, receive, send)
        else:
            await self.http(scope, receive, send)

    @asynccontextmanager
    async def _lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        await self.store.open()
        self.rooms.start()
        LOGGER.info("storing data in %s", self.store.description)
        try:
            yield
        finally:
            await self.drain()
            await self.rooms.stop()
            await self.store.close()
            LOGGER.info("stopped; every update is committed to %s", self.store.description)

    async def drain(self) -> None:
        """Stop taking connections, commit every room, then close clients with 1012.

        Safe to call twice; the second call returns at once.
        """
        if self.shutting_down:
            return
        self.shutting_down = True
        started = asyncio.get_running_loop().time()
        try:
            await asyncio.wait_for(self.rooms.flush_all(), self.config.shutdown_grace)
        except asyncio.TimeoutError:
            LOGGER.error(
                "rooms not committed within %.1f s; %d store operations still queued",
                self.config.shutdown_grace, getattr(self.store, "pending_writes", -1),
            )
        closing = self.rooms.close_all(CloseCode.SERVICE_RESTART, "relay restarting")
        if closing:
            await asyncio.wait([asyncio.ensure_future(c.finished.wait()) for c in closing], timeout=CLOSE_TIMEOUT)
        LOGGER.info(
            "drained %d rooms and closed %d connections in %.2f s",
            len(self.rooms.rooms), len(closing), asyncio.get_running_loop().time() - started,
        )

    async def _healthz(self, _request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def _readyz(self, _request: Request) -> Response:
        if self.shutting_down:
            return JSONResponse({"status": "shutting down"}, status_code=503)
        if not await self.store.ping():
            return JSONResponse({"status": "storage unavailable", "store": self.store.description}, status_code=503)
        return JSONResponse({"status": "ready", "store": self.store.description})

    async def _metrics(self, _request: Request) -> Response:
        self.metrics.store_pending_writes.set(getattr(self.store, "pending_writes", 0))
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)
