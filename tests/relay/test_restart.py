"""Restarts of the relay with SIGTERM and SIGKILL, and clients that keep their document.

An offline-first client keeps its Yjs document across a relay restart and
resyncs on reconnect. It sends a step 1 with its state vector and replies to
the relay's step 1 with a step 2 of what the relay lacks. Because the relay
stores the clients' Yjs updates as they are, a resync must not duplicate
text, and the room's state vector must not change across restarts.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import time
from pathlib import Path

from pycrdt import Doc

from sync.codec import Decoder
from tests.support.raw_client import (
    RawClient,
    doc_text,
    fetch_doc,
    sync_step1,
    sync_step2,
)
from tests.support.relay_process import RelayProcess

ROOM_COUNT = 200
# Passed as --shutdown-grace (its default): the longest SIGTERM shutdown may
# wait for rooms to be committed.
SHUTDOWN_GRACE_SECONDS = 10.0
RESTART_CLOSE_CODES = {1012, 1001}
# Once every room is flushed and every client closed, nothing is left to wait for.
PROMPT_EXIT_SECONDS = 2.0


def decode_state_vector(state_vector: bytes) -> dict[int, int]:
    """Decode a Yjs state vector into ``{client ID: clock}``."""
    decoder = Decoder(state_vector)
    entries = {}
    for _ in range(decoder.read_varuint()):
        client = decoder.read_varuint()
        entries[client] = decoder.read_varuint()
    assert decoder.remaining == 0, f"trailing bytes in state vector {state_vector.hex(' ')}"
    return entries


def stored_state_vector(data_dir: Path, doc_name: str) -> bytes | None:
    """Return ``snapshots.state_vector`` of ``doc_name``, read through a read-only connection."""
    database = sqlite3.connect(f"file:{data_dir / 'yrelay.sqlite3'}?mode=ro", uri=True)
    try:
        row = database.execute("SELECT state_vector FROM snapshots WHERE doc = ?", (doc_name,)).fetchone()
    finally:
        database.close()
    return None if row is None else bytes(row[0])


async def connect_with_doc(base_url: str, doc_name: str, doc: Doc) -> RawClient:
    """Connect a client that keeps ``doc``, as an offline-first client does across reconnects."""
    client = await RawClient.connect(base_url, doc_name)
    # The reader task has not run yet, so no message was applied to the fresh document.
    client.doc = doc
    return client


async def resync(client: RawClient, timeout: float = 10.0) -> None:
    """Run the y-websocket handshake of a client that keeps its document.

    The client sends a step 1 with its state vector, replies to the relay's step 1
    with a step 2 of the difference, and applies the relay's step 2 reply. The
    relay may send its step 1 before or after its step 2 reply. A final step 1
    round trip makes sure the relay applied the client's step 2.
    """
    await client.send_bytes(sync_step1(client.doc.get_state()))
    answered_step1 = False
    got_step2 = False
    deadline = time.monotonic() + timeout
    while not (answered_step1 and got_step2):
        message = await client.recv_message(max(0.0, deadline - time.monotonic()))
        if message.kind == 0 and message.subtype == 0 and not answered_step1:
            await client.send_bytes(sync_step2(client.doc.get_update(message.payload)))
            answered_step1 = True
        elif message.is_step2:
            got_step2 = True
    await client.send_bytes(sync_step1(client.doc.get_state()))
    await client.wait_for_step2(timeout)
    assert client.apply_errors == []


async def wait_until_applied(client: RawClient, timeout: float = 10.0) -> None:
    """Wait until the relay applied the client's earlier updates (messages are handled in order)."""
    await client.send_bytes(sync_step1(client.doc.get_state()))
    await client.wait_for_step2(timeout)


async def test_resync_after_sigterm_keeps_text_once(relay) -> None:
    server: RelayProcess = relay()
    doc_name = "restart/hello"
    client = await RawClient.connect(server.url, doc_name)
    await resync(client)
    await client.edit_text("hello")
    await wait_until_applied(client)

    served_vectors = []
    stored_vectors = []
    for restart in range(1, 4):
        await asyncio.to_thread(server.restart, signal.SIGTERM)
        close_code, _ = await client.wait_for_close(timeout=10)
        assert close_code in RESTART_CLOSE_CODES, f"restart {restart}: close code {close_code}"

        client = await connect_with_doc(server.url, doc_name, client.doc)
        await resync(client)
        fresh_doc, _ = await fetch_doc(server.url, doc_name)

        assert doc_text(client.doc) == "hello", f"restart {restart}: client text {doc_text(client.doc)!r}"
        assert doc_text(fresh_doc) == "hello", f"restart {restart}: fresh client text {doc_text(fresh_doc)!r}"
        served_vectors.append(decode_state_vector(fresh_doc.get_state()))
        stored = await asyncio.to_thread(stored_state_vector, server.data_dir, doc_name)
        assert stored is not None, f"restart {restart}: no snapshot row after a SIGTERM shutdown"
        stored_vectors.append(decode_state_vector(stored))

    assert served_vectors[0] == decode_state_vector(client.doc.get_state())
    assert served_vectors[1] == served_vectors[0]
    assert served_vectors[2] == served_vectors[0]
    assert stored_vectors[0] == served_vectors[0]
    assert stored_vectors[1] == stored_vectors[0]
    assert stored_vectors[2] == stored_vectors[0]
    await client.close()


