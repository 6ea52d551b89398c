"""Embedded storage in one SQLite file (WAL mode), the default backend.

Writes go through one writer thread that takes every queued operation, runs
them in one transaction and commits (group commit): a burst of updates costs
one commit, and an idle store commits a lone update at once. Each queued
operation has an asyncio future that the writer resolves after the commit,
so the relay learns when an update is durable.

Resource handling: the writer holds its own connection; loads use a second
connection guarded by a lock, which WAL lets read while the writer writes.

Error handling: a failed commit (disk full, I/O error, database locked) is
rolled back, logged at ERROR, and retried with backoff for as long as it
takes; queued operations are kept in order in memory meanwhile, ``ping``
returns False, and nothing is dropped. ``close`` waits for the queue to
drain.

Durability: ``synchronous=FULL`` by default, so a committed transaction
survives a power loss as well as a process crash. ``NORMAL`` survives a
process crash only and commits faster.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
import time
from pathlib import Path

from .operations import QueuedOperation
from .store import StoredDocument, StoreUnavailable, VersionInfo

LOGGER = logging.getLogger("yrelay.persistence.sqlite")

FILE_NAME = "yrelay.sqlite3"
_MAX_BATCH_OPERATIONS = 5000
_RETRY_DELAYS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS updates (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    doc TEXT NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS updates_by_doc ON updates (doc, seq);
CREATE TABLE IF NOT EXISTS versions (
    version_id INTEGER PRIMARY KEY AUTOINCREMENT,
    doc TEXT NOT NULL,
    created_at REAL NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS versions_by_doc ON versions (doc, version_id);
CREATE TABLE IF NOT EXISTS snapshots (
    doc TEXT PRIMARY KEY,
    data BLOB NOT NULL,
    state_vector BLOB NOT NULL,
    through_seq INTEGER NOT NULL,
    version INTEGER NOT NULL,
    updated_at REAL NOT NULL
);
"""


_STOP = object()


