"""MongoDB storage on pymongo's ``AsyncMongoClient`` (the successor of Motor).

Same model as the SQLite store: per document an optional snapshot and a log
of updates after it, in two collections:

    snapshots  {doc, data, state_vector, through_seq, version, updated_at}
               unique index on doc
    updates    {doc, seq, data}
               unique index on (doc, seq)
    versions   {doc, version_id, created_at, size, data}
               unique index on (doc, version_id); the newest N are kept

``seq`` is a per-relay counter that starts above the highest stored value,
so entries of one document sort in the order they were written.

Writes run in one writer task that takes every queued operation and writes
it as one batch: the appends of a burst become one ``insert_many``. A
snapshot replaces exactly the log entries queued before it, because the
writer handles operations in order. Writes use majority write concern by
default, so an acknowledged write survives the loss of the primary.

Error handling: a failed batch is logged and retried with backoff for as
long as it takes; operations stay queued in order and ``ping`` returns
False meanwhile. Loads raise ``StoreUnavailable``; after three failures in
a row a circuit breaker refuses loads at once for 10 s instead of letting
each wait for the server-selection timeout.

Only commands that both MongoDB (5.0 and later) and FerretDB 1.24
implement are used: indexes, ``insert_many``, ``update_one`` with upsert,
``delete_many``, ``find`` with a sort, and ``ping``.
"""

from __future__ import annotations

import asyncio
import logging
import time

from pymongo import ASCENDING, AsyncMongoClient, WriteConcern
from pymongo.errors import PyMongoError

from .circuit import CircuitBreaker
from .mongo_versions import list_versions, load_version
from .operations import QueuedOperation
from .store import StoredDocument, StoreUnavailable, VersionInfo

LOGGER = logging.getLogger("yrelay.persistence.mongodb")

_MAX_BATCH_OPERATIONS = 1000
_RETRY_DELAYS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)


