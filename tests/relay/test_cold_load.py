"""Two clients that open a cold room at nearly the same time.

The relay must reply to a step 1 only after the room is loaded from SQLite,
and must load the room once even when the second client arrives while the first
load is still running. Otherwise the second client gets an empty document, or
the room ends up with two loaded copies.
"""

from __future__ import annotations

import asyncio

import pytest
from pycrdt import Doc, Text

from tests.support.raw_client import (
    STEP1_EMPTY,
    RawClient,
    doc_text,
    fetch_doc,
    fetch_metrics,
    sync_step1,
)
from tests.support.relay_process import RelayProcess

MIB = 1024 * 1024
CONNECT_STAGGER_SECONDS = 0.010


def metric_total(http_url: str, name: str) -> float:
    """Return the sum of every sample of metric ``name`` on ``/metrics``."""
    samples = fetch_metrics(http_url)
    return sum(value for key, value in samples.items() if key == name or key.startswith(name + "{"))


async def persist_document(server: RelayProcess, doc_name: str, padding_bytes: int) -> None:
    """Store Text "t" = "persisted", plus ``padding_bytes`` of Text "pad" to slow the load down.

    A restart with SIGTERM follows, which flushes the room to SQLite.
    """
    writer = await RawClient.connect(server.url, doc_name)
    await writer.edit_text("persisted")
    if padding_bytes:
        before = writer.doc.get_state()
        padding = writer.doc.get("pad", type=Text)
        padding += "p" * padding_bytes
        await writer.send_update(writer.doc.get_update(before))
    # The step 2 reply to the writer's own state vector comes after its updates were applied.
    await writer.send_bytes(sync_step1(writer.doc.get_state()))
    await writer.wait_for_step2(timeout=10)
    await writer.close()


async def open_and_request(server: RelayProcess, doc_name: str, delay: float) -> tuple[RawClient, bytes]:
    """Connect after ``delay`` seconds, send an empty step 1 and return the client and its first step 2."""
    await asyncio.sleep(delay)
    client = await RawClient.connect(server.url, doc_name)
    await client.send_bytes(STEP1_EMPTY)
    step2 = await client.wait_for_step2(timeout=15)
    return client, step2.payload


@pytest.mark.parametrize("padding_bytes", [0, 3 * MIB], ids=["small", "with-3-mib-padding"])
async def test_concurrent_cold_load_happens_once(relay, padding_bytes: int) -> None:
    server: RelayProcess = relay()
    doc_name = "cold/persisted"
    await persist_document(server, doc_name, padding_bytes)

    await asyncio.to_thread(server.restart)
    assert await asyncio.to_thread(metric_total, server.http_url, "yrelay_rooms_loaded") == 0

    (client_a, step2_a), (client_b, step2_b) = await asyncio.gather(
        open_and_request(server, doc_name, 0.0),
        open_and_request(server, doc_name, CONNECT_STAGGER_SECONDS),
    )

    # Each reply alone must hold the whole stored document.
    for name, payload in (("A", step2_a), ("B", step2_b)):
        reply_doc = Doc()
        reply_doc.apply_update(payload)
        reply_text = str(reply_doc.get("t", type=Text))
        assert reply_text.count("persisted") == 1, f"step 2 for {name} has text {reply_text!r}"
        assert reply_text == "persisted", f"step 2 for {name} has text {reply_text!r}"
        assert len(reply_doc.get("pad", type=Text)) == padding_bytes, f"step 2 for {name} lacks the padding"

    await client_a.edit_text("!")
    await client_b.wait_for_text("persisted!", timeout=5)
    fresh_doc, _ = await fetch_doc(server.url, doc_name, timeout=15)

    assert doc_text(client_a.doc) == "persisted!"
    assert doc_text(client_b.doc) == "persisted!"
    assert doc_text(fresh_doc) == "persisted!"
    assert client_a.apply_errors == []
    assert client_b.apply_errors == []
    assert await asyncio.to_thread(metric_total, server.http_url, "yrelay_room_loads_total") == 1

    await client_a.close()
    await client_b.close()