async def test_sigterm_flushes_200_dirty_rooms(relay) -> None:
    server: RelayProcess = relay("--shutdown-grace", str(SHUTDOWN_GRACE_SECONDS))
    names = [f"restart/flush-{index}" for index in range(ROOM_COUNT)]
    clients = await asyncio.gather(*(RawClient.connect(server.url, name) for name in names))
    await asyncio.gather(*(client.sync(timeout=15) for client in clients))

    await asyncio.gather(*(client.edit_text(f"update {index}") for index, client in enumerate(clients)))
    await asyncio.sleep(0.100)
    process = server.proc
    assert process is not None
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    # The relay sends 1012 only after every room is flushed, so the last close marks the end of the flush.
    closes = await asyncio.gather(*(client.wait_for_close(timeout=SHUTDOWN_GRACE_SECONDS + 5) for client in clients))
    flush_seconds = time.monotonic() - started
    exit_code = await asyncio.to_thread(process.wait, 60)
    exit_seconds = time.monotonic() - started
    server.stop()
    shutdown_log = server.log_text().split("shutting down", 1)[-1]
    print(
        f"\nSIGTERM with {ROOM_COUNT} dirty rooms: last client closed after {flush_seconds:.2f} s, "
        f"process exited after {exit_seconds:.2f} s with code {exit_code}"
    )

    await asyncio.to_thread(server.start)
    texts = []
    for name in names:
        fresh_doc, _ = await fetch_doc(server.url, name)
        texts.append(doc_text(fresh_doc))
    missing = {names[index]: text for index, text in enumerate(texts) if text != f"update {index}"}
    assert missing == {}, f"{len(missing)} of {ROOM_COUNT} rooms lost their update"

    close_codes = [code for code, _ in closes]
    wrong_codes = {names[index]: code for index, code in enumerate(close_codes) if code not in RESTART_CLOSE_CODES}
    assert wrong_codes == {}, f"{len(wrong_codes)} clients got another close code than 1012 or 1001"
    assert exit_code == 0
    assert flush_seconds <= SHUTDOWN_GRACE_SECONDS
    assert exit_seconds <= SHUTDOWN_GRACE_SECONDS + 1.0
    assert exit_seconds <= flush_seconds + PROMPT_EXIT_SECONDS, "the process idled after every client was closed"
    assert "Traceback" not in shutdown_log


async def test_update_is_committed_before_sigkill(relay) -> None:
    """An update is in SQLite 50 ms after its broadcast, without help from the client."""
    server: RelayProcess = relay()
    doc_name = "restart/committed"
    writer = await RawClient.connect(server.url, doc_name)
    await writer.sync()
    observer = await RawClient.connect(server.url, doc_name)
    await observer.sync()

    await writer.edit_text("committed")
    await observer.wait_for_text("committed", timeout=5)
    await asyncio.sleep(0.050)
    await asyncio.to_thread(server.kill)
    await asyncio.to_thread(server.start)
    fresh_doc, _ = await fetch_doc(server.url, doc_name)

    assert doc_text(fresh_doc) == "committed"


async def test_resync_after_sigkill_keeps_update_once(relay) -> None:
    server: RelayProcess = relay()
    doc_name = "restart/crash"
    writer = await RawClient.connect(server.url, doc_name)
    await resync(writer)
    observer = await RawClient.connect(server.url, doc_name)
    await observer.sync()

    await writer.edit_text("survives a crash")
    await observer.wait_for_text("survives a crash", timeout=5)
    await asyncio.sleep(0.050)
    await asyncio.to_thread(server.kill)
    close_code, _ = await writer.wait_for_close(timeout=10)
    assert close_code == 1006, "a killed relay cannot send a close frame"

    await asyncio.to_thread(server.start)
    writer = await connect_with_doc(server.url, doc_name, writer.doc)
    await resync(writer)
    fresh_doc, _ = await fetch_doc(server.url, doc_name)

    assert doc_text(writer.doc) == "survives a crash"
    assert doc_text(fresh_doc) == "survives a crash"
    assert decode_state_vector(fresh_doc.get_state()) == decode_state_vector(writer.doc.get_state())
    await writer.close()
