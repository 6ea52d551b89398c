"""The relay's store in mesh mode with MongoDB: snapshots only.

In this mode the JetStream stream is the log and the compactor writes the
snapshots, so a relay only reads: a room loads the latest snapshot and its
stream sequence (``StoredDocument.position``), then the mesh replays the
stream after that sequence. Appends and snapshots the room would queue are
acknowledged at once without a write, because the update is durable once
JetStream acknowledged it. History is not kept in this mode yet.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .mesh_snapshots import MeshSnapshots
from .store import StoredDocument, VersionInfo


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

    def __init__(self, snapshots: MeshSnapshots) -> None:
        self.snapshots = snapshots
        self.description = snapshots.description

    async def open(self) -> None:
        """Connect to MongoDB."""
        await self.snapshots.open()

    async def close(self) -> None:
        """Disconnect."""
        await self.snapshots.close()

    async def load(self, name: str) -> StoredDocument:
        """Return the latest snapshot and the stream sequence it covers."""
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
        """Acknowledge at once: versions are not kept in this mode yet."""
        return _done()

    async def list_versions(self, name: str) -> list[VersionInfo]:
        """Return no versions: none are kept in this mode yet."""
        return []

    async def load_version(self, name: str, version_id: int) -> bytes | None:
        """Return None: no versions are kept in this mode yet."""
        return None

    async def list_documents(self) -> list[str]:
        """Return the documents that have a snapshot."""
        return await self.snapshots.names()

    async def delete(self, name: str) -> None:
        """Remove the snapshot of ``name``."""
        await self.snapshots.delete(name)

    async def flush(self) -> None:
        """Return at once: nothing is queued."""

    async def ping(self) -> bool:
        """Return True when MongoDB responds."""
        return await self.snapshots.ping()
