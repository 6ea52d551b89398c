"""The compactor: folds each document's JetStream log into a MongoDB snapshot.

Theory of operation
-------------------
A durable pull consumer on the update subjects tells the compactor which
documents have new log entries; several compactor processes share it, so
they share the work. For each such document the compactor:

1. takes the document's lease in MongoDB (one compactor per document at a
   time; a lease expires if its holder dies);
2. reads the snapshot and the stream sequence it covers, then reads the
   document's messages from the stream, from the next sequence up to the
   last one the stream has now;
3. stores the merged state as the new snapshot with that last sequence,
   on the condition that the snapshot version is still the one it read,
   and refreshes the Redis copy when a cache is configured;
4. only then purges the document's messages up to that sequence, so a
   relay that opens the room finds every update either in the snapshot or
   in the stream;
5. acknowledges the consumer's messages of that document.

Replaying entries is harmless: a CRDT update applied twice changes nothing,
and a snapshot never moves back because its write is conditional. Messages
of a document whose lease another compactor holds are negatively
acknowledged with a delay and come back later.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from pycrdt import Doc

from persistence import StoreUnavailable
from persistence.mesh_snapshots import MeshSnapshots
from persistence.redis_cache import RedisCache

from .mesh.subjects import Subjects, document_name

LOGGER = logging.getLogger("yrelay.compactor")

CONSUMER_NAME = "yrelay-compactor"
BATCH = 256
LEASE_SECONDS = 30.0
READ_TIMEOUT = 5.0


class Compactor:
    """One compactor process's share of the compaction work."""

    def __init__(
        self,
        nc: Client,
        snapshots: MeshSnapshots,
        stream_name: str,
        subjects: Subjects,
        holder: str,
        cache: RedisCache | None = None,
        history_interval: float = 600.0,
        history_keep: int = 20,
    ) -> None:
        self.nc = nc
        self.cache = cache
        self.history_interval = history_interval
        self.history_keep = history_keep
        self.snapshots = snapshots
        self.stream_name = stream_name
        self.subjects = subjects
        self.holder = holder
        self.compactions = 0
        self.js = nc.jetstream(timeout=READ_TIMEOUT)

    async def run(self) -> None:
        """Compact forever; cancel to stop."""
        subscription = await self.js.pull_subscribe(
            self.subjects.updates_wildcard,
            durable=CONSUMER_NAME,
            stream=self.stream_name,
            config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=120),
        )
        LOGGER.info("compactor running holder=%s consumer=%s", self.holder, CONSUMER_NAME)
        while True:
            try:
                messages = await subscription.fetch(BATCH, timeout=1.0)
            except NatsTimeoutError:
                continue
            except Exception as exc:  # NATS down: the next fetch retries
                LOGGER.warning("compactor fetch failed holder=%s: %r", self.holder, exc)
                await asyncio.sleep(1.0)
                continue
            await self._handle(messages)

    async def _handle(self, messages: list[Msg]) -> None:
        by_subject: dict[str, list[Msg]] = defaultdict(list)
        for message in messages:
            by_subject[message.subject].append(message)
        for subject, group in by_subject.items():
            try:
                name = document_name(subject.rpartition(".")[2])
            except (ValueError, UnicodeDecodeError):
                LOGGER.error("message on a subject that names no document: %r; acknowledged", subject)
                await _ack_all(group)
                continue
            try:
                done = await self.compact(name)
            except (StoreUnavailable, OSError, asyncio.TimeoutError, NatsTimeoutError) as exc:
                LOGGER.warning("compaction failed doc=%s holder=%s, retried later: %r", name, self.holder, exc)
                done = False
            if done:
                await _ack_all(group)
            else:
                for message in group:
                    await message.nak(delay=2.0)

    async def compact(self, name: str) -> bool:
        """Fold the log of ``name`` into its snapshot; False when it must be retried later."""
        if not await self.snapshots.acquire_lease(name, self.holder, LEASE_SECONDS):
            return False
        try:
            return await self._compact_under_lease(name)
        finally:
            await self.snapshots.release_lease(name, self.holder)

    async def _compact_under_lease(self, name: str) -> bool:
        subject = self.subjects.updates(name)
        snapshot = await self.snapshots.get(name)
        first = snapshot.stream_seq + 1 if snapshot else 1
        try:
            last = (await self.js.get_last_msg(self.stream_name, subject)).seq or 0
        except NotFoundError:
            return True
        if last < first:
            return True
        doc = Doc()
        if snapshot is not None:
            doc.apply_update(snapshot.data)
        read = await self._apply_log(subject, first, last, doc, name)
        stored = await self.snapshots.put(
            name, doc.get_update(), doc.get_state(), last, snapshot.version if snapshot else 0
        )
        if not stored:
            LOGGER.info("another compactor stored doc=%s first; retrying later holder=%s", name, self.holder)
            return False
        state = doc.get_update()
        if self.cache is not None:
            await self.cache.put(name, state, last, (snapshot.version if snapshot else 0) + 1)
        await self.snapshots.save_version(name, state, self.history_keep, self.history_interval)
        await self.js.purge_stream(self.stream_name, subject=subject, seq=last + 1)
        self.compactions += 1
        LOGGER.info(
            "compacted doc=%s holder=%s stream_seq=%d log_entries=%d", name, self.holder, last, read
        )
        return True

    async def _apply_log(self, subject: str, first: int, last: int, doc: Doc, name: str) -> int:
        subscription = await self.js.subscribe(
            subject,
            stream=self.stream_name,
            ordered_consumer=True,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=first),
        )
        read = 0
        try:
            while True:
                message = await subscription.next_msg(timeout=READ_TIMEOUT)
                try:
                    doc.apply_update(message.data)
                except Exception as exc:  # relays validate updates, so this is corruption
                    LOGGER.error("invalid update in the stream doc=%s seq=%d skipped: %r",
                                 name, message.metadata.sequence.stream, exc)
                read += 1
                if message.metadata.sequence.stream >= last:
                    return read
        finally:
            await subscription.unsubscribe()


async def _ack_all(messages: list[Msg]) -> None:
    for message in messages:
        await message.ack()