class SQLiteStore:
    """``DocumentStore`` on a SQLite file in ``data_dir``."""

    def __init__(
        self, data_dir: Path, synchronous: str = "FULL", busy_timeout_ms: int = 5000, commit_delay: float = 0.0
    ) -> None:
        self.path = Path(data_dir).resolve() / FILE_NAME
        self.description = f"sqlite:{self.path}"
        self.synchronous = synchronous
        # Seconds the writer waits after the first operation of a batch, so
        # that busy rooms share one commit and one fsync (group commit).
        self.commit_delay = commit_delay
        self.busy_timeout_ms = busy_timeout_ms
        self.commits = 0
        self._queue: queue.SimpleQueue[QueuedOperation | object] = queue.SimpleQueue()
        self._pending = 0
        self._healthy = True
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writer: threading.Thread | None = None
        self._reader: sqlite3.Connection | None = None
        self._reader_lock = threading.Lock()

    @property
    def pending_writes(self) -> int:
        """Operations queued or in a transaction not yet committed."""
        return self._pending

    # --- lifecycle --------------------------------------------------------

    async def open(self) -> None:
        """Create the file and schema, and start the writer thread."""
        self._loop = asyncio.get_running_loop()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            writer_connection = self._connect()
            writer_connection.executescript(_SCHEMA)
            self._reader = self._connect()
        except (OSError, sqlite3.Error) as exc:
            raise StoreUnavailable(f"cannot open {self.path}: {exc}") from exc
        self._writer = threading.Thread(
            target=self._write_loop, args=(writer_connection,), name="yrelay-sqlite-writer", daemon=True
        )
        self._writer.start()

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute(f"PRAGMA synchronous={self.synchronous}")
        connection.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_ms)}")
        return connection

    async def close(self) -> None:
        """Commit everything queued, then stop the writer and close the files."""
        if self._writer is None:
            return
        self._queue.put(_STOP)
        await asyncio.to_thread(self._writer.join)
        self._writer = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    # --- reading ----------------------------------------------------------

    async def load(self, name: str) -> StoredDocument:
        """Read the snapshot and the log of ``name``."""
        return await asyncio.to_thread(self._load_sync, name)

    def _load_sync(self, name: str) -> StoredDocument:
        if self._reader is None:
            raise StoreUnavailable("store is closed")
        with self._reader_lock:
            try:
                row = self._reader.execute(
                    "SELECT data, through_seq FROM snapshots WHERE doc = ?", (name,)
                ).fetchone()
                snapshot, through_seq = (row[0], row[1]) if row else (None, 0)
                records = self._reader.execute(
                    "SELECT seq, data FROM updates WHERE doc = ? AND seq > ? ORDER BY seq", (name, through_seq)
                ).fetchall()
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"cannot read document from {self.path}: {exc}") from exc
        position = records[-1][0] if records else through_seq
        return StoredDocument(snapshot=snapshot, updates=[record[1] for record in records], position=position)

    async def load_after(self, name: str, position: int) -> list[bytes] | None:
        """Return the log entries of ``name`` after ``position``, or None if a newer snapshot replaced some."""
        rows = await asyncio.to_thread(self._read_rows, "SELECT through_seq FROM snapshots WHERE doc = ?", (name,))
        if rows and int(rows[0][0]) > position:  # type: ignore[call-overload]  # an INTEGER column
            return None
        records = await asyncio.to_thread(
            self._read_rows, "SELECT data FROM updates WHERE doc = ? AND seq > ? ORDER BY seq", (name, position)
        )
        return [record[0] for record in records]  # type: ignore[misc]  # BLOB column

    def save_version(self, name: str, state: bytes, keep: int) -> asyncio.Future[None]:
        """Queue ``state`` as a new version of ``name``, keeping the newest ``keep``."""
        return self._enqueue(QueuedOperation("version", name, state, str(keep).encode(), self._new_future()))

    async def list_versions(self, name: str) -> list[VersionInfo]:
        """Return the kept versions of ``name``, oldest first."""
        rows = await asyncio.to_thread(
            self._read_rows,
            "SELECT version_id, created_at, LENGTH(data) FROM versions WHERE doc = ? ORDER BY version_id",
            (name,),
        )
        return [VersionInfo(row[0], row[1], row[2]) for row in rows]

    async def load_version(self, name: str, version_id: int) -> bytes | None:
        """Return the state saved as ``version_id`` of ``name``, or None."""
        rows = await asyncio.to_thread(
            self._read_rows, "SELECT data FROM versions WHERE doc = ? AND version_id = ?", (name, version_id)
        )
        return rows[0][0] if rows else None

    def _read_rows(self, query: str, parameters: tuple[object, ...]) -> list[tuple[object, ...]]:
        if self._reader is None:
            raise StoreUnavailable("store is closed")
        with self._reader_lock:
            try:
                return self._reader.execute(query, parameters).fetchall()
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"cannot read {self.path}: {exc}") from exc

    async def list_documents(self) -> list[str]:
        """Names of every stored document, sorted."""
        return await asyncio.to_thread(self._list_sync)

    def _list_sync(self) -> list[str]:
        if self._reader is None:
            raise StoreUnavailable("store is closed")
        with self._reader_lock:
            try:
                rows = self._reader.execute(
                    "SELECT doc FROM snapshots UNION SELECT DISTINCT doc FROM updates ORDER BY doc"
                ).fetchall()
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"cannot list documents in {self.path}: {exc}") from exc
        return [row[0] for row in rows]

    async def ping(self) -> bool:
        """Return True when the file serves a query and the last commit succeeded."""
        if self._reader is None or not self._healthy:
            return False
        try:
            await asyncio.to_thread(self._ping_sync)
        except sqlite3.Error:
            return False
        return True

    def _ping_sync(self) -> None:
        assert self._reader is not None
        with self._reader_lock:
            self._reader.execute("SELECT 1").fetchone()

    # --- writing ----------------------------------------------------------

    def append(self, name: str, update: bytes) -> asyncio.Future[None]:
        """Queue ``update`` for ``name``; the future completes after the commit."""
        return self._enqueue(QueuedOperation("append", name, update, b"", self._new_future()))

    def replace_with_snapshot(self, name: str, snapshot: bytes, state_vector: bytes) -> asyncio.Future[int]:
        """Queue a snapshot replacing every log entry of ``name`` queued before it.

        The future returns the log position the snapshot covers.
        """
        return self._enqueue(QueuedOperation("snapshot", name, snapshot, state_vector, self._new_future()))

    async def delete(self, name: str) -> None:
        """Remove ``name``'s snapshot and log, after the writes queued before."""
        await self._enqueue(QueuedOperation("delete", name, b"", b"", self._new_future()))

    async def flush(self) -> None:
        """Wait for every operation queued so far."""
        await self._enqueue(QueuedOperation("barrier", "", b"", b"", self._new_future()))

    def _new_future(self) -> asyncio.Future[None]:
        assert self._loop is not None, "store is not open"
        return self._loop.create_future()

    def _enqueue(self, operation: QueuedOperation) -> asyncio.Future[None]:
        if self._writer is None:
            raise StoreUnavailable("store is closed")
        self._pending += 1
        self._queue.put(operation)
        return operation.future

    def _write_loop(self, connection: sqlite3.Connection) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            batch: list[QueuedOperation] = []
            if first is _STOP:
                stopping = True
            else:
                batch.append(first)  # type: ignore[arg-type]  # narrowed by the identity check above
                if self.commit_delay > 0:
                    time.sleep(self.commit_delay)
            while len(batch) < _MAX_BATCH_OPERATIONS:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    continue
                batch.append(item)  # type: ignore[arg-type]  # same narrowing as above
            if batch:
                self._commit_with_retry(connection, batch)
        connection.close()

    def _commit_with_retry(self, connection: sqlite3.Connection, batch: list[QueuedOperation]) -> None:
        attempt = 0
        while True:
            try:
                self._commit(connection, batch)
            except sqlite3.Error as exc:
                delay = _RETRY_DELAYS[min(attempt, len(_RETRY_DELAYS) - 1)]
                LOGGER.error(
                    "commit of %d operations to %s failed, retrying in %.2f s: %s",
                    len(batch), self.path, delay, exc,
                )
                self._healthy = False
                attempt += 1
                time.sleep(delay)
                continue
            if not self._healthy:
                LOGGER.info("commits to %s succeed again after %d failed attempts", self.path, attempt)
            self._healthy = True
            self.commits += 1
            break
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._resolve, batch)

    def _commit(self, connection: sqlite3.Connection, batch: list[QueuedOperation]) -> None:
        connection.execute("BEGIN IMMEDIATE")
        try:
            now = time.time()
            for operation in batch:
                if operation.kind == "append":
                    connection.execute("INSERT INTO updates (doc, data) VALUES (?, ?)", (operation.doc, operation.data))
                elif operation.kind == "snapshot":
                    operation.result = self._write_snapshot(connection, operation, now)
                elif operation.kind == "version":
                    self._write_version(connection, operation, now)
                elif operation.kind == "delete":
                    connection.execute("DELETE FROM updates WHERE doc = ?", (operation.doc,))
                    connection.execute("DELETE FROM snapshots WHERE doc = ?", (operation.doc,))
                    connection.execute("DELETE FROM versions WHERE doc = ?", (operation.doc,))
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise

    @staticmethod
    def _write_snapshot(connection: sqlite3.Connection, operation: QueuedOperation, now: float) -> int:
        # The writer runs operations in queue order, so the highest seq of
        # this document right now is the last update queued before the
        # snapshot, which the snapshot already contains.
        (last_seq,) = connection.execute(
            "SELECT COALESCE(MAX(seq), 0) FROM updates WHERE doc = ?", (operation.doc,)
        ).fetchone()
        connection.execute(
            """
            INSERT INTO snapshots (doc, data, state_vector, through_seq, version, updated_at)
            VALUES (?, ?, ?, ?, 1, ?)
            ON CONFLICT (doc) DO UPDATE SET
                data = excluded.data,
                state_vector = excluded.state_vector,
                through_seq = MAX(snapshots.through_seq, excluded.through_seq),
                version = snapshots.version + 1,
                updated_at = excluded.updated_at
            """,
            (operation.doc, operation.data, operation.state_vector, last_seq, now),
        )
        connection.execute("DELETE FROM updates WHERE doc = ? AND seq <= ?", (operation.doc, last_seq))
        (through_seq,) = connection.execute(
            "SELECT through_seq FROM snapshots WHERE doc = ?", (operation.doc,)
        ).fetchone()
        return int(through_seq)

    @staticmethod
    def _write_version(connection: sqlite3.Connection, operation: QueuedOperation, now: float) -> None:
        keep = int(operation.state_vector.decode())
        connection.execute(
            "INSERT INTO versions (doc, created_at, data) VALUES (?, ?, ?)", (operation.doc, now, operation.data)
        )
        connection.execute(
            """
            DELETE FROM versions WHERE doc = ? AND version_id NOT IN (
                SELECT version_id FROM versions WHERE doc = ? ORDER BY version_id DESC LIMIT ?
            )
            """,
            (operation.doc, operation.doc, keep),
        )

    def _resolve(self, batch: list[QueuedOperation]) -> None:
        self._pending -= len(batch)
        for operation in batch:
            if not operation.future.done():
                operation.future.set_result(operation.result)
