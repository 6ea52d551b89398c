"""The rooms of one relay: load each document once, unload it when idle.

Resource handling: the first connection to a document creates its room and
starts one load; every connection arriving meanwhile waits for that same
load, so a crowd joining a cold document reads storage once. When the last
connection leaves, the room stays for ``unload_grace`` seconds; a room that
is unloaded first folds its log into a snapshot and waits for its writes to
commit, and stays in place if a connection arrives during that wait.

Error handling: a failed load removes the room, so the next connection tries
again; the caller receives ``StoreUnavailable``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, AsyncIterator

from persistence import DocumentStore, StoreUnavailable
from sync.errors import CloseCode

from .config import RelayConfig
from .connection import Connection
from .metrics import RelayMetrics
from .room import Room

if TYPE_CHECKING:
    from .mesh.node import MeshNode

LOGGER = logging.getLogger("yrelay.rooms")


class RoomManager:
    """Creates, shares and unloads the rooms of one relay."""

    def __init__(
        self, store: DocumentStore, config: RelayConfig, metrics: RelayMetrics, mesh: MeshNode | None = None
    ) -> None:
        self.store = store
        self.config = config
        self.metrics = metrics
        self.mesh = mesh
        self.rooms: dict[str, Room] = {}
        self._deletions: dict[str, asyncio.Event] = {}
        if mesh is not None:
            mesh.on_document_deleted = self._drop_deleted_by_peer
        self._tasks: set[asyncio.Task[None]] = set()
        self._expiry_task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the periodic awareness expiry."""
        self._expiry_task = asyncio.create_task(self._expire_awareness_forever(), name="awareness-expiry")

    async def stop(self) -> None:
        """Stop background tasks (rooms are flushed by ``flush_all``)."""
        tasks = [*self._tasks]
        if self._expiry_task is not None:
            tasks.append(self._expiry_task)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def acquire(self, name: str, connection: Connection) -> Room:
        """Attach ``connection`` to the room of ``name``, loading it if needed.

        Raises ``StoreUnavailable`` when the document cannot be read; the
        connection is then not attached.
        """
        await self._wait_for_deletion(name)
        room = self._room_for(name)
        room.attach(connection)
        await room.loaded.wait()
        if room.load_error is not None:
            room.connections.discard(connection)
            raise StoreUnavailable(f"cannot load document {name!r}") from room.load_error
        return room

    @asynccontextmanager
    async def borrow(self, name: str) -> AsyncIterator[Room]:
        """Hold the room of ``name`` loaded for the duration of an HTTP request.

        Raises ``StoreUnavailable`` when the document cannot be read.
        """
        await self._wait_for_deletion(name)
        room = self._room_for(name)
        room.borrowers += 1
        if room.unload_handle is not None:
            room.unload_handle.cancel()
            room.unload_handle = None
        try:
            await room.loaded.wait()
            if room.load_error is not None:
                raise StoreUnavailable(f"cannot load document {name!r}") from room.load_error
            yield room
        finally:
            room.borrowers -= 1
            self._schedule_unload(room)

    async def delete(self, name: str, code: int, reason: str) -> None:
        """Remove a document from memory, storage and the mesh log.

        Its connections are closed with ``code``. A client that still holds
        the document and reconnects sends its content again through the sync
        handshake, so the document then exists again, once.
        """
        async with self._deleting(name):
            await self._drop(name, code, reason)
            await self.store.delete(name)
            if self.mesh is not None:
                await self.mesh.purge(name)
        LOGGER.info("deleted doc=%s", name)

    async def _drop_deleted_by_peer(self, name: str) -> None:
        # Every relay keeps its own store in mesh mode, so each removes its copy.
        async with self._deleting(name):
            await self._drop(name, CloseCode.DOCUMENT_DELETED, "document deleted")
            await self.store.delete(name)

    @asynccontextmanager
    async def _deleting(self, name: str) -> AsyncIterator[None]:
        # A client closed with 4410 reconnects at once; its room must not
        # load the stored copy that is about to be deleted.
        done = asyncio.Event()
        self._deletions[name] = done
        try:
            yield
        finally:
            del self._deletions[name]
            done.set()

    async def _wait_for_deletion(self, name: str) -> None:
        pending = self._deletions.get(name)
        if pending is not None:
            await pending.wait()

    async def _drop(self, name: str, code: int, reason: str) -> None:
        room = self.rooms.pop(name, None)
        if room is None:
            return
        self.metrics.rooms_loaded.set(len(self.rooms))
        for connection in list(room.connections):
            connection.close(code, reason)
        if room.unload_handle is not None:
            room.unload_handle.cancel()
        await room.flush()
        if self.mesh is not None:
            await self.mesh.detach_room(room)
        room.close()

    def _room_for(self, name: str) -> Room:
        room = self.rooms.get(name)
        if room is None:
            room = Room(name, self.store, self.config, self.metrics, self.mesh)
            self.rooms[name] = room
            self.metrics.rooms_loaded.set(len(self.rooms))
            self._spawn(self._load(room), f"load:{name}")
        return room

    async def _load(self, room: Room) -> None:
        try:
            await room.load()
            if self.mesh is not None:
                await self.mesh.attach_room(room)
        except Exception as exc:
            LOGGER.error("load failed doc=%s: %s", room.name, exc)
            room.load_error = exc
            if self.rooms.get(room.name) is room:
                del self.rooms[room.name]
                self.metrics.rooms_loaded.set(len(self.rooms))
            if self.mesh is not None:
                await self.mesh.detach_room(room)
            room.close()
        finally:
            room.loaded.set()

    def release(self, room: Room, connection: Connection) -> None:
        """Detach ``connection``; schedule the unload when the room empties."""
        room.detach(connection)
        self._schedule_unload(room)

    def _schedule_unload(self, room: Room) -> None:
        if not room.is_idle or self.rooms.get(room.name) is not room or room.unload_handle is not None:
            return
        loop = asyncio.get_running_loop()
        room.unload_handle = loop.call_later(
            self.config.unload_grace, lambda: self._spawn(self._unload(room), f"unload:{room.name}")
        )

    async def _unload(self, room: Room) -> None:
        room.unload_handle = None
        if not room.is_idle:
            return
        if room.is_dirty:
            room.compact()
        await room.flush()
        # A connection may have arrived while the writes were committing. It
        # uses this room, so the room stays.
        if not room.is_idle or self.rooms.get(room.name) is not room:
            return
        del self.rooms[room.name]
        self.metrics.rooms_loaded.set(len(self.rooms))
        self.metrics.room_unloads.inc()
        if self.mesh is not None:
            await self.mesh.detach_room(room)
        room.close()
        LOGGER.debug("unloaded doc=%s", room.name)

    async def flush_all(self) -> None:
        """Fold every dirty room's log into a snapshot and wait for the commits."""
        for room in list(self.rooms.values()):
            if room.loaded.is_set() and room.load_error is None and room.is_dirty:
                room.compact()
        await self.store.flush()

    def close_all(self, code: int, reason: str) -> list[Connection]:
        """Ask every connection to close; returns them so the caller can wait."""
        closing = []
        for room in self.rooms.values():
            for connection in room.connections:
                connection.close(code, reason)
                closing.append(connection)
        return closing

    async def _expire_awareness_forever(self) -> None:
        interval = max(0.1, min(self.config.awareness_timeout / 10, 3.0))
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for room in list(self.rooms.values()):
                room.expire_awareness(now)

    def _spawn(self, coroutine, name: str) -> None:  # type: ignore[no-untyped-def]  # any coroutine
        task = asyncio.create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