class MongoStore:
    """``DocumentStore`` on a MongoDB database."""

    def __init__(
        self,
        url: str,
        database: str = "yrelay",
        write_concern: str = "majority",
        timeout_seconds: float = 5.0,
    ) -> None:
        self.url = url
        self.database_name = database
        self.write_concern = write_concern
        self.description = f"mongodb:{_without_credentials(url)}/{database}"
        self.commits = 0
        self._timeout_ms = int(timeout_seconds * 1000)
        self._client: AsyncMongoClient | None = None
        self._queue: asyncio.Queue[QueuedOperation | None] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._pending = 0
        self._healthy = True
        self.breaker = CircuitBreaker(f"MongoDB {self.description}")
        self._next_seq = 0
        self._assigned: dict[int, int] = {}

    @property
    def pending_writes(self) -> int:
        """Operations queued and not yet written."""
        return self._pending

    async def open(self) -> None:
        """Connect, create the indexes, and start the writer."""
        self._client = AsyncMongoClient(
            self.url, serverSelectionTimeoutMS=self._timeout_ms, connectTimeoutMS=self._timeout_ms
        )
        concern = WriteConcern(w=int(self.write_concern) if self.write_concern.isdigit() else self.write_concern)
        self._db = self._client.get_database(self.database_name, write_concern=concern)
        try:
            await self._db.snapshots.create_index([("doc", ASCENDING)], unique=True)
            await self._db.updates.create_index([("doc", ASCENDING), ("seq", ASCENDING)], unique=True)
            await self._db.versions.create_index([("doc", ASCENDING), ("version_id", ASCENDING)], unique=True)
            newest = await self._db.updates.find_one({}, sort=[("seq", -1)], projection={"seq": 1})
            newest_snapshot = await self._db.snapshots.find_one({}, sort=[("through_seq", -1)], projection={"through_seq": 1})
        except PyMongoError as exc:
            await self._client.close()
            raise StoreUnavailable(f"cannot open {self.description}: {exc}") from exc
        self._next_seq = max(
            (newest or {}).get("seq", 0), (newest_snapshot or {}).get("through_seq", 0)
        ) + 1
        self._writer = asyncio.create_task(self._write_loop(), name="yrelay-mongodb-writer")

    async def close(self) -> None:
        """Write everything queued, then disconnect."""
        if self._writer is not None:
            await self._queue.put(None)
            await self._writer
            self._writer = None
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def load(self, name: str) -> StoredDocument:
        """Read the snapshot and log of ``name``."""
        if not self.breaker.allow():
            raise StoreUnavailable(f"{self.description} failed repeatedly; not retried for a while")
        try:
            snapshot = await self._db.snapshots.find_one({"doc": name})
            through = snapshot["through_seq"] if snapshot else 0
            cursor = self._db.updates.find({"doc": name, "seq": {"$gt": through}}).sort("seq", ASCENDING)
            entries = [(entry["seq"], bytes(entry["data"])) async for entry in cursor]
        except PyMongoError as exc:
            self.breaker.record_failure(exc)
            raise StoreUnavailable(f"cannot read document from {self.description}: {exc}") from exc
        self.breaker.record_success()
        return StoredDocument(
            snapshot=bytes(snapshot["data"]) if snapshot else None,
            updates=[data for _, data in entries],
            position=entries[-1][0] if entries else through,
        )

    async def load_after(self, name: str, position: int) -> list[bytes] | None:
        """Return the log entries of ``name`` after ``position``, or None if a newer snapshot replaced some."""
        if not self.breaker.allow():
            raise StoreUnavailable(f"{self.description} failed repeatedly; not retried for a while")
        try:
            snapshot = await self._db.snapshots.find_one({"doc": name}, projection={"through_seq": 1})
            if snapshot is not None and snapshot["through_seq"] > position:
                return None
            cursor = self._db.updates.find({"doc": name, "seq": {"$gt": position}}).sort("seq", ASCENDING)
            updates = [bytes(entry["data"]) async for entry in cursor]
        except PyMongoError as exc:
            self.breaker.record_failure(exc)
            raise StoreUnavailable(f"cannot read document from {self.description}: {exc}") from exc
        self.breaker.record_success()
        return updates

    def save_version(self, name: str, state: bytes, keep: int) -> asyncio.Future[None]:
        """Queue ``state`` as a new version of ``name``, keeping the newest ``keep``."""
        return self._enqueue("version", name, state, str(keep).encode())

    async def list_versions(self, name: str) -> list[VersionInfo]:
        """Return the kept versions of ``name``, oldest first."""
        return await list_versions(self._db.versions, name, self.description)

    async def load_version(self, name: str, version_id: int) -> bytes | None:
        """Return the state kept as ``version_id`` of ``name``, or None."""
        return await load_version(self._db.versions, name, version_id, self.description)

    async def list_documents(self) -> list[str]:
        """Names of every stored document, sorted."""
        try:
            names = set(await self._db.snapshots.distinct("doc")) | set(await self._db.updates.distinct("doc"))
        except PyMongoError as exc:
            raise StoreUnavailable(f"cannot list documents in {self.description}: {exc}") from exc
        return sorted(names)

    async def ping(self) -> bool:
        """Return True when the server responds and the last write succeeded."""
        if self._client is None or not self._healthy or self.breaker.is_open:
            return False
        try:
            await self._client.admin.command("ping")
        except PyMongoError:
            return False
        return True

    def append(self, name: str, update: bytes) -> asyncio.Future[None]:
        """Queue ``update``; the future completes once it is written."""
        return self._enqueue("append", name, update, b"")

    def replace_with_snapshot(self, name: str, snapshot: bytes, state_vector: bytes) -> asyncio.Future[int]:
        """Queue a snapshot replacing every log entry of ``name`` queued before it.

        The future returns the log position the snapshot covers.
        """
        return self._enqueue("snapshot", name, snapshot, state_vector)

    async def delete(self, name: str) -> None:
        """Remove ``name``'s snapshot and log, after the writes queued before."""
        await self._enqueue("delete", name, b"", b"")

    async def flush(self) -> None:
        """Wait for every operation queued so far."""
        await self._enqueue("barrier", "", b"", b"")

    def _enqueue(self, kind: str, name: str, data: bytes, state_vector: bytes) -> asyncio.Future[None]:
        if self._writer is None:
            raise StoreUnavailable("store is closed")
        future = asyncio.get_running_loop().create_future()
        self._pending += 1
        self._queue.put_nowait(QueuedOperation(kind, name, data, state_vector, future))
        return future

    async def _write_loop(self) -> None:
        stopping = False
        while not stopping:
            first = await self._queue.get()
            batch: list[QueuedOperation] = []
            if first is None:
                stopping = True
            else:
                batch.append(first)
            while len(batch) < _MAX_BATCH_OPERATIONS and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is None:
                    stopping = True
                    continue
                batch.append(item)
            if batch:
                await self._write_with_retry(batch)

    async def _write_with_retry(self, batch: list[QueuedOperation]) -> None:
        attempt = 0
        while True:
            try:
                await self._write(batch)
            except PyMongoError as exc:
                delay = _RETRY_DELAYS[min(attempt, len(_RETRY_DELAYS) - 1)]
                LOGGER.error(
                    "write of %d operations to %s failed, retrying in %.2f s: %s",
                    len(batch), self.description, delay, exc,
                )
                self._healthy = False
                attempt += 1
                await asyncio.sleep(delay)
                continue
            if not self._healthy:
                LOGGER.info("writes to %s succeed again after %d failed attempts", self.description, attempt)
            self._healthy = True
            self.commits += 1
            break
        self._pending -= len(batch)
        for operation in batch:
            self._assigned.pop(id(operation), None)
            if not operation.future.done():
                operation.future.set_result(operation.result)

    async def _write(self, batch: list[QueuedOperation]) -> None:
        # Consecutive appends go out as one insert_many; a snapshot or a
        # delete ends the run, so the order of operations is kept. A retry
        # may insert an append again, which the unique (doc, seq) index
        # rejects, so sequence numbers are given once, on first attempt.
        appends: list[dict[str, object]] = []
        for operation in batch:
            if operation.kind == "append":
                appends.append(self._append_document(operation))
                continue
            await self._insert(appends)
            appends = []
            if operation.kind == "snapshot":
                operation.result = await self._write_snapshot(operation)
            elif operation.kind == "version":
                await self._write_version(operation)
            elif operation.kind == "delete":
                await self._db.updates.delete_many({"doc": operation.doc})
                await self._db.snapshots.delete_many({"doc": operation.doc})
                await self._db.versions.delete_many({"doc": operation.doc})
        await self._insert(appends)

    def _append_document(self, operation: QueuedOperation) -> dict[str, object]:
        seq = self._assigned.get(id(operation))
        if seq is None:
            seq = self._next_seq
            self._next_seq += 1
            self._assigned[id(operation)] = seq
        return {"doc": operation.doc, "seq": seq, "data": operation.data}

    async def _insert(self, documents: list[dict[str, object]]) -> None:
        if not documents:
            return
        try:
            await self._db.updates.insert_many(documents, ordered=True)
        except PyMongoError as exc:
            # Entries a failed attempt already stored are duplicates now;
            # insert the rest one by one and skip the duplicates.
            if "E11000" not in str(exc) and getattr(exc, "code", None) != 11000:
                raise
            for document in documents:
                await self._db.updates.update_one(
                    {"doc": document["doc"], "seq": document["seq"]}, {"$setOnInsert": document}, upsert=True
                )

    async def _write_version(self, operation: QueuedOperation) -> None:
        keep = int(operation.state_vector.decode())
        newest = await self._db.versions.find_one({"doc": operation.doc}, sort=[("version_id", -1)])
        version_id = (newest["version_id"] if newest else 0) + 1
        await self._db.versions.update_one(
            {"doc": operation.doc, "version_id": version_id},
            {"$setOnInsert": {"created_at": time.time(), "size": len(operation.data), "data": operation.data}},
            upsert=True,
        )
        await self._db.versions.delete_many({"doc": operation.doc, "version_id": {"$lte": version_id - keep}})

    async def _write_snapshot(self, operation: QueuedOperation) -> int:
        newest = await self._db.updates.find_one({"doc": operation.doc}, sort=[("seq", -1)], projection={"seq": 1})
        through_seq = newest["seq"] if newest else 0
        existing = await self._db.snapshots.find_one({"doc": operation.doc}, projection={"through_seq": 1})
        if existing is not None:
            through_seq = max(through_seq, existing["through_seq"])
        await self._db.snapshots.update_one(
            {"doc": operation.doc},
            {
                "$set": {
                    "data": operation.data,
                    "state_vector": operation.state_vector,
                    "through_seq": through_seq,
                    "updated_at": time.time(),
                },
                "$inc": {"version": 1},
            },
            upsert=True,
        )
        await self._db.updates.delete_many({"doc": operation.doc, "seq": {"$lte": through_seq}})
        return int(through_seq)


def _without_credentials(url: str) -> str:
    scheme, _, rest = url.partition("://")
    host = rest.rpartition("@")[2]
    return f"{scheme}://{host}"
