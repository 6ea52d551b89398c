"""Cold-load time of a large real document from each storage backend.

Replays the automerge-paper editing trace into a document, stores it
through a relay backed by SQLite, by MongoDB (mongod or FerretDB), and by
MongoDB with the Redis cache, and then measures, after each relay restart,
the time from opening a WebSocket to receiving the complete sync step 2.
All backends run in the same process tree, one after the other, so their
ratios are comparable.

    .venv/bin/python -m bench.cold_load [--loads 5]

Needs redis-server and a MongoDB-compatible server
(scripts/install-test-servers.sh installs both).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

import websockets
from pycrdt import Doc, Text

from sync.messages import SyncStep2, encode_sync_step1, parse_message
from tests.support.mongo_server import MongoServer
from tests.support.redis_server import RedisServer
from tests.support.relay_process import RelayProcess
from tests.support.settings import traces_dir

DOC_NAME = "bench/automerge-paper"


def trace_document() -> tuple[bytes, str]:
    """Replay the automerge-paper trace into one pycrdt Text (ASCII, so byte = char)."""
    trace = json.loads(gzip.decompress((traces_dir() / "sequential/automerge-paper.json.gz").read_bytes()))
    doc = Doc()
    text = doc.get("t", type=Text)
    txns = trace["txns"]
    for start in range(0, len(txns), 5000):
        with doc.transaction():
            for txn in txns[start : start + 5000]:
                for position, deleted, inserted in txn["patches"]:
                    if deleted:
                        del text[position : position + deleted]
                    if inserted:
                        text.insert(position, inserted)
    assert str(text) == trace["endContent"]
    return doc.get_update(), trace["endContent"]


async def first_step2_seconds(url: str, expected_length: int) -> float:
    started = time.perf_counter()
    async with websockets.connect(f"{url}/{DOC_NAME}", compression=None, max_size=None) as socket:
        await socket.send(encode_sync_step1(b"\x00"))
        while True:
            message = parse_message(await socket.recv())
            if isinstance(message, SyncStep2):
                elapsed = time.perf_counter() - started
                doc = Doc()
                doc.apply_update(message.update)
                if len(str(doc.get("t", type=Text))) != expected_length:
                    raise RuntimeError("cold load returned an incomplete document")
                return elapsed


def measure(relay: RelayProcess, state: bytes, text: str, loads: int) -> list[float]:
    request = urllib.request.Request(f"{relay.http_url}/docs/{DOC_NAME}", data=state, method="POST")
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.status == 204
    times = []
    for _ in range(loads):
        # SIGTERM folds the log into a snapshot, so each start is a cold load
        # of one snapshot (and, with Redis, a cache hit).
        relay.restart()
        times.append(asyncio.run(first_step2_seconds(relay.url, len(text))))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loads", type=int, default=5, help="cold loads per backend (default %(default)s)")
    args = parser.parse_args()
    state, text = trace_document()
    print(f"automerge-paper: {len(text):,} characters, state {len(state):,} bytes; {args.loads} cold loads each")
    base = Path(tempfile.mkdtemp(prefix="yrelay-cold-"))
    mongo = MongoServer(base / "mongo").start()
    cache = RedisServer(base / "redis").start()
    backends = {
        "sqlite": [],
        f"mongodb ({mongo.kind})": ["--mongodb", mongo.url, "--mongodb-database", "cold"],
        "mongodb + redis": ["--mongodb", mongo.url, "--mongodb-database", "cold_cached", "--redis", cache.url],
    }
    results = {}
    try:
        for label, options in backends.items():
            relay = RelayProcess(base / label.split()[0].replace("+", ""), [*options, "--log-level", "warning"])
            relay.start()
            try:
                results[label] = measure(relay, state, text, args.loads)
            finally:
                relay.stop()
    finally:
        cache.stop()
        mongo.stop()
    baseline = statistics.median(results["sqlite"])
    print(f"{'backend':<22} {'median ms':>10} {'min ms':>8} {'max ms':>8} {'vs sqlite':>10}")
    for label, times in results.items():
        median = statistics.median(times)
        print(f"{label:<22} {median * 1000:>10.1f} {min(times) * 1000:>8.1f} {max(times) * 1000:>8.1f} "
              f"{median / baseline:>9.2f}x")


if __name__ == "__main__":
    main()
