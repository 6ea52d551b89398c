"""Stored size of a document tracks its content, not its edit history.

The relay appends applied updates to the ``updates`` table and compacts a
document's log into one ``snapshots`` row once the log passes
``--compact-updates`` rows (default 500) or ``--compact-bytes`` (default
1 MiB), and on SIGTERM shutdown. Compaction encodes the current state, in
which deleted text is garbage-collected, so churn leaves only tombstones.
These tests read the SQLite file read-only to see what is committed.
"""

from __future__ import annotations

import asyncio
import random
import signal
import sqlite3
import statistics
import string
import time
from pathlib import Path

import pytest
from pycrdt import Text

from tests.support.raw_client import (
    STEP1_EMPTY,
    RawClient,
    doc_text,
    fetch_doc,
    fetch_metrics,
    sync_step1,
    sync_step2,
    sync_update,
)
from tests.support.relay_process import RelayProcess

KIB = 1024
MIB = 1024 * KIB
DEFAULT_COMPACT_UPDATES = 500
# Rows that may be appended while a compaction runs. At 200 edits/s this is
# a quarter of a second of editing.
COMPACTION_SLACK_ROWS = 50
CHURN_ROUNDS = 1000
CHURN_STORED_BYTES_LIMIT = 64 * KIB
EDIT_COUNT = 2000
EDITS_PER_SECOND = 200
REPUSH_RESTARTS = 20
REPUSH_DOC_CHARS = 1 * MIB
# A cold load of the 1 MiB document takes about 10 ms on a 2-core machine, so
# one sample is mostly scheduler noise. Load times are pooled over the first
# three and the last three restarts, with 8 loads each, and the two medians
# are compared.
EARLY_RESTARTS = (1, 2, 3)
LATE_RESTARTS = (REPUSH_RESTARTS - 2, REPUSH_RESTARTS - 1, REPUSH_RESTARTS)
COLD_LOADS_PER_SAMPLED_RESTART = 8


def stored_size(data_dir: Path, doc_name: str) -> tuple[int, int]:
    """Return (bytes, update rows) stored for ``doc_name`` in snapshots and updates.

    Bytes count ``updates.data`` plus ``snapshots.data`` and ``snapshots.state_vector``.
    """
    database = sqlite3.connect(f"file:{data_dir / 'yrelay.sqlite3'}?mode=ro", uri=True)
    try:
        update_bytes, update_rows = database.execute(
            "SELECT COALESCE(SUM(LENGTH(data)), 0), COUNT(*) FROM updates WHERE doc = ?", (doc_name,)
        ).fetchone()
        (snapshot_bytes,) = database.execute(
            "SELECT COALESCE(SUM(LENGTH(data) + COALESCE(LENGTH(state_vector), 0)), 0) FROM snapshots WHERE doc = ?",
            (doc_name,),
        ).fetchone()
    finally:
        database.close()
    return int(update_bytes) + int(snapshot_bytes), int(update_rows)


def metric_total(http_url: str, name: str) -> float:
    """Return the sum of every sample of metric ``name`` on ``/metrics``."""
    samples = fetch_metrics(http_url)
    return sum(value for key, value in samples.items() if key == name or key.startswith(name + "{"))


async def wait_until_applied(client: RawClient, timeout: float = 10.0) -> None:
    """Wait until the relay applied the client's earlier updates (messages are handled in order)."""
    await client.send_bytes(sync_step1(client.doc.get_state()))
    await client.wait_for_step2(timeout)


async def wait_until_unloaded(http_url: str, timeout: float = 10.0) -> None:
    """Wait until ``yrelay_rooms_loaded`` is 0."""
    deadline = time.monotonic() + timeout
    while (loaded := await asyncio.to_thread(metric_total, http_url, "yrelay_rooms_loaded")) != 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{loaded:g} rooms still loaded after {timeout} s")
        await asyncio.sleep(0.02)


async def test_churned_document_compacts_below_64_kib(relay) -> None:
    server: RelayProcess = relay()
    doc_name = "storage/churn"
    paragraph = ("The quick brown fox jumps over the lazy dog. " * 30)[:KIB]
    client = await RawClient.connect(server.url, doc_name)
    await client.sync()
    text = client.doc.get("t", type=Text)

    for _ in range(CHURN_ROUNDS):
        before = client.doc.get_state()
        text.insert(0, paragraph)
        await client.send_bytes(sync_update(client.doc.get_update(before)))
        before = client.doc.get_state()
        del text[0:KIB]
        await client.send_bytes(sync_update(client.doc.get_update(before)))
    await wait_until_applied(client, timeout=30)
    await asyncio.sleep(0.5)
    bytes_while_loaded, rows_while_loaded = await asyncio.to_thread(stored_size, server.data_dir, doc_name)
    await client.close()

    await asyncio.to_thread(server.restart, signal.SIGTERM)
    bytes_after_restart, rows_after_restart = await asyncio.to_thread(stored_size, server.data_dir, doc_name)
    fresh_doc, _ = await fetch_doc(server.url, doc_name)
    print(
        f"\nchurn of {CHURN_ROUNDS} x 1 KiB: {bytes_while_loaded} bytes in {rows_while_loaded} update rows while loaded, "
        f"{bytes_after_restart} bytes in {rows_after_restart} update rows after restart"
    )

    assert doc_text(fresh_doc) == ""
    assert bytes_after_restart <= CHURN_STORED_BYTES_LIMIT


