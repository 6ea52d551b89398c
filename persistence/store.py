"""The interface every storage backend implements.

A document is stored as an optional snapshot (one Yjs update holding the
whole state at some point) followed by a log of updates applied after it.
Loading a document means applying the snapshot, then the log in order.

Writes are asynchronous and ordered per store: ``append`` and
``replace_with_snapshot`` return awaitables that complete once the write is
committed, and a snapshot replaces exactly the log entries enqueued before
it. A caller may therefore take a snapshot of its in-memory document and
enqueue it right after its last append without waiting in between.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Awaitable, Protocol


class StoreUnavailable(Exception):
    """The backend cannot be reached or refused a read; the caller may retry later."""


@dataclass(slots=True)
class StoredDocument:
    """The stored content of one document."""

    snapshot: bytes | None = None
    updates: list[bytes] = field(default_factory=list)
    # Log position the snapshot and updates cover: the sequence number of
    # the last update included, for reading only what came after later.
    position: int = 0

    @property
    def log_bytes(self) -> int:
        """Total size of the updates after the snapshot."""
        return sum(len(update) for update in self.updates)


@dataclass(frozen=True, slots=True)
class VersionInfo:
    """One kept version of a document."""

    version_id: int
    created_at: float
    size: int


class DocumentStore(Protocol):
    """A place that keeps documents across restarts."""

    description: str

    async def open(self) -> None:
        """Connect or create files; raise ``StoreUnavailable`` on failure."""

    async def close(self) -> None:
        """Commit every queued write, then release resources."""

    async def load(self, name: str) -> StoredDocument:
        """Read a document; an unknown name returns an empty ``StoredDocument``."""

    def append(self, name: str, update: bytes) -> Awaitable[None]:
        """Queue an update; the awaitable completes once it is committed."""

    def replace_with_snapshot(self, name: str, snapshot: bytes, state_vector: bytes) -> Awaitable[int]:
        """Queue a snapshot that replaces the log entries queued before it.

        The awaitable returns the log position the snapshot covers.
        """

    async def load_after(self, name: str, position: int) -> list[bytes] | None:
        """Return the log entries after ``position``, or None when a newer snapshot replaced some."""

    def save_version(self, name: str, state: bytes, keep: int) -> Awaitable[None]:
        """Queue a copy of the whole state as a new version, keeping the newest ``keep``."""

    async def list_versions(self, name: str) -> list[VersionInfo]:
        """Return the kept versions of ``name``, oldest first."""

    async def load_version(self, name: str, version_id: int) -> bytes | None:
        """The state saved as ``version_id``, or None when there is no such version."""

    async def list_documents(self) -> list[str]:
        """Names of every stored document, sorted."""

    async def delete(self, name: str) -> None:
        """Remove a document, after every write queued for it before."""

    async def flush(self) -> None:
        """Wait until every write queued so far is committed."""

    async def ping(self) -> bool:
        """True when the backend is reachable and its last write succeeded."""
