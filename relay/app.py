"""The ASGI application of one relay: WebSocket endpoint, health and metrics.

WebSocket scopes go straight to ``WebSocketEndpoint`` (no routing layer on the
hot path); HTTP and lifespan scopes go to a Starlette app.
"""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from nats.errors import Error as NatsError

from auth import KeysUnavailable, TokenVerifier

from persistence import DocumentStore, StoreUnavailable
from persistence.mesh_snapshots import MeshSnapshots
from persistence.mesh_store import MeshSnapshotStore
from persistence.mongodb import MongoStore
from persistence.redis_cache import RedisCache, wrap_with_cache
from persistence.sqlite import SQLiteStore
from sync.errors import CloseCode

from .access import AccessPolicy
from .compactor import Compactor
from .config import RelayConfig
from .document_api import DocumentApi
from .mesh.node import MeshConfig, MeshNode
from .mesh.stream import StreamConfigConflict
from .metrics import RelayMetrics
from .rooms import RoomManager
from .websocket import CLOSE_TIMEOUT, Receive, Scope, Send, WebSocketEndpoint

LOGGER = logging.getLogger("yrelay.app")


def default_store(config: RelayConfig) -> DocumentStore:
    """Build the store ``config`` selects: MongoDB when a URL is set, else SQLite, cached in Redis if set."""
    store: DocumentStore
    if config.mongodb_url is not None:
        store = MongoStore(config.mongodb_url, config.mongodb_database, config.mongodb_write_concern)
    else:
        store = SQLiteStore(
            config.data_dir, synchronous=config.sqlite_synchronous, commit_delay=config.sqlite_commit_delay
        )
    if config.redis_url is not None:
        store = wrap_with_cache(store, config.redis_url, config.redis_ttl)
    return store


class StartupError(Exception):
    """The relay cannot start. The message gives the cause and what to change."""


class Relay:
    """One relay node: its store, rooms, metrics and ASGI entry point."""

    def __init__(
        self, config: RelayConfig, store: DocumentStore | None = None, mesh_config: MeshConfig | None = None
    ) -> None:
        self.config = config
        self.metrics = RelayMetrics()
        if store is None and mesh_config is not None and config.mongodb_url is not None:
            store = MeshSnapshotStore(
                MeshSnapshots(config.mongodb_url, config.mongodb_database, config.mongodb_write_concern),
                RedisCache(config.redis_url, config.redis_ttl) if config.redis_url else None,
            )
        self.store = store or default_store(config)
        self._compactor_task: asyncio.Task[None] | None = None
        self.mesh = MeshNode(mesh_config, self.metrics) if mesh_config is not None else None
        self.rooms = RoomManager(self.store, config, self.metrics, self.mesh)
        self.shutting_down = False
        self.verifier = TokenVerifier(config.auth) if config.auth is not None else None
        self.access = AccessPolicy(self.verifier)
        self.websocket = WebSocketEndpoint(
            self.rooms, config.send_queue_bytes, lambda: self.shutting_down, self.access, config.auth_timeout,
            direct_writes=not config.websocket_compression,
        )
        self.documents = DocumentApi(self.rooms, config.max_message_size, self.access)
        self.http = Starlette(
            routes=[
                Route("/healthz", self._healthz),
                Route("/readyz", self._readyz),
                Route("/metrics", self._metrics),
                *self.documents.routes(),
            ],
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self.websocket(scope, receive, send)
        else:
            await self.http(scope, receive, send)

    async def start(self) -> None:
        """Open the store and join the mesh; raises ``StartupError`` with a clear message."""
        try:
            await self.store.open()
        except StoreUnavailable as exc:
            raise StartupError(str(exc)) from exc
        LOGGER.info("storing data in %s", self.store.description)
        if self.verifier is not None and self.verifier.settings.keys is not None:
            try:
                await self.verifier.settings.keys.keys()
            except KeysUnavailable:
                # Tokens are rejected with 503 until a later fetch succeeds.
                LOGGER.warning("signing keys are not available yet; they are fetched again on the next token")
        if self.mesh is not None:
            try:
                await self.mesh.start()
            except StreamConfigConflict as exc:
                await self.store.close()
                raise StartupError(f"{exc}; change the stream with the nats CLI or the relay's --nats-* options") from exc
            except (OSError, NatsError, asyncio.TimeoutError) as exc:
                await self.store.close()
                servers = ",".join(self.mesh.config.servers)
                raise StartupError(f"cannot connect to NATS at {servers}: {exc!r}") from exc
            if isinstance(self.store, MeshSnapshotStore) and self.config.run_compactor:
                assert self.mesh.nc is not None
                compactor = Compactor(
                    self.mesh.nc, self.store.snapshots, self.mesh.config.stream_name, self.mesh.subjects,
                    holder=self.mesh.relay_id, cache=self.store.cache,
                    history_interval=self.config.history_interval, history_keep=self.config.history_keep,
                )
                self._compactor_task = asyncio.create_task(compactor.run(), name="compactor")
        self.rooms.start()

    async def stop(self) -> None:
        """Drain, publish what the mesh still holds, and close the store."""
        await self.drain()
        await self.rooms.stop()
        if self._compactor_task is not None:
            self._compactor_task.cancel()
            await asyncio.gather(self._compactor_task, return_exceptions=True)
        if self.mesh is not None:
            await self.mesh.stop(self.config.shutdown_grace)
        try:
            await asyncio.wait_for(self.store.close(), self.config.shutdown_grace)
        except asyncio.TimeoutError:
            # The store is unreachable; waiting longer would block the exit
            # forever. The clients that sent these updates still hold them.
            LOGGER.error(
                "stopped with %d store operations not written to %s within %.0f s",
                getattr(self.store, "pending_writes", -1), self.store.description, self.config.shutdown_grace,
            )
            return
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
        body: dict[str, object] = {"store": self.store.description}
        if self.mesh is not None:
            body["mesh"] = self.mesh.status()
        if not await self.store.ping():
            return JSONResponse({"status": "storage unavailable", **body}, status_code=503)
        if self.mesh is not None and not self.mesh.connected:
            return JSONResponse({"status": "mesh unavailable", **body}, status_code=503)
        return JSONResponse({"status": "ready", **body})

    async def _metrics(self, _request: Request) -> Response:
        self.metrics.store_pending_writes.set(getattr(self.store, "pending_writes", 0))
        self.metrics.send_queue_bytes_max.set(max(
            (connection.queued_bytes for room in self.rooms.rooms.values() for connection in room.connections),
            default=0,
        ))
        cache = getattr(self.store, "cache", None)
        if cache is not None:
            self.metrics.cache_hits.set(cache.hits)
            self.metrics.cache_misses.set(cache.misses)
            self.metrics.cache_errors.set(cache.errors)
        if self.mesh is not None:
            self.mesh.status()
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)