@pytest.mark.slow
async def test_update_rows_stay_bounded_while_editing(relay) -> None:
    server: RelayProcess = relay()
    doc_name = "storage/steady-editing"
    client = await RawClient.connect(server.url, doc_name)
    await client.sync()

    row_samples: list[int] = []
    editing = True

    async def sample_rows() -> None:
        while editing:
            _, rows = await asyncio.to_thread(stored_size, server.data_dir, doc_name)
            row_samples.append(rows)
            await asyncio.sleep(0.05)

    sampler = asyncio.create_task(sample_rows())
    expected = []
    started = time.monotonic()
    for index in range(EDIT_COUNT):
        delay = started + index / EDITS_PER_SECOND - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        piece = string.ascii_lowercase[index % 26]
        await client.edit_text(piece)
        expected.append(piece)
    editing_seconds = time.monotonic() - started
    await wait_until_applied(client, timeout=30)
    await asyncio.sleep(0.5)
    editing = False
    await sampler

    drops = sum(1 for earlier, later in zip(row_samples, row_samples[1:]) if later < earlier)
    fresh_doc, _ = await fetch_doc(server.url, doc_name)
    print(
        f"\n{EDIT_COUNT} edits in {editing_seconds:.1f} s; {len(row_samples)} samples, "
        f"max {max(row_samples)} update rows, {drops} compactions seen"
    )

    assert doc_text(fresh_doc) == "".join(expected)
    assert max(row_samples) <= DEFAULT_COMPACT_UPDATES + COMPACTION_SLACK_ROWS
    await client.close()


async def push_full_state(client: RawClient, timeout: float = 15.0) -> None:
    """Run the handshake of a client that replies to the relay's step 1 with its whole state.

    Some clients send their full state in step 2 whatever state vector the
    relay sent, so each reconnect re-pushes the whole document. A final step 1
    round trip makes sure the relay applied that step 2.
    """
    await client.send_bytes(sync_step1(client.doc.get_state()))
    answered_step1 = False
    got_step2 = False
    deadline = time.monotonic() + timeout
    while not (answered_step1 and got_step2):
        message = await client.recv_message(max(0.0, deadline - time.monotonic()))
        if message.kind == 0 and message.subtype == 0 and not answered_step1:
            await client.send_bytes(sync_step2(client.doc.get_update()))
            answered_step1 = True
        elif message.is_step2:
            got_step2 = True
    await wait_until_applied(client, timeout)


async def timed_cold_load(server: RelayProcess, doc_name: str) -> tuple[float, str]:
    """Return the seconds from connect to the first step 2 of a cold room, and its text."""
    await wait_until_unloaded(server.http_url)
    started = time.monotonic()
    probe = await RawClient.connect(server.url, doc_name)
    await probe.send_bytes(STEP1_EMPTY)
    await probe.wait_for_step2(timeout=15)
    seconds = time.monotonic() - started
    text = doc_text(probe.doc)
    await probe.close()
    return seconds, text


@pytest.mark.slow
async def test_repushed_document_stays_compact_across_restarts(relay) -> None:
    server: RelayProcess = relay("--unload-grace", "0.2")
    doc_name = "storage/repush"
    rng = random.Random(1234)
    content = "".join(rng.choice(string.ascii_letters + " \n") for _ in range(REPUSH_DOC_CHARS))

    client = await RawClient.connect(server.url, doc_name)
    text = client.doc.get("t", type=Text)
    for start in range(0, REPUSH_DOC_CHARS, 64 * KIB):
        text += content[start : start + 64 * KIB]
    doc_bytes = len(client.doc.get_update())
    await push_full_state(client)

    load_samples: dict[int, list[float]] = {}
    bytes_after_restart: list[int] = []
    bytes_after_push: list[int] = []
    for restart in range(1, REPUSH_RESTARTS + 1):
        await asyncio.to_thread(server.restart, signal.SIGTERM)
        await client.wait_for_close(timeout=10)
        stored, _ = await asyncio.to_thread(stored_size, server.data_dir, doc_name)
        bytes_after_restart.append(stored)

        loads = COLD_LOADS_PER_SAMPLED_RESTART if restart in EARLY_RESTARTS + LATE_RESTARTS else 1
        seconds = []
        for _ in range(loads):
            load_seconds, loaded_text = await timed_cold_load(server, doc_name)
            assert loaded_text == content, f"restart {restart}: cold load returned other content"
            seconds.append(load_seconds)
        # The first connection to a newly started process also pays one-time
        # start-up costs unrelated to the stored history, so it is left out.
        load_samples[restart] = seconds[1:] if len(seconds) > 1 else seconds

        reconnected = await RawClient.connect(server.url, doc_name)
        reconnected.doc = client.doc
        client = reconnected
        await push_full_state(client)
        await asyncio.sleep(0.2)
        stored, _ = await asyncio.to_thread(stored_size, server.data_dir, doc_name)
        bytes_after_push.append(stored)

    fresh_doc, _ = await fetch_doc(server.url, doc_name, timeout=15)
    early_median = statistics.median(value for restart in EARLY_RESTARTS for value in load_samples[restart])
    late_median = statistics.median(value for restart in LATE_RESTARTS for value in load_samples[restart])
    medians_ms = [round(statistics.median(values) * 1000, 1) for values in load_samples.values()]
    print(
        f"\ndocument {doc_bytes} bytes; stored after restart max {max(bytes_after_restart)}, "
        f"after re-push max {max(bytes_after_push)}; cold load median restarts {EARLY_RESTARTS} "
        f"{early_median * 1000:.1f} ms, restarts {LATE_RESTARTS} {late_median * 1000:.1f} ms; "
        f"median per restart in ms: {medians_ms}"
    )

    assert doc_text(fresh_doc) == content
    assert doc_text(client.doc) == content
    assert max(bytes_after_restart) <= 2 * doc_bytes
    assert max(bytes_after_push) <= 2 * doc_bytes, "re-pushed state that changes nothing is stored again"
    assert late_median <= 1.5 * early_median
    await client.close()
