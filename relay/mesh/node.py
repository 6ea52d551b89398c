"""A relay's membership in the mesh: updates, awareness and catch-up over NATS.

Theory of operation
-------------------
Every update a relay accepts from one of its clients is published once to
the document's subject, where the JetStream stream keeps it. Each relay with
the document loaded reads that subject through an ordered JetStream consumer
and fans the update out to its own clients. A relay skips messages carrying
its own relay id and never publishes what it received from the mesh, so an
update crosses each relay once and traffic stops when clients stop.

Opening a room, after the local store is loaded:
1. subscribe to awareness and to peer sync requests of the document;
2. start the ordered consumer from the beginning of the document's log and
   wait until it has delivered the last message the stream had;
3. ask the peers that hold the document for what we lack (request/reply
   with our state vector); each answer carries the peer's state vector and
   delete set too, and whatever that peer lacks is published, so updates
   that never reached the stream (their relay lost NATS, then died) spread
   again.

Awareness is plain NATS, not stored. Relays publish heartbeats; when one
falls silent for ``peer_timeout`` seconds, the awareness states its clients
set are removed at every other relay and announced to their clients.

Error handling: NATS being down never blocks a room for long. A room
opened while the client knows it is disconnected is served from local state
at once and linked to the mesh on reconnect; a JetStream request that hangs
is bounded by ``JS_TIMEOUT``. Publishes queue in ``UpdatePublisher``; the
ordered consumer resumes from its last sequence after a reconnect (nats-py
recreates it), so nothing published meanwhile is missed; awareness and
heartbeats are dropped while disconnected.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from sync.codec import Decoder, encode_varbytes
from sync.errors import ProtocolError

from .publisher import UpdatePublisher
from .stream import StreamSettings, ensure_stream
from .subjects import RELAY_HEADER, STATE_VECTOR_HEADER, Subjects, document_name

if TYPE_CHECKING:
    from ..metrics import RelayMetrics
    from ..room import Room

LOGGER = logging.getLogger("yrelay.mesh")

DELETED = b"deleted"

# Seconds a JetStream API request may take while a room opens, so a NATS
# server that died unnoticed delays the room this long at most.
JS_TIMEOUT = 2.0


def new_relay_id() -> str:
    """Generate a random relay id, short enough to read in logs."""
    return secrets.token_hex(6)


@dataclass(slots=True)
class MeshConfig:
    """Settings for joining the mesh."""

    servers: list[str]
    relay_id: str = field(default_factory=new_relay_id)
    subject_prefix: str = "yrelay"
    stream_name: str = "YRELAY_UPDATES"
    stream_replicas: int = 1
    stream_storage: str = "file"
    stream_max_age: float = 0.0
    max_message_size: int = 32 * 1024 * 1024
    heartbeat_interval: float = 2.0
    peer_timeout: float = 10.0
    # Seconds a relay opening a room waits for peers' replies, and for the
    # stream to deliver the document's log.
    sync_timeout: float = 0.5
    catch_up_timeout: float = 30.0
    startup_timeout: float = 10.0


@dataclass(slots=True)
class _RoomLinks:
    subscriptions: list[Subscription]
    consumer: Any = None
    # True once the room has its subscriptions, its log consumer and the
    # peers' replies. Rooms opened while NATS was down are linked again on
    # reconnect until this is true.
    complete: bool = False
    linking: bool = False


class MeshNode:
    """One relay's connection to NATS and JetStream."""

    def __init__(self, config: MeshConfig, metrics: RelayMetrics) -> None:
        self.config = config
        self.metrics = metrics
        self.relay_id = config.relay_id
        self.subjects = Subjects(config.subject_prefix)
        self.nc: Client | None = None
        self.publisher: UpdatePublisher | None = None
        self.rooms: dict[str, Room] = {}
        self._links: dict[str, _RoomLinks] = {}
        self._peers_seen: dict[str, float] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._errors_logged: set[str] = set()
        # Set by the room manager: drops a document another relay deleted.
        self.on_document_deleted: Callable[[str], Awaitable[None]] | None = None

    # --- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        """Connect, create or check the stream, start publishing and heartbeats.

        Raises ``asyncio.TimeoutError`` when no server responds within
        ``startup_timeout`` seconds, and ``StreamConfigConflict`` when the
        stream exists with other settings.
        """
        self.nc = await asyncio.wait_for(self._connect(), self.config.startup_timeout)
        js = self.nc.jetstream()
        created = await ensure_stream(js, self._stream_settings())
        LOGGER.info(
            "joined mesh relay=%s servers=%s stream=%s (%s)",
            self.relay_id, ",".join(self.config.servers), self.config.stream_name,
            "created" if created else "existing, settings match",
        )
        self.publisher = UpdatePublisher(js, self.relay_id)
        self._spawn(self.publisher.run(), "mesh-publisher")
        await self.nc.subscribe(self.subjects.heartbeat_wildcard, cb=self._on_heartbeat)
        await self.nc.subscribe(self.subjects.control_wildcard, cb=self._on_control)
        self._spawn(self._heartbeat_forever(), "mesh-heartbeat")

    async def _connect(self) -> Client:
        # max_reconnect_attempts=-1 also makes the first connect retry
        # forever, so start() bounds it with startup_timeout.
        return await nats.connect(
            servers=self.config.servers,
            name=f"yrelay-{self.relay_id}",
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            connect_timeout=2,
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
            error_cb=self._on_error,
        )

    def _stream_settings(self) -> StreamSettings:
        return StreamSettings(
            name=self.config.stream_name,
            subjects=(self.subjects.updates_wildcard,),
            replicas=self.config.stream_replicas,
            storage=self.config.stream_storage,
            max_msg_size=self.config.max_message_size,
            max_age_seconds=self.config.stream_max_age,
        )

    async def stop(self, timeout: float) -> None:
        """Publish what is queued (up to ``timeout`` s), then disconnect."""
        if self.publisher is not None and not await self.publisher.wait_idle(timeout):
            LOGGER.error(
                "stopping with %d updates not acknowledged by JetStream relay=%s; "
                "they are in the local store and their clients still hold them",
                self.publisher.backlog, self.relay_id,
            )
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.nc is not None and not self.nc.is_closed:
            await self.nc.close()

    @property
    def connected(self) -> bool:
        """True while the NATS connection is up."""
        return self.nc is not None and self.nc.is_connected

    def status(self) -> dict[str, Any]:
        """Describe the mesh for /readyz, and refresh the mesh gauges."""
        publisher = self.publisher
        self.metrics.mesh_connected.set(1 if self.connected else 0)
        self.metrics.mesh_unacknowledged.set(publisher.backlog if publisher else 0)
        return {
            "relay": self.relay_id,
            "connected": self.connected,
            "unacknowledged_updates": publisher.backlog if publisher else 0,
            "publish_failing_for_s": (
                round(time.monotonic() - publisher.failing_since, 1)
                if publisher is not None and publisher.failing_since is not None else 0
            ),
        }

    # --- rooms ------------------------------------------------------------------

    async def attach_room(self, room: Room) -> None:
        """Subscribe to a document and catch up from the stream and from peers.

        While NATS is unreachable this returns at once and the room is served
        from local state; the catch-up runs when the connection returns.
        """
        self.rooms[room.name] = room
        links = _RoomLinks(subscriptions=[])
        self._links[room.name] = links
        if not self.connected:
            LOGGER.warning(
                "NATS unreachable, doc=%s opened from local state; catch-up follows the reconnect relay=%s",
                room.name, self.relay_id,
            )
            return
        await self._link(room, links)

    async def _link(self, room: Room, links: _RoomLinks) -> None:
        assert self.nc is not None
        links.linking = True
        try:
            if not links.subscriptions:
                links.subscriptions.append(
                    await self.nc.subscribe(self.subjects.awareness(room.name), cb=self._awareness_handler(room))
                )
                links.subscriptions.append(
                    await self.nc.subscribe(self.subjects.sync(room.name), cb=self._sync_handler(room))
                )
            if links.consumer is None:
                await self._follow_log(room, links)
            await self._ask_peers(room)
            links.complete = True
        except Exception as exc:
            # NATS went away or is slow: keep serving from local state; the
            # next reconnect retries what is missing.
            LOGGER.warning("mesh catch-up incomplete doc=%s relay=%s: %r", room.name, self.relay_id, exc)
        finally:
            links.linking = False

    def _relink_incomplete_rooms(self) -> None:
        for name, links in list(self._links.items()):
            room = self.rooms.get(name)
            if room is not None and not links.complete and not links.linking:
                self._spawn(self._link(room, links), f"mesh-relink:{name}")

    async def detach_room(self, room: Room) -> None:
        """Stop following a document that was unloaded."""
        self.rooms.pop(room.name, None)
        links = self._links.pop(room.name, None)
        if links is None:
            return
        for subscription in links.subscriptions:
            try:
                await subscription.unsubscribe()
            except Exception as exc:  # the connection may be closed already
                LOGGER.debug("unsubscribe failed doc=%s: %r", room.name, exc)
        if links.consumer is not None:
            try:
                await links.consumer.unsubscribe()
            except Exception as exc:
                LOGGER.debug("consumer unsubscribe failed doc=%s: %r", room.name, exc)

    async def purge(self, name: str) -> None:
        """Remove a deleted document's log from the stream and tell the other relays."""
        if self.nc is None:
            return
        js = self.nc.jetstream(timeout=JS_TIMEOUT)
        await js.purge_stream(self.config.stream_name, subject=self.subjects.updates(name))
        await self.nc.publish(self.subjects.control(name), DELETED, headers={RELAY_HEADER: self.relay_id})

    async def _on_control(self, msg: Msg) -> None:
        relay = (msg.headers or {}).get(RELAY_HEADER)
        if relay == self.relay_id or msg.data != DELETED or self.on_document_deleted is None:
            return
        try:
            name = document_name(msg.subject.rpartition(".")[2])
        except (ValueError, UnicodeDecodeError):
            LOGGER.warning("invalid control subject %r from peer=%s", msg.subject, relay)
            return
        LOGGER.info("document deleted by peer relay=%s peer=%s doc=%s", self.relay_id, relay, name)
        await self.on_document_deleted(name)

    async def _follow_log(self, room: Room, links: _RoomLinks) -> None:
        assert self.nc is not None
        js = self.nc.jetstream(timeout=JS_TIMEOUT)
        subject = self.subjects.updates(room.name)
        # The stored snapshot covers the stream up to this sequence (0 when
        # the store keeps its own log and has no stream position).
        start = room.stored_position + 1
        try:
            last = await js.get_last_msg(self.config.stream_name, subject)
            last_sequence = last.seq or 0
        except NotFoundError:
            last_sequence = 0
        caught_up = asyncio.Event()
        if last_sequence < start:
            caught_up.set()

        async def on_update(msg: Msg) -> None:
            headers = msg.headers or {}
            origin = headers.get(RELAY_HEADER)
            if origin != self.relay_id:
                self.metrics.mesh_received.labels(origin="peer").inc()
                room.apply_from_mesh(msg.data, origin or "?")
            else:
                self.metrics.mesh_received.labels(origin="self").inc()
                if not caught_up.is_set():
                    # Our own updates from before this room was loaded may be
                    # only in the stream when snapshots are the compactor's.
                    room.apply_from_mesh(msg.data, self.relay_id)
            if not caught_up.is_set() and msg.metadata.sequence.stream >= last_sequence:
                caught_up.set()

        if start > 1:
            config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start)
            links.consumer = await js.subscribe(
                subject, cb=on_update, ordered_consumer=True, config=config, stream=self.config.stream_name
            )
        else:
            links.consumer = await js.subscribe(
                subject, cb=on_update, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL,
                stream=self.config.stream_name,
            )
        try:
            await asyncio.wait_for(caught_up.wait(), self.config.catch_up_timeout)
        except asyncio.TimeoutError:
            LOGGER.warning(
                "stream did not deliver doc=%s up to sequence %d within %.0f s; serving what arrived",
                room.name, last_sequence, self.config.catch_up_timeout,
            )
        if start > 1:
            # A compactor may have stored a newer snapshot and purged the log
            # it covers between our load and the consumer's start. It writes
            # the snapshot before purging, so reading it again now closes
            # that gap.
            await room.refresh_snapshot()

    async def _ask_peers(self, room: Room) -> None:
        assert self.nc is not None
        inbox = self.nc.new_inbox()
        answers: list[Msg] = []

        async def collect(msg: Msg) -> None:
            answers.append(msg)

        subscription = await self.nc.subscribe(inbox, cb=collect)
        try:
            await self.nc.publish(
                self.subjects.sync(room.name),
                room.session.state_vector(),
                reply=inbox,
                headers={RELAY_HEADER: self.relay_id},
            )
            await asyncio.sleep(self.config.sync_timeout)
        finally:
            await subscription.unsubscribe()
        for answer in answers:
            self._apply_peer_answer(room, answer)

    def _apply_peer_answer(self, room: Room, answer: Msg) -> None:
        headers = answer.headers or {}
        peer = headers.get(RELAY_HEADER, "?")
        decoder = Decoder(answer.data)
        try:
            update = decoder.read_varbytes()
            awareness = decoder.read_varbytes()
            peer_deletions = decoder.read_varbytes()
        except ProtocolError:
            LOGGER.warning("malformed sync answer doc=%s peer=%s", room.name, peer)
            return
        room.apply_from_mesh(update, peer)
        if awareness:
            room.apply_awareness_from_mesh(awareness, peer)
        peer_state = bytes.fromhex(headers.get(STATE_VECTOR_HEADER, ""))
        if not peer_state:
            return
        # What the peer lacks was never in the stream, or it would have read
        # it there: publish it so the stream and every peer get it. Our delete
        # set now includes the peer's, so if the two differ, the peer lacks
        # a deletion.
        missing = room.session.diff(peer_state)
        lacks_deletions = _deletions(room) != peer_deletions
        if _has_structs(missing) or lacks_deletions:
            LOGGER.info("publishing updates peer=%s lacked doc=%s bytes=%d", peer, room.name, len(missing))
            self.publish_update(room.name, missing)

    def _sync_handler(self, room: Room):  # type: ignore[no-untyped-def]  # nats callback
        async def on_sync_request(msg: Msg) -> None:
            headers = msg.headers or {}
            if headers.get(RELAY_HEADER) == self.relay_id or not msg.reply:
                return
            try:
                update = room.session.diff(msg.data)
            except ProtocolError:
                LOGGER.warning("invalid state vector in sync request doc=%s peer=%s", room.name, headers.get(RELAY_HEADER))
                return
            awareness = room.awareness.encode_all() or b""
            assert self.nc is not None
            await self.nc.publish(
                msg.reply,
                encode_varbytes(update) + encode_varbytes(awareness) + encode_varbytes(_deletions(room)),
                headers={RELAY_HEADER: self.relay_id, STATE_VECTOR_HEADER: room.session.state_vector().hex()},
            )
            # The asker read the stream before asking, so structs it lacks
            # are, apart from messages still in flight, missing from the
            # stream too: publish them so relays that open the room later
            # find them there.
            if _has_structs(update):
                LOGGER.info(
                    "publishing updates peer=%s lacked doc=%s bytes=%d", headers.get(RELAY_HEADER), room.name, len(update)
                )
                self.publish_update(room.name, update)

        return on_sync_request

    def _awareness_handler(self, room: Room):  # type: ignore[no-untyped-def]  # nats callback
        async def on_awareness(msg: Msg) -> None:
            relay = (msg.headers or {}).get(RELAY_HEADER)
            if relay == self.relay_id or relay is None:
                return
            self._peers_seen[relay] = time.monotonic()
            room.apply_awareness_from_mesh(msg.data, relay)

        return on_awareness

    # --- publishing ---------------------------------------------------------------

    def publish_update(self, name: str, update: bytes) -> None:
        """Queue a local update for JetStream."""
        if self.publisher is None:
            return
        self.metrics.mesh_published.inc()
        self.publisher.publish(name, self.subjects.updates(name), update)

    def publish_awareness(self, name: str, payload: bytes) -> None:
        """Send an awareness update to the other relays (dropped while disconnected)."""
        if not self.connected:
            return
        self._spawn(self._publish_plain(self.subjects.awareness(name), payload), "mesh-awareness")

    async def _publish_plain(self, subject: str, payload: bytes) -> None:
        assert self.nc is not None
        try:
            await self.nc.publish(subject, payload, headers={RELAY_HEADER: self.relay_id})
        except Exception as exc:
            LOGGER.debug("plain publish failed subject=%s: %r", subject, exc)

    # --- heartbeats -------------------------------------------------------------

    async def _heartbeat_forever(self) -> None:
        assert self.nc is not None
        subject = self.subjects.heartbeat(self.relay_id)
        while True:
            if self.nc.is_connected:
                try:
                    await self.nc.publish(subject, b"", headers={RELAY_HEADER: self.relay_id})
                except Exception as exc:
                    LOGGER.debug("heartbeat not sent relay=%s: %r", self.relay_id, exc)
            self._expire_peers(time.monotonic())
            await asyncio.sleep(self.config.heartbeat_interval)

    async def _on_heartbeat(self, msg: Msg) -> None:
        relay = (msg.headers or {}).get(RELAY_HEADER)
        if relay and relay != self.relay_id:
            if relay not in self._peers_seen:
                LOGGER.info("peer relay seen relay=%s peer=%s", self.relay_id, relay)
            self._peers_seen[relay] = time.monotonic()

    def _expire_peers(self, now: float) -> None:
        if not self.connected:
            # Our own outage is not the peers' death.
            for relay in self._peers_seen:
                self._peers_seen[relay] = now
            return
        for relay, seen in list(self._peers_seen.items()):
            if now - seen < self.config.peer_timeout:
                continue
            del self._peers_seen[relay]
            LOGGER.info("peer relay silent for %.0f s, removing its awareness states relay=%s peer=%s",
                        now - seen, self.relay_id, relay)
            for room in list(self.rooms.values()):
                room.remove_peer_awareness(relay)

    # --- NATS callbacks -----------------------------------------------------------

    async def _on_disconnected(self) -> None:
        LOGGER.warning("disconnected from NATS relay=%s; serving local clients, queueing updates", self.relay_id)

    async def _on_reconnected(self) -> None:
        self._errors_logged.clear()
        url = self.nc.connected_url.netloc if self.nc is not None and self.nc.connected_url else "?"
        LOGGER.info("reconnected to NATS relay=%s server=%s", self.relay_id, url)
        self._relink_incomplete_rooms()

    async def _on_error(self, error: Exception) -> None:
        if isinstance(error, NatsTimeoutError):
            return
        # While a server is down every reconnect attempt reports an error;
        # one line per error kind per outage is enough.
        kind = type(error).__name__
        if kind in self._errors_logged:
            return
        self._errors_logged.add(kind)
        LOGGER.warning("NATS error relay=%s: %r", self.relay_id, error)

    def _spawn(self, coroutine, name: str) -> None:  # type: ignore[no-untyped-def]  # any coroutine
        task = asyncio.create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _has_structs(update: bytes) -> bool:
    # An update without structs starts with a zero struct-client count.
    return not update.startswith(b"\x00")


def _deletions(room: Room) -> bytes:
    """Return the room's whole delete set, as an update without structs."""
    return room.session.diff(room.session.state_vector())
