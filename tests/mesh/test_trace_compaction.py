"""The automerge-paper trace through a mesh relay ends as one compact MongoDB snapshot."""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from pathlib import Path

import pytest
from pycrdt import Doc, Text

from tests.mesh.helpers import read_stream
from tests.mesh.test_compactor import snapshot_of
from tests.support.mongo_server import MongoServer
from tests.support.node import run_scenario
from tests.support.settings import trace_file

TRACE = "sequential/automerge-paper.json.gz"
# Consecutive trace txns per Yjs transaction, to keep the stream at about
# 13,000 messages; keystroke by keystroke is covered by the interop test.
TXNS_PER_TRANSACTION = 20


@pytest.mark.slow
async def test_trace_compacts_to_yjs_size(mesh_relay, nats_server, tmp_path: Path) -> None:
    trace_path = trace_file(TRACE)
    with gzip.open(trace_path, "rt", encoding="utf-8") as trace_stream:
        end_content = json.load(trace_stream)["endContent"]
    mongo = MongoServer(tmp_path / "mongo").start()
    try:
        relay = mesh_relay("tr", "--mongodb", mongo.url, "--mongodb-database", "trace")
        doc_name = "traces/automerge-paper"
        started = time.monotonic()
        replay = run_scenario(
            "trace-replay.mjs", relay.url, doc_name, trace_path, TXNS_PER_TRANSACTION, 600_000, timeout=720
        )
        assert replay["observerText"] == end_content

        deadline = time.monotonic() + 120
        while True:
            snapshot = snapshot_of(mongo, "trace", doc_name)
            text = ""
            if snapshot is not None:
                doc = Doc()
                doc.apply_update(snapshot["data"])
                text = str(doc.get("text", type=Text))
            if text == end_content and not await read_stream(nats_server.url, doc_name):
                break
            assert time.monotonic() < deadline, f"not compacted within 120 s ({len(text)} of {len(end_content)})"
            await asyncio.sleep(0.5)
        elapsed = time.monotonic() - started
        stored, reference = len(snapshot["data"]), replay["encodedStateBytes"]
        print(f"\nreplay + compaction {elapsed:.1f} s; snapshot {stored:,} bytes, "
              f"Yjs encodeStateAsUpdate {reference:,} bytes ({stored / reference:.3f}x)")
        assert abs(stored - reference) <= 0.10 * reference, (stored, reference)
    finally:
        mongo.stop()
