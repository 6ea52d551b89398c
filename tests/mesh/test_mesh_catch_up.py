"""A relay that joins after the edits serves the whole document at once.

Opening a room, a relay reads its local store, then the document's whole
JetStream log, then requests what it lacks from the peers that hold the
document. Its first sync step 2 to a client must already contain everything:
y-websocket reports 'synced' on that message.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pycrdt import Doc, Text

from tests.interop.helpers import decode_state_vector_base64
from tests.support.node import run_scenario
from tests.support.raw_client import connect, doc_from_updates, doc_text

from .helpers import mesh_script, read_counters, read_stream, stored_document, wait_until

EDITS_PER_CLIENT = 60
SEED = 77031
DOCS = ("catch-up/first", "catch-up/second")
LONG_LOG_UPDATES = 2000
LONG_LOG_UPDATE_BYTES = 1000


def summary(record: dict[str, Any]) -> dict[str, Any]:
    return {key: record[key] for key in ("stateVector", "text", "map", "array")}


def edit_through(relay_urls: list[str]) -> dict[str, dict[str, Any]]:
    """Edit both documents with Yjs clients on ``relay_urls`` and return each converged summary."""
    result = run_scenario(
        mesh_script("mesh-converge.mjs"), ",".join(relay_urls), *DOCS, 2, EDITS_PER_CLIENT, SEED, timeout=120,
    )
    return {DOCS[0]: summary(result["first"]["clients"][0]), DOCS[1]: summary(result["second"]["clients"][0])}


def read_at_synced(relay_url: str, doc_name: str) -> dict[str, Any]:
    return summary(run_scenario("read-at-synced.mjs", relay_url, doc_name, 10000, timeout=30))


def check_served(relay_url: str, expected: dict[str, dict[str, Any]]) -> None:
    for doc_name, content in expected.items():
        served = read_at_synced(relay_url, doc_name)
        assert served["stateVector"] == content["stateVector"], (
            f"a new client of {doc_name!r} on the late relay held state vector "
            f"{decode_state_vector_base64(served['stateVector'])} at 'synced', expected "
            f"{decode_state_vector_base64(content['stateVector'])}"
        )
        assert served == content, f"a new client of {doc_name!r} on the late relay held other content at 'synced'"


@pytest.mark.slow
def test_late_relay_serves_full_document(mesh_relay) -> None:
    relay_a = mesh_relay("ra")
    relay_b = mesh_relay("rb")
    expected = edit_through([relay_a.url, relay_b.url])

    relay_c = mesh_relay("rc")
    check_served(relay_c.url, expected)

    counters = read_counters(relay_c)
    assert counters.published == 0, (
        f"relay C published {counters.published:.0f} updates while catching up, though its peers lacked nothing"
    )
    assert counters.received_peer > 0, "relay C did not read the documents' logs from the stream"


@pytest.mark.slow
def test_late_relay_reads_stream_alone(mesh_relay) -> None:
    relay_a = mesh_relay("ra")
    relay_b = mesh_relay("rb")
    expected = edit_through([relay_a.url, relay_b.url])
    relay_a.stop()
    relay_b.stop()

    relay_c = mesh_relay("rc")
    check_served(relay_c.url, expected)


@pytest.mark.slow
async def test_late_relay_reads_long_log(mesh_relay) -> None:
    """A relay opening a document with a long log serves it whole in its first step 2.

    The room must wait until the stream delivered the last message it held.
    On the 2-core machine this test was written on, the relay needed about
    3 s to read these 2000 updates, far longer than the 0.5 s it waits for
    peer replies, so that wait alone does not cover the log.
    """
    doc_name = "catch-up/long-log"
    relay_a = mesh_relay("ra")
    writer = await connect(relay_a.url, doc_name)
    await writer.sync()
    parts = [f"{index:05d}".ljust(LONG_LOG_UPDATE_BYTES, "x") for index in range(LONG_LOG_UPDATES)]
    for part in parts:
        await writer.edit_text(part)
    await asyncio.to_thread(
        wait_until,
        lambda: read_counters(relay_a).published == LONG_LOG_UPDATES and read_counters(relay_a).unacknowledged == 0,
        30, lambda: f"relay A did not publish every update: {read_counters(relay_a)}",
    )
    await writer.close()
    relay_a.stop()

    relay_c = mesh_relay("rc")
    reader = await connect(relay_c.url, doc_name)
    first_step2 = await reader.sync(30)
    served = doc_text(doc_from_updates([first_step2.payload]))
    assert len(served) == LONG_LOG_UPDATES * LONG_LOG_UPDATE_BYTES, (
        f"relay C's first step 2 holds {len(served) // LONG_LOG_UPDATE_BYTES} of {LONG_LOG_UPDATES} updates"
    )
    assert served == "".join(parts)
    await reader.close()


def text_of(doc: Doc) -> str:
    return str(doc.get("t", type=Text))


@pytest.mark.slow
async def test_update_missing_from_stream_reaches_late_relay(mesh_relay, nats_server) -> None:
    """An update that only relay A's store contains reaches relay C through the peer request.

    The update is made while NATS is down, so relay A queues it, and relay A
    is killed before NATS returns, so the queue is lost. After the restart
    relay A has the update in SQLite only, and no peer had the document
    when A reopened it, so nobody published it.
    """
    doc_name = "catch-up/offline"
    relay_a = mesh_relay("ra")
    writer = await connect(relay_a.url, doc_name)
    await writer.sync()
    await writer.edit_text("base;")
    await asyncio.to_thread(
        wait_until,
        lambda: read_counters(relay_a).published == 1 and read_counters(relay_a).unacknowledged == 0,
        5, lambda: f"relay A did not publish the first update: {read_counters(relay_a)}",
    )

    nats_server.stop()
    await writer.edit_text("offline;")
    await asyncio.to_thread(
        wait_until,
        lambda: text_of(stored_document(relay_a.database_path, doc_name)) == "base;offline;",
        5, lambda: f"relay A did not store the offline edit: {text_of(stored_document(relay_a.database_path, doc_name))!r}",
    )
    assert read_counters(relay_a).unacknowledged == 1
    relay_a.kill()
    await writer.wait_for_close()

    nats_server.start()
    relay_a.start()
    holder = await connect(relay_a.url, doc_name)
    step2 = await holder.sync(5)
    assert doc_text(doc_from_updates([step2.payload])) == "base;offline;"
    # Relay A asked its peers for the document when it reopened the room;
    # give that request time to end before looking at the stream.
    await asyncio.sleep(1.0)
    logged = Doc()
    for message in await read_stream(nats_server.url, doc_name):
        logged.apply_update(message.data)
    assert text_of(logged) == "base;", f"the stream holds {text_of(logged)!r}: the offline edit reached it after all"

    relay_c = mesh_relay("rc")
    reader = await connect(relay_c.url, doc_name)
    first_step2 = await reader.sync(5)
    assert doc_text(doc_from_updates([first_step2.payload])) == "base;offline;", (
        "relay C's first step 2 lacks the update that only relay A held"
    )
    await reader.close()
    await holder.close()


async def test_restarted_relay_updates_reach_peers(mesh_relay) -> None:
    """Updates a relay accepts after a restart with the same --relay-id reach a running peer.

    Each JetStream message carries a Nats-Msg-Id, and JetStream drops a
    message whose id it saw within its duplicate window, so ids must not
    repeat across restarts of one relay id.
    """
    doc_name = "catch-up/restart"
    relay_a = mesh_relay("ra")
    relay_b = mesh_relay("rb")
    reader = await connect(relay_b.url, doc_name)
    await reader.sync()
    first_writer = await connect(relay_a.url, doc_name)
    await first_writer.sync()
    for index in range(3):
        await first_writer.edit_text(f"before{index};")
    await reader.wait_for_text("before0;before1;before2;", 5)
    await first_writer.close()

    relay_a.restart()
    writer = await connect(relay_a.url, doc_name)
    try:
        step2 = await writer.sync(5)
        writer.doc = doc_from_updates([step2.payload])
        for index in range(3):
            await writer.edit_text(f"after{index};")
        await asyncio.to_thread(
            wait_until,
            lambda: read_counters(relay_a).published == 3 and read_counters(relay_a).unacknowledged == 0,
            5, lambda: f"relay A did not publish the updates made after its restart: {read_counters(relay_a)}",
        )

        logged = await read_stream(relay_a.nats_urls[0], doc_name)
        assert len(logged) == 6, (
            f"the stream holds {len(logged)} messages for 6 acknowledged updates. JetStream drops a message "
            "whose Nats-Msg-Id repeats one stored within its duplicate window, so a relay's ids must not "
            "repeat after a restart"
        )
        await reader.wait_for_text("before0;before1;before2;after0;after1;after2;", 5)
    finally:
        await writer.close()
        await reader.close()
