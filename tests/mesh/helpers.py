"""Helpers for the mesh tests: relay metrics, the JetStream log of a document,
and paths of the Node scenario scripts in this folder."""

from __future__ import annotations

import asyncio
import base64
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nats
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy
from nats.js.errors import NotFoundError
from pycrdt import Doc

from tests.support.raw_client import AwarenessEntry, RawClient, fetch_metrics
from tests.support.relay_process import RelayProcess

STREAM_NAME = "YRELAY_UPDATES"
SUBJECT_PREFIX = "yrelay"
RELAY_HEADER = "Yrelay-Relay"


class MeshRelay(RelayProcess):
    """A ``RelayProcess`` joined to the mesh, with its relay id and NATS URLs."""

    def __init__(self, data_dir: Path, relay_id: str, nats_urls: list[str], extra_args: list[str]) -> None:
        self.relay_id = relay_id
        self.nats_urls = list(nats_urls)
        args = ["--nats", ",".join(self.nats_urls), "--relay-id", relay_id, *extra_args]
        super().__init__(data_dir, args)

    @property
    def database_path(self) -> Path:
        """The relay's SQLite file."""
        return self.data_dir / "yrelay.sqlite3"


def mesh_script(name: str) -> str:
    """Return the path of a script in tests/mesh, relative to tests/interop.

    ``tests.support.node`` runs scripts from tests/interop, where the npm
    packages are installed. The scripts here import ``../interop/lib.mjs``,
    so Node resolves the packages from there.
    """
    return f"../mesh/{name}"


@dataclass(frozen=True)
class MeshCounters:
    """The mesh counters of one relay at one moment, from ``/metrics``."""

    published: float
    received_peer: float
    received_self: float
    unacknowledged: float
    connected: float
    updates_applied: float

    @property
    def received(self) -> float:
        """Messages delivered by the relay's consumers, from any origin."""
        return self.received_peer + self.received_self


def read_counters(relay: RelayProcess) -> MeshCounters:
    """Read the mesh counters of ``relay``.

    A labelled counter that was never incremented has no sample and reads as 0.
    """
    samples = fetch_metrics(relay.http_url)
    return MeshCounters(
        published=samples.get("yrelay_mesh_updates_published_total", 0.0),
        received_peer=samples.get('yrelay_mesh_updates_received_total{origin="peer"}', 0.0),
        received_self=samples.get('yrelay_mesh_updates_received_total{origin="self"}', 0.0),
        unacknowledged=samples.get("yrelay_mesh_unacknowledged_updates", 0.0),
        connected=samples.get("yrelay_mesh_connected", 0.0),
        updates_applied=samples.get("yrelay_updates_applied_total", 0.0),
    )


def document_subject(doc_name: str, prefix: str = SUBJECT_PREFIX) -> str:
    """The subject of a document's updates: the name's UTF-8 bytes in unpadded base64url."""
    token = base64.urlsafe_b64encode(doc_name.encode("utf-8")).rstrip(b"=").decode("ascii")
    return f"{prefix}.doc.{token}"


@dataclass(frozen=True)
class StreamMessage:
    """One message of a document's JetStream log."""

    sequence: int
    relay: str | None
    data: bytes


async def read_stream(nats_url: str, doc_name: str, timeout: float = 10.0) -> list[StreamMessage]:
    """Read every message the stream holds for ``doc_name``, in stream order.

    Returns an empty list when the stream has no message on the document's
    subject. Raises ``TimeoutError`` when the messages up to the last one
    are not delivered within ``timeout`` seconds.
    """
    nc = await nats.connect(nats_url, connect_timeout=2, max_reconnect_attempts=0)
    try:
        js = nc.jetstream()
        subject = document_subject(doc_name)
        try:
            last = await js.get_last_msg(STREAM_NAME, subject)
        except NotFoundError:
            return []
        last_sequence = last.seq or 0
        messages: list[StreamMessage] = []
        complete = asyncio.Event()

        async def collect(msg: Msg) -> None:
            sequence = msg.metadata.sequence.stream
            messages.append(StreamMessage(sequence, (msg.headers or {}).get(RELAY_HEADER), msg.data))
            if sequence >= last_sequence:
                complete.set()

        subscription = await js.subscribe(
            subject, cb=collect, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL, stream=STREAM_NAME
        )
        try:
            await asyncio.wait_for(complete.wait(), timeout)
        finally:
            await subscription.unsubscribe()
        return messages
    finally:
        await nc.close()


def wait_until(condition: Callable[[], bool], timeout: float, describe: Callable[[], str], interval: float = 0.05) -> None:
    """Poll ``condition`` and raise ``AssertionError`` with ``describe()`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s: {describe()}")
        time.sleep(interval)


def stored_document(database_path: Path, doc_name: str) -> Doc:
    """Rebuild ``doc_name`` from a relay's SQLite file, opened read-only.

    The ``snapshots`` row (if any) is applied first, then the ``updates``
    rows in ``seq`` order. Returns an empty document when the file does not
    exist yet.
    """
    doc = Doc()
    if not database_path.exists():
        return doc
    # mode=ro still reads the WAL, so rows the relay committed there are visible.
    connection = sqlite3.connect(f"{database_path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
    try:
        snapshots = connection.execute("SELECT data FROM snapshots WHERE doc = ?", (doc_name,)).fetchall()
        updates = connection.execute("SELECT data FROM updates WHERE doc = ? ORDER BY seq", (doc_name,)).fetchall()
    finally:
        connection.close()
    for (blob,) in [*snapshots, *updates]:
        doc.apply_update(bytes(blob))
    return doc


def awareness_removals(client: RawClient, client_id: int) -> list[tuple[float, AwarenessEntry]]:
    """Return the null awareness entries of ``client_id`` that ``client`` received, with arrival times."""
    return [
        (received.at, entry)
        for received in client.history
        if received.message is not None and received.message.is_awareness
        for entry in received.message.entries
        if entry.client == client_id and entry.state is None
    ]
