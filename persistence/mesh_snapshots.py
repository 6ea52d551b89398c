"""MongoDB snapshots of documents whose log is a JetStream stream (mesh mode).

In mesh mode the stream is the durable log and MongoDB keeps, per document,
one snapshot with the stream sequence it covers:

    mesh_snapshots  {doc, data, state_vector, stream_seq, version, updated_at}
                    unique index on doc
    compaction_leases {doc, holder, expires}
                    unique index on doc
    mesh_versions   {doc, version_id, created_at, size, data}
                    unique index on (doc, version_id); the compactor keeps
                    the newest N, at most one per interval

Writes are conditional on the version read before (optimistic concurrency),
and leases let one compactor at a time work on a document; a lease expires
if its holder dies. Both work on MongoDB and on FerretDB: a lease is taken
with an upsert whose filter matches only a free or expired lease, so a lease
held by another compactor makes the upsert collide with the unique index.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from pymongo import ASCENDING, AsyncMongoClient, WriteConcern
from pymongo.errors import DuplicateKeyError, PyMongoError

from .circuit import CircuitBreaker
from .mongo_versions import list_versions, load_version
from .store import StoreUnavailable, VersionInfo

LOGGER = logging.getLogger("yrelay.persistence.mesh_snapshots")


@dataclass(frozen=True, slots=True)
class MeshSnapshot:
    """A document's state up to a stream sequence."""

    data: bytes
    stream_seq: int
    version: int


