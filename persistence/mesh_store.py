"""The relay's store in mesh mode with MongoDB: snapshots only.

In this mode the JetStream stream is the log and the compactor writes the
snapshots, so a relay only reads: a room loads the latest snapshot and its
stream sequence (``StoredDocument.position``), then the mesh replays the
stream after that sequence. Appends and snapshots the room would queue are
acknowledged at once without a write, because the update is durable once
JetStream acknowledged it. The compactor also keeps the versions.
"""

from __future__ import annotations

import asyncio
from typing import Any

import logging

from .mesh_snapshots import MeshSnapshots
from .redis_cache import RedisCache
from .store import StoredDocument, StoreUnavailable, VersionInfo

LOGGER = logging.getLogger("yrelay.persistence.mesh_store")


def _done(result: Any = None) -> asyncio.Future[Any]:
    future = asyncio.get_running_loop().create_future()
    future.set_result(result)
    return future


class MeshSnapshotStore:
    """``DocumentStore`` over ``MeshSnapshots`` for relays of a mesh."""

    pending_writes = 0
    # Positions are JetStream stream sequences, so rooms start their log
    # consumer right after them.
    positions_are_stream_sequences = True

    def __init__(self, snapshots: MeshSnapshots, cache: RedisCache | None = None) -> None:
        self.snapshots = snapshots
        self.cache = cache
        self.description = snapshots.description + (" with redis cache" if cache else "")

    async def open(self) -> None:
        """Connect to MongoDB."""
        await self.snapshots.open()

    async def close(self) -> None:
        """Disconnect."""
        await self.snapshots.close()
        if self.cache is not None:
            await self.cache.close()

    async def load(self, name: str) -> StoredDocument:
        """Return the latest snapshot and the stream sequence it covers.

        A cached snapshot is used when MongoDB confirms it is the current
        version, or when MongoDB cannot be reached; in that last case a
        snapshot newer than the cached one may have trimmed log the room
        then lacks until MongoDB answers again (relays holding the room fill
        it in through the peer request), so it is logged.
        """
        cached = await self.cache.get_entry(name) if self.cache is not None else None
        try:
            current = await self.snapshots.version(name)
        except StoreUnavailable:
            if cached is None:
                raise
            LOGGER.warning("MongoDB unreachable; doc=%s opened from the Redis snapshot at sequence %d", name, cached[1])
            assert self.cache is not None
            self.cache.count_hit()
            return StoredDocument(snapshot=cached[0], position=cached[1])
        if cached is not None and cached[2] == current:
            assert self.cache is not None
            self.cache.count_hit()
            return StoredDocument(snapshot=cached[0], position=cached[1])
        snapshot = await self.snapshots.get(name)
        if snapshot is None:
            return StoredDocument()
        return StoredDocument(snapshot=snapshot.data, position=snapshot.stream_seq)

    async def load_after(self, name: str, position: int) -> list[bytes] | None:
        """Return None: the log after a position is in the stream, not here."""
        return None

    def append(self, name: str, update: bytes) -> asyncio.Future[None]:
        """Acknowledge at once: the stream is the log."""
        return _done()

    def replace_with_snapshot(self, name: str, snapshot: bytes, state_vector: bytes) -> asyncio.Future[int]:
        """Acknowledge at once: the compactor writes snapshots in this mode."""
        return _done(0)

    def save_version(self, name: str, state: bytes, keep: int) -> asyncio.Future[None]:
        """Acknowledge at once: the compactor keeps versions in this mode."""
        return _done()

    async def list_versions(self, name: str) -> list[VersionInfo]:
        """Return the versions the compactor kept, oldest first."""
        return await self.snapshots.list_versions(name)

    async def load_version(self, name: str, version_id: int) -> bytes | None:
        """Return one version the compactor kept, or None."""
        return await self.snapshots.load_version(name, version_id)

    async def list_documents(self) -> list[str]:
        """Return the documents that have a snapshot."""
        return await self.snapshots.names()

    async def delete(self, name: str) -> None:
        """Remove the snapshot of ``name``, also from the cache."""
        await self.snapshots.delete(name)
        if self.cache is not None:
            await self.cache.delete(name)

    async def flush(self) -> None:
        """Return at once: nothing is queued."""

    async def ping(self) -> bool:
        """Return True when MongoDB responds."""
        return await self.snapshots.ping()
