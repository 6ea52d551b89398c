"""A room: one loaded document, its awareness, and the connections editing it.

Every message a connection sends is handled here synchronously: an update is
validated and applied once, and the bytes yrs reports as new are encoded
once into one frame that every other connection's queue receives. The same
bytes are queued for storage. Nothing here awaits, so messages of one room
are handled one at a time in arrival order without locks.

Messages are handled only after the room has loaded from storage (the
connection handler waits for ``loaded``), so a client's step 1 is answered
with the stored state and an early update is merged with it, not replaced.

pycrdt-websocket (0.16.5) has a room class, ``YRoom``, and an ASGI server; we
use neither. ``YRoom`` starts a new task for every update sent to every
client, so a client that stops reading accumulates tasks without bound, and
it starts store writes as tasks nobody waits for, so it cannot tell when an
update is durable. Its server does not map bad input to close codes. What
fits from that family is pycrdt itself: ``Doc`` and the update of each
transaction, used by ``sync.document``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Protocol

from persistence import DocumentStore
from sync.awareness import AwarenessRegistry, encode_awareness_update
from sync.document import DocumentSession
from sync.errors import InvalidUpdate, ProtocolError
from sync.messages import (
    AwarenessUpdate,
    Message,
    QueryAwareness,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
    encode_auth_permission_denied,
    encode_awareness,
    encode_sync_step1,
    encode_sync_step2,
    encode_sync_update,
)
from sync.restore import restore_into
from sync.update_format import split_update

from .config import RelayConfig
from .connection import Connection
from .frames import encode_binary_frame
from .metrics import RelayMetrics
from .presence import AwarenessBatcher

LOGGER = logging.getLogger("yrelay.room")

# The y-protocols permission-denied reason sent when a viewer sends an update.
READ_ONLY_REASON = "read-only"
# An update with no structs and an empty delete set, as clients send in step 2
# when they have nothing the relay lacks.
_EMPTY_UPDATE = b"\x00\x00"
# Distinct state vectors whose sync replies are kept for the current version.
_REPLY_CACHE_ENTRIES = 4


class MeshLink(Protocol):
    """The part of the peer mesh (``relay.mesh.node.MeshNode``) a room calls."""

    def publish_update(self, name: str, update: bytes) -> None:
        """Queue an update from a local client for the other relays."""

    def publish_awareness(self, name: str, payload: bytes) -> None:
        """Send an awareness update from a local client to the other relays."""


def _peer_owner(relay_id: str) -> tuple[str, str]:
    """Awareness owner key for states that arrived from another relay."""
    return ("relay", relay_id)


class Room:
    """One document held in memory and the connections attached to it."""

    def __init__(
        self,
        name: str,
        store: DocumentStore,
        config: RelayConfig,
        metrics: RelayMetrics,
        mesh: MeshLink | None = None,
    ) -> None:
        self.name = name
        self.store = store
        self.config = config
        self.metrics = metrics
        self.mesh = mesh
        self.session = DocumentSession()
        self.awareness = AwarenessRegistry()
        self._awareness_batcher = AwarenessBatcher(
            config.awareness_batch_interval,
            self.awareness.encode_clients,
            lambda payload, origin: self._broadcast(encode_awareness(payload), origin),
        )
        self.connections: set[Connection] = set()
        # Connections that were greeted; broadcasts go only to these, so a
        # client waiting for the load gets nothing before our step 1.
        self._receivers: set[Connection] = set()
        self.loaded = asyncio.Event()
        self.load_error: BaseException | None = None
        # HTTP requests holding the room loaded; they keep it from unloading.
        self.borrowers = 0
        self.unload_handle: asyncio.TimerHandle | None = None
        self._log_count = 0
        self._log_bytes = 0
        self._snapshot_bytes = 0
        self._last_write: Awaitable[None] | None = None
        self._last_version_at = 0.0
        self.stored_position = 0
        self._reply_cache: dict[bytes, list[bytes]] = {}
        self._reply_cache_version = -1

    # --- lifecycle ----------------------------------------------------------

    async def load(self) -> None:
        """Read the document from storage (the room manager sets ``loaded``)."""
        stored = await self.store.load(self.name)
        if stored.snapshot is not None:
            self._apply_stored(stored.snapshot, "snapshot")
            self._snapshot_bytes = len(stored.snapshot)
        for update in stored.updates:
            self._apply_stored(update, "log entry")
        self._log_count = len(stored.updates)
        self._log_bytes = stored.log_bytes
        self.stored_position = stored.position if self.store_has_stream_positions else 0
        versions = await self.store.list_versions(self.name)
        self._last_version_at = versions[-1].created_at if versions else 0.0
        self.metrics.room_loads.inc()
        LOGGER.debug(
            "loaded doc=%s snapshot_bytes=%d log_entries=%d", self.name, self._snapshot_bytes, self._log_count
        )

    @property
    def store_has_stream_positions(self) -> bool:
        """True when the store's positions are JetStream sequences (mesh snapshots)."""
        return bool(getattr(self.store, "positions_are_stream_sequences", False))

    async def refresh_snapshot(self) -> None:
        """Apply the stored snapshot again if a compactor wrote a newer one since the load."""
        stored = await self.store.load(self.name)
        if stored.snapshot is not None and stored.position > self.stored_position:
            self.apply_from_mesh(stored.snapshot, "store")
            self.stored_position = stored.position

    def _apply_stored(self, update: bytes, what: str) -> None:
        try:
            self.session.apply_update(update)
        except InvalidUpdate as exc:
            # Stored bytes were produced by yrs itself, so this is corruption
            # on disk; the rest of the document is still served.
            LOGGER.error("stored %s is invalid and was skipped doc=%s: %s", what, self.name, exc.__cause__)

    def close(self) -> None:
        """Release the document and drop pending awareness, when the room leaves memory."""
        self._awareness_batcher.close()
        self.session.close()

    @property
    def is_idle(self) -> bool:
        """True when no connection or HTTP request uses the room."""
        return not self.connections and self.borrowers == 0

    @property
    def exists(self) -> bool:
        """True once the document has any content, stored or new."""
        return self.session.version > 0

    def apply_from_api(self, update: bytes) -> None:
        """Apply an update sent through the HTTP API, like one from a client."""
        self._apply_from(None, update)

    def restore(self, old_state: bytes) -> None:
        """Edit the document forward until its content equals ``old_state``'s.

        Connected clients receive the edit as an ordinary update.
        """
        changed = self.session.edit(lambda doc: restore_into(doc, old_state))
        if changed is not None:
            self._accept_change(changed, None, publish=True)

    @property
    def is_dirty(self) -> bool:
        """True when the log has entries not yet folded into a snapshot."""
        return self._log_count > 0

    def compact(self) -> Awaitable[None]:
        """Queue a snapshot of the current state, replacing the stored log."""
        snapshot = self.session.encode_state()
        self._last_write = self.store.replace_with_snapshot(self.name, snapshot, self.session.state_vector())
        now = time.time()
        if now - self._last_version_at >= self.config.history_interval:
            self._last_write = self.store.save_version(self.name, snapshot, self.config.history_keep)
            self._last_version_at = now
        self._snapshot_bytes = len(snapshot)
        self._log_count = 0
        self._log_bytes = 0
        self.metrics.compactions.inc()
        return self._last_write

    async def flush(self) -> None:
        """Wait until every write this room queued is committed."""
        if self._last_write is not None:
            await self._last_write

    # --- connections ----------------------------------------------------------

    def attach(self, connection: Connection) -> None:
        """Add a connection and cancel a pending unload."""
        self.connections.add(connection)
        if self.unload_handle is not None:
            self.unload_handle.cancel()
            self.unload_handle = None

    def greet(self, connection: Connection) -> None:
        """Send a newly attached connection our state vector and the awareness states."""
        connection.send(encode_sync_step1(self.session.state_vector()))
        states = self.awareness.encode_all()
        if states is not None:
            connection.send(encode_awareness(states))
        self._receivers.add(connection)

    def detach(self, connection: Connection) -> None:
        """Remove a connection and announce the removal of its awareness states."""
        self.connections.discard(connection)
        self._receivers.discard(connection)
        removal = self.awareness.remove_owner(connection.id, time.monotonic())
        if removal is not None:
            self._broadcast(encode_awareness(removal), None)
            if self.mesh is not None:
                self.mesh.publish_awareness(self.name, removal)
        if not self.connections:
            self.awareness.forget_removed()

    def expire_awareness(self, now: float) -> None:
        """Remove awareness states not renewed within the configured timeout."""
        removal = self.awareness.expire(now, self.config.awareness_timeout)
        if removal is not None:
            LOGGER.debug("awareness states expired doc=%s", self.name)
            self._broadcast(encode_awareness(removal), None)

    # --- messages -------------------------------------------------------------

    def handle(self, connection: Connection, message: Message) -> None:
        """Handle one parsed message; raises ``ProtocolError`` on a bad payload."""
        if isinstance(message, SyncUpdate | SyncStep2):
            if connection.grant.can_write:
                self._apply_from(connection, message.update)
            elif message.update != _EMPTY_UPDATE:
                self._deny_write(connection, len(message.update))
        elif isinstance(message, AwarenessUpdate):
            entries = self.awareness.apply_entries(message.payload, connection.id, time.monotonic())
            if entries:
                accepted = encode_awareness_update(entries)
                self._awareness_batcher.offer([entry[0] for entry in entries], accepted, connection)
                if self.mesh is not None:
                    self.mesh.publish_awareness(self.name, accepted)
        elif isinstance(message, SyncStep1):
            self._answer_step1(connection, message.state_vector)
        elif isinstance(message, QueryAwareness):
            states = self.awareness.encode_all()
            if states is not None:
                connection.send(encode_awareness(states))

    def _deny_write(self, connection: Connection, update_bytes: int) -> None:
        # Nothing of the update is applied, stored or relayed. The client gets
        # a permission-denied message each time, but only the first is logged.
        self.metrics.writes_denied.inc()
        connection.denied_writes += 1
        if connection.denied_writes == 1:
            LOGGER.info(
                "write denied doc=%s conn=%s role=%s bytes=%d: read-only connection",
                self.name, connection.id, connection.grant.role.name.lower(), update_bytes,
            )
        connection.send(encode_auth_permission_denied(READ_ONLY_REASON))

    def _apply_from(self, connection: Connection | None, update: bytes) -> None:
        try:
            changed = self.session.apply_update(update)
        except InvalidUpdate as exc:
            self.metrics.updates_rejected.inc()
            if exc.integrated is not None:
                # Part of the transaction is in the document now, so every
                # peer and the store must have it too, the sender included.
                self._accept_change(exc.integrated, None, publish=True)
            raise
        if changed is not None:
            self._accept_change(changed, connection, publish=True)

    def _accept_change(self, changed: bytes, origin: Connection | None, publish: bool) -> None:
        self.metrics.updates_applied.inc()
        self._broadcast(encode_sync_update(changed), origin)
        self._persist(changed)
        if publish and self.mesh is not None:
            self.mesh.publish_update(self.name, changed)

    # --- from other relays ------------------------------------------------------

    def apply_from_mesh(self, update: bytes, peer: str) -> None:
        """Apply an update another relay accepted; it is never published again."""
        try:
            changed = self.session.apply_update(update)
        except InvalidUpdate as exc:
            LOGGER.warning("invalid update from peer relay doc=%s peer=%s: %s", self.name, peer, exc.__cause__)
            if exc.integrated is not None:
                self._accept_change(exc.integrated, None, publish=False)
            return
        if changed is not None:
            self._accept_change(changed, None, publish=False)

    def apply_awareness_from_mesh(self, payload: bytes, peer: str) -> None:
        """Apply awareness states set by another relay's clients."""
        try:
            entries = self.awareness.apply_entries(payload, _peer_owner(peer), time.monotonic())
        except ProtocolError as exc:
            LOGGER.warning("invalid awareness from peer relay doc=%s peer=%s: %s", self.name, peer, exc.reason)
            return
        if entries:
            self._awareness_batcher.offer([entry[0] for entry in entries], encode_awareness_update(entries), None)

    def remove_peer_awareness(self, peer: str) -> None:
        """Remove the awareness states of a relay that went silent."""
        removal = self.awareness.remove_owner(_peer_owner(peer), time.monotonic())
        if removal is not None:
            self._broadcast(encode_awareness(removal), None)

    def _persist(self, update: bytes) -> None:
        self._last_write = self.store.append(self.name, update)
        self._log_count += 1
        self._log_bytes += len(update)
        # The byte threshold grows with the snapshot so that rewriting a large
        # snapshot is paid for by at least as many bytes of new log.
        byte_threshold = max(self.config.compact_bytes, self._snapshot_bytes)
        if self._log_count >= self.config.compact_updates or self._log_bytes >= byte_threshold:
            self.compact()

    def _answer_step1(self, connection: Connection, state_vector: bytes) -> None:
        connection.send_initial(self._sync_reply(state_vector))

    def _sync_reply(self, state_vector: bytes) -> list[bytes]:
        """Frames answering a step 1, cached per (document version, state vector).

        A crowd joining at once usually sends the same state vector (the
        empty one), so the answer is encoded once and every joiner's queue
        holds the same bytes objects.
        """
        version = self.session.version
        if self._reply_cache_version != version:
            self._reply_cache.clear()
            self._reply_cache_version = version
        frames = self._reply_cache.get(state_vector)
        if frames is not None:
            return frames
        answer = self.session.diff(state_vector)
        self.metrics.step2_computed.inc()
        if len(answer) <= self.config.sync_chunk_bytes:
            frames = [encode_binary_frame(encode_sync_step2(answer))]
        else:
            # y-websocket reports "synced" on the first step 2 it receives,
            # so the leading parts go out as updates and the last as step 2.
            parts = split_update(answer, self.config.sync_chunk_bytes)
            frames = [encode_binary_frame(encode_sync_update(part)) for part in parts[:-1]]
            frames.append(encode_binary_frame(encode_sync_step2(parts[-1])))
        if len(self._reply_cache) >= _REPLY_CACHE_ENTRIES:
            self._reply_cache.pop(next(iter(self._reply_cache)))
        self._reply_cache[state_vector] = frames
        return frames

    def _broadcast(self, message: bytes, origin: Connection | None) -> None:
        frame = encode_binary_frame(message)
        for connection in self._receivers:
            if connection is not origin:
                connection.send_frame(frame)