class MeshSnapshots:
    """Snapshots and compaction leases in one MongoDB database."""

    def __init__(self, url: str, database: str = "yrelay", write_concern: str = "majority") -> None:
        self.url = url
        self.database_name = database
        self.write_concern = write_concern
        self.description = f"mongodb:{url.rpartition('@')[2]} {database} (mesh snapshots)"
        self._client: AsyncMongoClient | None = None
        self.breaker = CircuitBreaker(f"MongoDB {self.description}")

    async def open(self) -> None:
        """Connect and create the indexes."""
        self._client = AsyncMongoClient(self.url, serverSelectionTimeoutMS=5000, connectTimeoutMS=5000)
        concern = WriteConcern(w=int(self.write_concern) if self.write_concern.isdigit() else self.write_concern)
        self._db = self._client.get_database(self.database_name, write_concern=concern)
        try:
            await self._db.mesh_snapshots.create_index([("doc", ASCENDING)], unique=True)
            await self._db.compaction_leases.create_index([("doc", ASCENDING)], unique=True)
            await self._db.mesh_versions.create_index([("doc", ASCENDING), ("version_id", ASCENDING)], unique=True)
        except PyMongoError as exc:
            raise StoreUnavailable(f"cannot open {self.description}: {exc}") from exc

    async def close(self) -> None:
        """Disconnect."""
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def get(self, name: str) -> MeshSnapshot | None:
        """Return the snapshot of ``name``, or None when it has none."""
        entry = await self._find(name, None)
        if entry is None:
            return None
        return MeshSnapshot(bytes(entry["data"]), int(entry["stream_seq"]), int(entry["version"]))

    async def version(self, name: str) -> int:
        """Return the version of ``name``'s snapshot without reading it (0: none)."""
        entry = await self._find(name, {"version": 1})
        return int(entry["version"]) if entry else 0

    async def _find(self, name: str, projection: dict[str, int] | None) -> dict | None:
        if not self.breaker.allow():
            raise StoreUnavailable(f"{self.description} failed repeatedly; not retried for a while")
        try:
            entry = await self._db.mesh_snapshots.find_one({"doc": name}, projection=projection)
        except PyMongoError as exc:
            self.breaker.record_failure(exc)
            raise StoreUnavailable(f"cannot read snapshot from {self.description}: {exc}") from exc
        self.breaker.record_success()
        return entry

    async def put(self, name: str, data: bytes, state_vector: bytes, stream_seq: int, read_version: int) -> bool:
        """Store a snapshot if the stored version is still ``read_version`` (0: none).

        Returns False when another writer stored a snapshot in between.
        """
        fields = {"data": data, "state_vector": state_vector, "stream_seq": stream_seq, "updated_at": time.time()}
        try:
            if read_version == 0:
                await self._db.mesh_snapshots.insert_one({"doc": name, "version": 1, **fields})
                return True
            result = await self._db.mesh_snapshots.update_one(
                {"doc": name, "version": read_version}, {"$set": {**fields, "version": read_version + 1}}
            )
        except DuplicateKeyError:
            return False
        except PyMongoError as exc:
            raise StoreUnavailable(f"cannot write snapshot to {self.description}: {exc}") from exc
        return result.modified_count == 1

    async def delete(self, name: str) -> None:
        """Remove the snapshot of ``name``."""
        try:
            await self._db.mesh_snapshots.delete_many({"doc": name})
            await self._db.mesh_versions.delete_many({"doc": name})
        except PyMongoError as exc:
            raise StoreUnavailable(f"cannot delete from {self.description}: {exc}") from exc

    async def names(self) -> list[str]:
        """Names of every document with a snapshot, sorted."""
        try:
            return sorted(await self._db.mesh_snapshots.distinct("doc"))
        except PyMongoError as exc:
            raise StoreUnavailable(f"cannot list {self.description}: {exc}") from exc

    async def save_version(self, name: str, state: bytes, keep: int, interval: float) -> bool:
        """Keep ``state`` as a version if the newest is older than ``interval`` seconds.

        Keeps the newest ``keep`` versions; returns True when one was saved.
        """
        now = time.time()
        try:
            newest = await self._db.mesh_versions.find_one({"doc": name}, sort=[("version_id", -1)])
            if newest is not None and now - newest["created_at"] < interval:
                return False
            version_id = (newest["version_id"] if newest else 0) + 1
            await self._db.mesh_versions.insert_one(
                {"doc": name, "version_id": version_id, "created_at": now, "size": len(state), "data": state}
            )
            await self._db.mesh_versions.delete_many({"doc": name, "version_id": {"$lte": version_id - keep}})
        except DuplicateKeyError:
            return False
        except PyMongoError as exc:
            raise StoreUnavailable(f"cannot write a version to {self.description}: {exc}") from exc
        return True

    async def list_versions(self, name: str) -> list[VersionInfo]:
        """Return the kept versions of ``name``, oldest first."""
        return await list_versions(self._db.mesh_versions, name, self.description)

    async def load_version(self, name: str, version_id: int) -> bytes | None:
        """Return the state kept as ``version_id`` of ``name``, or None."""
        return await load_version(self._db.mesh_versions, name, version_id, self.description)

    async def acquire_lease(self, name: str, holder: str, seconds: float) -> bool:
        """Take the compaction lease of ``name`` for ``seconds``; False if another holds it."""
        now = time.time()
        try:
            await self._db.compaction_leases.update_one(
                {"doc": name, "$or": [{"expires": {"$lt": now}}, {"holder": holder}]},
                {"$set": {"holder": holder, "expires": now + seconds}},
                upsert=True,
            )
        except DuplicateKeyError:
            return False
        except PyMongoError as exc:
            raise StoreUnavailable(f"cannot take lease in {self.description}: {exc}") from exc
        return True

    async def release_lease(self, name: str, holder: str) -> None:
        """Give the lease of ``name`` back, if ``holder`` still has it."""
        try:
            await self._db.compaction_leases.delete_one({"doc": name, "holder": holder})
        except PyMongoError as exc:
            # The lease expires by itself, so failing to delete it only
            # delays the next compaction of this document.
            LOGGER.warning("cannot release lease doc=%s holder=%s: %r", name, holder, exc)

    async def ping(self) -> bool:
        """Return True when the server responds."""
        if self._client is None or self.breaker.is_open:
            return False
        try:
            await self._client.admin.command("ping")
        except PyMongoError:
            return False
        return True
