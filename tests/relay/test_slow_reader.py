"""A reader that stops reading must not slow the room down or grow the relay.

Ten clients share a room. After a baseline phase, one of them (SLOW) stops
reading its socket while the other nine each send 20 updates of 1 KiB per
second. The kernel buffers absorb the first few MiB for SLOW; after that the
relay queues at most ``--send-queue-bytes`` for it and then closes it with
1013. The nine must get each other's updates as fast as before, and SLOW
gets everything through sync when it reconnects.

Each writer overwrites one map key, so the document stays small and the
relay's memory growth shows what it holds for SLOW, not the document.
"""

from __future__ import annotations

import asyncio
import socket
import statistics
import time

from pycrdt import Doc, Map, MapEvent
from websockets.asyncio.client import connect as ws_connect

from tests.support.raw_client import STEP1_EMPTY, RawClient, document_url, fetch_metrics
from tests.support.relay_process import RelayProcess

MIB = 1024 * 1024
QUEUE_BOUND = 512 * 1024
FAST_CLIENTS = 9
UPDATES_PER_SECOND = 20
PAYLOAD_BYTES = 1024
BASELINE_SECONDS = 4
# Long enough for about 8 MiB to pile up for SLOW: the relay's and SLOW's
# kernel socket buffers take a few MiB before the relay's queue grows.
STALL_SECONDS = 45
# Field-reported target for the other clients while one reader stalls.
P99_LIMIT_SECONDS = 0.200
# RSS noise of the relay's allocator, SQLite page cache and Python objects.
RSS_SLACK_BYTES = 24 * MIB


class StampedWriter:
    """A client that sets its own key of Map "m" to a send timestamp plus padding."""

    def __init__(self, client: RawClient, key: str) -> None:
        self.client = client
        self.key = key
        self.doc = Doc()
        self.entries = self.doc.get("m", type=Map)
        self.sent = 0

    async def write_for(self, seconds: float) -> None:
        interval = 1 / UPDATES_PER_SECOND
        deadline = time.monotonic() + seconds
        next_send = time.monotonic()
        while time.monotonic() < deadline:
            before = self.doc.get_state()
            self.entries[self.key] = f"{time.monotonic():.6f}|{self.sent}|" + "x" * PAYLOAD_BYTES
            await self.client.send_update(self.doc.get_update(before))
            self.sent += 1
            next_send += interval
            await asyncio.sleep(max(0.0, next_send - time.monotonic()))


def delivery_latencies(client: RawClient, own_key: str, since: float, until: float) -> list[float]:
    """Replay what ``client`` received and return receive time minus send time per foreign update."""
    replay = Doc()
    entries = replay.get("m", type=Map)
    changed: list[str] = []

    def on_change(event: MapEvent) -> None:
        changed.extend(str(entries[key]) for key in event.keys if key != own_key and key in entries)

    subscription = entries.observe(on_change)
    latencies = []
    for received in client.history:
        message = received.message
        if message is None or not (message.is_update or message.is_step2):
            continue
        changed.clear()
        replay.apply_update(message.payload)
        for value in changed:
            sent = float(value.split("|", 1)[0])
            if since <= sent < until:
                latencies.append(received.at - sent)
    entries.unobserve(subscription)
    return latencies


async def connect_with_small_receive_buffer(server: RelayProcess, doc_name: str) -> RawClient:
    """Connect with a 4 KiB receive buffer, so less of what SLOW misses sits in its kernel."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    sock.setblocking(False)
    ws = await ws_connect(
        document_url(server.url, doc_name), sock=sock, max_size=None, compression=None,
        proxy=None, ping_interval=None, max_queue=None,
    )
    return RawClient(ws, doc_name)


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98]


async def test_stalled_reader_is_bounded_and_isolated(relay) -> None:
    server: RelayProcess = relay("--send-queue-bytes", str(QUEUE_BOUND))
    doc_name = "b19"
    clients = [await RawClient.connect(server.url, doc_name) for _ in range(FAST_CLIENTS)]
    writers = [StampedWriter(client, f"writer-{index}") for index, client in enumerate(clients)]
    slow = await connect_with_small_receive_buffer(server, doc_name)
    for client in [*clients, slow]:
        await client.sync()

    baseline_start = time.monotonic()
    await asyncio.gather(*(writer.write_for(BASELINE_SECONDS) for writer in writers))
    baseline_end = time.monotonic()
    await asyncio.sleep(0.5)
    rss_before = server.rss_bytes()
    sent_before_stall = sum(writer.sent for writer in writers)

    slow.ws.transport.pause_reading()
    queue_samples: list[float] = []

    async def sample_queue() -> None:
        while True:
            samples = await asyncio.to_thread(fetch_metrics, server.http_url)
            queue_samples.append(samples.get("yrelay_send_queue_bytes_max", 0))
            await asyncio.sleep(0.5)

    sampler = asyncio.create_task(sample_queue())
    stall_start = time.monotonic()
    await asyncio.gather(*(writer.write_for(STALL_SECONDS) for writer in writers))
    stall_end = time.monotonic()
    await asyncio.sleep(0.5)
    sampler.cancel()
    rss_after = server.rss_bytes()

    baseline = [lat for w in writers for lat in delivery_latencies(w.client, w.key, baseline_start, baseline_end)]
    stalled = [lat for w in writers for lat in delivery_latencies(w.client, w.key, stall_start, stall_end)]
    print(
        f"fast clients' p99: baseline {p99(baseline) * 1000:.1f} ms, while SLOW stalled "
        f"{p99(stalled) * 1000:.1f} ms; largest queue sampled {max(queue_samples) / 1024:.0f} KiB; "
        f"RSS growth {(rss_after - rss_before) / MIB:.1f} MiB"
    )
    # Each update reaches the eight other fast clients.
    sent_during_stall = sum(writer.sent for writer in writers) - sent_before_stall
    assert len(stalled) == (FAST_CLIENTS - 1) * sent_during_stall
    assert p99(stalled) < P99_LIMIT_SECONDS
    assert max(queue_samples) <= QUEUE_BOUND
    assert rss_after - rss_before < QUEUE_BOUND + RSS_SLACK_BYTES

    slow.ws.transport.resume_reading()
    code, reason = await slow.wait_for_close(timeout=30)
    assert code == 1013, f"SLOW was not closed for its full queue: {code} {reason!r}"
    assert "send queue overflow doc=b19" in server.log_text()

    again = await RawClient.connect(server.url, doc_name)
    await again.send_bytes(STEP1_EMPTY)
    await again.wait_for_step2(timeout=10)
    expected = {writer.key: writer.entries[writer.key] for writer in writers}
    assert dict(again.doc.get("m", type=Map)) == expected
    for client in [*clients, again]:
        await client.close()
