"""Bad input from one connection: its close code, and that nothing else in the relay notices.

Every case runs the same scenario in its own room on a fresh relay:

1. Writer W and bystander B join the room and W writes "hi" (client 1).
2. Client X sends the bad frame and must get the close code the relay
   documents, within 1 s, with at most 64 MiB of peak memory growth.
3. Client C writes Map "m" key "k" = "v" (client 2), and B must receive it
   within 1 s.
4. A fresh connection must get a sync step 2 for an empty step 1 holding
   exactly text "hi" and map {"k": "v"}.
5. The log contains exactly one INFO line for X's close naming the document and
   the connection id, and no traceback.
6. The bad bytes are neither relayed to B nor stored in the SQLite file.
"""

from __future__ import annotations

import asyncio
import re
import signal
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from pycrdt import Doc, Text
from websockets.exceptions import ConnectionClosed

from sync.codec import Decoder
from tests.support.raw_client import (
    MESSAGE_AUTH,
    STEP1_EMPTY,
    UPDATE_INSERT_HI,
    UPDATE_MAP_K_V,
    RawClient,
    doc_from_updates,
    doc_map,
    doc_text,
    fetch_doc,
    sync_update,
)
from tests.support.relay_process import RelayProcess

pytestmark = pytest.mark.asyncio

MIB = 1024 * 1024
# Peak resident memory the relay may gain while rejecting one bad frame.
MAX_PEAK_RSS_GROWTH = 64 * MIB
# A bad frame must be rejected within this many seconds of wall-clock time.
MAX_REJECT_SECONDS = 1.0
# Bad bytes shorter than this also occur inside valid messages, so they are not searched for.
MIN_SEARCHABLE_BYTES = 4


@dataclass(frozen=True)
class BadFrame:
    """A frame that makes the relay close the connection with ``close_code``."""

    name: str
    frame: bytes | str
    close_code: int
    # The inner bytes (an update, state vector or awareness payload) to look for in storage and relayed frames.
    payload: bytes = b""


BAD_FRAMES = [
    BadFrame("text_frame_backtick", "..`", 1003),
    BadFrame("text_frame_large_number", "4294967297", 1003),
    BadFrame("outer_type_varuint_71_bits", bytes.fromhex("ff ff ff ff ff ff ff ff ff ff 01"), 1002),
    BadFrame("unknown_outer_type", bytes.fromhex("07"), 1002),
    BadFrame("unknown_sync_subtype", bytes.fromhex("00 09 00"), 1002),
    BadFrame("sync_without_subtype", bytes.fromhex("00"), 1002),
    BadFrame("sync_subtype_varuint_71_bits", bytes.fromhex("00 ff ff ff ff ff ff ff ff ff ff 01"), 1002),
    BadFrame("update_length_varuint_71_bits", bytes.fromhex("00 02 ff ff ff ff ff ff ff ff ff ff 01"), 1002),
    BadFrame("update_truncated", bytes.fromhex("00 02 0c 01 01 07 00 04 01"), 1002),
    BadFrame("update_trailing_bytes", bytes.fromhex("00 02 02 00 00 ff"), 1002),
    BadFrame("query_awareness_trailing_bytes", bytes.fromhex("03 00"), 1002),
    BadFrame("awareness_without_payload", bytes.fromhex("01"), 1002),
    BadFrame(
        "awareness_state_not_json",
        bytes.fromhex("01 07 01 e9 07 01 02 7b 7b"),
        1007,
        payload=bytes.fromhex("01 e9 07 01 02 7b 7b"),
    ),
    BadFrame(
        "awareness_state_not_utf8",
        bytes.fromhex("01 06 01 01 01 02 ff fe"),
        1007,
        payload=bytes.fromhex("01 01 01 02 ff fe"),
    ),
    BadFrame(
        "awareness_huge_count",
        bytes.fromhex("01 05 ff ff ff ff 0f"),
        1007,
        payload=bytes.fromhex("ff ff ff ff 0f"),
    ),
    BadFrame("awareness_entry_truncated", bytes.fromhex("01 03 01 e9 07"), 1007),
    BadFrame("update_zero_length", bytes.fromhex("00 02 00"), 1007),
    BadFrame(
        "update_all_continuation_bytes",
        bytes.fromhex("00 02 04 c8 c8 c8 c8"),
        1007,
        payload=bytes.fromhex("c8 c8 c8 c8"),
    ),
    BadFrame(
        "update_struct_count_71_bits",
        bytes.fromhex("00 02 0b ff ff ff ff ff ff ff ff ff ff 01"),
        1007,
        payload=bytes.fromhex("ff ff ff ff ff ff ff ff ff ff 01"),
    ),
    BadFrame(
        "step2_ascii_garbage",
        bytes.fromhex("00 01 0a") + b"garbagedoc",
        1007,
        payload=b"garbagedoc",
    ),
    BadFrame("step1_truncated_state_vector", bytes.fromhex("00 00 03 c8 c8 c8"), 1007),
    BadFrame(
        "update_string_length_past_end",
        bytes.fromhex("00 02 0c 01 01 01 00 04 01 01 74 ff 68 69 00"),
        1007,
        payload=bytes.fromhex("01 01 01 00 04 01 01 74 ff 68 69 00"),
    ),
    BadFrame(
        "update_claims_268m_clients",
        bytes.fromhex("00 02 04 ff ff ff 7f"),
        1007,
        payload=bytes.fromhex("ff ff ff 7f"),
    ),
    # Client 6 inserts "x" with parent item (1, 0), a string item of "hi" and not a
    # shared type. It parses, and pycrdt 0.14 raises RuntimeError when applying it.
    BadFrame(
        "update_parent_is_string_item",
        bytes.fromhex("00 02 0b 01 01 06 00 04 00 01 00 01 78 00"),
        1007,
        payload=bytes.fromhex("01 01 06 00 04 00 01 00 01 78 00"),
    ),
]

# Frames the relay must accept: the connection stays open and can still sync.
WELL_FORMED_FRAMES = {
    "auth_from_client": bytes.fromhex("02 00 01 78"),
    "query_awareness_empty_room": bytes.fromhex("03"),
    "empty_update": bytes.fromhex("00 02 02 00 00"),
    "empty_step2": bytes.fromhex("00 01 02 00 00"),
    "empty_awareness": bytes.fromhex("01 01 00"),
    "step1_known_state_vector": bytes.fromhex("00 00 03 01 01 02"),
}


# Helpers.


def decode_state_vector(state_vector: bytes) -> dict[int, int]:
    """Decode a Yjs v1 state vector into ``{client: clock}``."""
    decoder = Decoder(state_vector)
    return {decoder.read_varuint(): decoder.read_varuint() for _ in range(decoder.read_varuint())}


def peak_rss_bytes(relay: RelayProcess) -> int:
    """Return the relay's peak resident set size (``VmHWM``) from /proc."""
    assert relay.proc is not None
    with open(f"/proc/{relay.proc.pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("VmHWM not found")


def doc_pattern(doc_name: str) -> re.Pattern[str]:
    """Match ``doc=<name>`` in a log line, with or without quotes around the name."""
    return re.compile(rf"\bdoc=(['\"]?){re.escape(doc_name)}\1(?=[\s,;)]|$)")


def close_log_lines(log: str, doc_name: str, close_code: int) -> list[str]:
    """Return the log lines that name ``doc_name``, a connection id and ``close_code``."""
    pattern = doc_pattern(doc_name)
    code_pattern = re.compile(rf"\b{close_code}\b")
    return [
        line
        for line in log.splitlines()
        if pattern.search(line) and "conn=" in line and code_pattern.search(line)
    ]


async def wait_for_close_log_line(relay: RelayProcess, doc_name: str, close_code: int, timeout: float = 2.0) -> list[str]:
    deadline = time.monotonic() + timeout
    lines = close_log_lines(relay.log_text(), doc_name, close_code)
    while not lines and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        lines = close_log_lines(relay.log_text(), doc_name, close_code)
    return lines


def read_store(relay: RelayProcess) -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes, bytes]]]:
    """Read every update row and snapshot row from the relay's SQLite file, opened read-only."""
    path = relay.data_dir / "yrelay.sqlite3"
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        updates = connection.execute("SELECT doc, data FROM updates ORDER BY seq").fetchall()
        snapshots = connection.execute("SELECT doc, data, state_vector FROM snapshots").fetchall()
    finally:
        connection.close()
    return updates, snapshots


def stored_doc(relay: RelayProcess, doc_name: str) -> Doc:
    """Rebuild ``doc_name`` from its snapshot and the update rows after it."""
    updates, snapshots = read_store(relay)
    blobs = [data for doc, data, _ in snapshots if doc == doc_name]
    blobs += [data for doc, data in updates if doc == doc_name]
    return doc_from_updates(blobs)


async def wait_for_stored_map(relay: RelayProcess, doc_name: str, expected: dict, timeout: float = 3.0) -> Doc:
    deadline = time.monotonic() + timeout
    while True:
        doc = stored_doc(relay, doc_name)
        if doc_map(doc) == expected or time.monotonic() > deadline:
            return doc
        await asyncio.sleep(0.05)


async def wait_for_stored_text(relay: RelayProcess, doc_name: str, expected: str, timeout: float = 3.0) -> Doc:
    deadline = time.monotonic() + timeout
    while True:
        doc = stored_doc(relay, doc_name)
        if doc_text(doc) == expected or time.monotonic() > deadline:
            return doc
        await asyncio.sleep(0.05)


async def wait_for_close_or_fail(client: RawClient, timeout: float, case: str) -> tuple[int | None, str | None]:
    try:
        return await client.wait_for_close(timeout)
    except TimeoutError:
        close_frame = client.close_frame_received
        if close_frame is None:
            pytest.fail(f"{case}: no close frame within {timeout} s")
        pytest.fail(f"{case}: close frame {close_frame} arrived, but the TCP connection stayed open for {timeout} s")


def searchable_pieces(bad: BadFrame) -> list[bytes]:
    frame = bad.frame.encode() if isinstance(bad.frame, str) else bad.frame
    return [piece for piece in (frame, bad.payload) if len(piece) >= MIN_SEARCHABLE_BYTES]


# Scenario.


@dataclass
class Room:
    """A room where W has written "hi" and B has received it."""

    relay: RelayProcess
    doc_name: str
    writer: RawClient
    bystander: RawClient

    @classmethod
    async def open(cls, relay: RelayProcess, doc_name: str) -> Room:
        writer = await RawClient.connect(relay.url, doc_name)
        bystander = await RawClient.connect(relay.url, doc_name)
        await writer.sync()
        await bystander.sync()
        await writer.send_update(UPDATE_INSERT_HI)
        await bystander.wait_for_text("hi", timeout=2.0)
        return cls(relay, doc_name, writer, bystander)

    async def check_unaffected(self) -> None:
        """Check that B still receives a valid edit within 1 s and a new client gets the right state."""
        assert self.relay.is_running(), "relay process exited"

        third = await RawClient.connect(self.relay.url, self.doc_name)
        await third.send_bytes(sync_update(UPDATE_MAP_K_V))
        await self.bystander.wait_for_map({"k": "v"}, timeout=1.0)
        assert doc_text(self.bystander.doc) == "hi"
        assert self.bystander.apply_errors == []
        await third.close()

        fresh_doc, step2 = await fetch_doc(self.relay.url, self.doc_name, timeout=2.0)
        assert step2.is_step2
        assert doc_text(fresh_doc) == "hi"
        assert doc_map(fresh_doc) == {"k": "v"}
        assert decode_state_vector(fresh_doc.get_state()) == {1: 2, 2: 1}

    async def check_not_stored_or_relayed(self, pieces: list[bytes]) -> None:
        """Check that B never received ``pieces`` and that the store contains exactly "hi" and the map."""
        relayed_updates = [message for message in self.bystander.messages() if message.is_update]
        assert len(relayed_updates) == 2, f"bystander got {len(relayed_updates)} updates, expected the text and the map"
        for frame in self.bystander.frames():
            for piece in pieces:
                assert piece not in frame, f"bystander received bad bytes {piece.hex(' ')} in {frame[:64].hex(' ')}"

        doc = await wait_for_stored_map(self.relay, self.doc_name, {"k": "v"})
        assert doc_text(doc) == "hi"
        assert doc_map(doc) == {"k": "v"}
        assert decode_state_vector(doc.get_state()) == {1: 2, 2: 1}

        updates, snapshots = read_store(self.relay)
        rows = [data for _, data in updates] + [blob for _, data, vector in snapshots for blob in (data, vector)]
        for row in rows:
            for piece in pieces:
                assert piece not in row, f"stored row contains bad bytes {piece.hex(' ')}"

    async def close(self) -> None:
        await self.writer.close()
        await self.bystander.close()


async def run_bad_frame(relay: RelayProcess, bad: BadFrame) -> None:
    doc_name = f"bad-{bad.name}"
    room = await Room.open(relay, doc_name)
    peak_before = peak_rss_bytes(relay)

    offender = await RawClient.connect(relay.url, doc_name)
    started = time.monotonic()
    if isinstance(bad.frame, str):
        await offender.send_text(bad.frame)
    else:
        await offender.send_bytes(bad.frame)
    code, reason = await wait_for_close_or_fail(offender, 3.0, bad.name)
    elapsed = time.monotonic() - started

    assert code == bad.close_code, f"close code {code} reason {reason!r}, expected {bad.close_code}"
    assert elapsed < MAX_REJECT_SECONDS, f"rejecting took {elapsed:.2f} s"
    assert peak_rss_bytes(relay) - peak_before < MAX_PEAK_RSS_GROWTH

    await room.check_unaffected()

    lines = await wait_for_close_log_line(relay, doc_name, bad.close_code)
    assert len(lines) == 1, f"expected one close line for doc={doc_name}, found {lines}"
    assert "INFO" in lines[0]
    assert re.search(r"\bconn=\S+", lines[0])
    assert "Traceback" not in relay.log_text()

    await room.check_not_stored_or_relayed(searchable_pieces(bad))
    await room.close()


# Tests.


@pytest.fixture(scope="module")
def shared_relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    """One relay for the cases that each use their own room, to save a start and stop per case."""
    process = RelayProcess(tmp_path_factory.mktemp("bad-input") / "data").start()
    yield process
    process.stop(signal.SIGTERM)


@pytest.mark.parametrize("bad", BAD_FRAMES, ids=[bad.name for bad in BAD_FRAMES])
async def test_bad_frame_closes_only_offender(shared_relay: RelayProcess, bad: BadFrame) -> None:
    await run_bad_frame(shared_relay, bad)


@pytest.mark.parametrize("name", WELL_FORMED_FRAMES.keys())
async def test_well_formed_frame_keeps_connection(shared_relay: RelayProcess, name: str) -> None:
    process = shared_relay
    frame = WELL_FORMED_FRAMES[name]
    doc_name = f"well-formed-{name}"
    room = await Room.open(process, doc_name)

    client = await RawClient.connect(process.url, doc_name)
    await client.send_bytes(frame)
    if frame[:2] == STEP1_EMPTY[:2]:
        await client.wait_for_step2(timeout=2.0)
    if frame[0] == MESSAGE_AUTH:
        reply = await client.wait_for(lambda message: message.kind == MESSAGE_AUTH, timeout=1.0)
        assert reply.subtype == 0
        assert reply.reason
    step2 = await client.sync(timeout=2.0)

    assert client.is_open
    assert doc_text(doc_from_updates([step2.payload])) == "hi"
    await room.check_unaffected()
    await room.check_not_stored_or_relayed([])
    assert "Traceback" not in process.log_text()
    assert client.is_open
    await client.close()
    await room.close()


async def test_oversized_frame_closes_with_1009(relay) -> None:
    process = relay("--max-message-size", str(1 * MIB))
    doc_name = "oversized"
    room = await Room.open(process, doc_name)

    big = Doc()
    big.get("t", type=Text).insert(0, "a" * (2 * MIB))
    payload = big.get_update()
    offender = await RawClient.connect(process.url, doc_name)
    try:
        await offender.send_bytes(sync_update(payload))
    except ConnectionClosed:
        pass
    code, reason = await wait_for_close_or_fail(offender, 5.0, "2 MiB frame with --max-message-size 1 MiB")

    assert code == 1009, f"close code {code} reason {reason!r}"
    await room.check_unaffected()
    lines = await wait_for_close_log_line(process, doc_name, 1009)
    assert len(lines) == 1, f"expected one close line for doc={doc_name}, found {lines}"
    assert "INFO" in lines[0]
    assert "Traceback" not in process.log_text()
    await room.check_not_stored_or_relayed([payload[:64], payload[-64:]])
    await room.close()


async def test_ten_mib_update_is_broadcast(relay) -> None:
    process = relay()
    doc_name = "ten-mib"
    writer = await RawClient.connect(process.url, doc_name)
    reader = await RawClient.connect(process.url, doc_name)
    await writer.sync()
    await reader.sync()

    big = Doc()
    big.get("t", type=Text).insert(0, "a" * (10 * MIB))
    payload = big.get_update()
    assert len(payload) > 10 * MIB
    await writer.send_bytes(sync_update(payload))

    update = await reader.wait_for(lambda message: message.is_update, timeout=20.0)
    assert len(doc_text(doc_from_updates([update.payload]))) == 10 * MIB
    assert writer.is_open
    assert reader.is_open

    fresh = await RawClient.connect(process.url, doc_name)
    await fresh.send_bytes(STEP1_EMPTY)
    await fresh.wait_for_text("a" * (10 * MIB), timeout=20.0)
    assert fresh.apply_errors == []
    assert "Traceback" not in process.log_text()
    for client in (writer, reader, fresh):
        await client.close()


async def test_bad_frames_leave_other_room_working(relay) -> None:
    process = relay()
    sender = await RawClient.connect(process.url, "other-room")
    receiver = await RawClient.connect(process.url, "other-room")
    await sender.sync()
    await receiver.sync()
    # The update whose parent is the string item (1, 0) is only invalid once "hi" exists.
    bad_room_writer = await RawClient.connect(process.url, "bad-room")
    await bad_room_writer.send_update(UPDATE_INSERT_HI)
    await bad_room_writer.sync()

    expected = ""
    for index, bad in enumerate(BAD_FRAMES):
        offender = await RawClient.connect(process.url, "bad-room")
        if isinstance(bad.frame, str):
            await offender.send_text(bad.frame)
        else:
            await offender.send_bytes(bad.frame)
        code, _ = await wait_for_close_or_fail(offender, 3.0, bad.name)
        assert code == bad.close_code, f"{bad.name}: close code {code}"

        expected += str(index % 10)
        await sender.edit_text(str(index % 10))
        await receiver.wait_for_text(expected, timeout=1.0)

    assert sender.is_open
    assert receiver.is_open
    assert bad_room_writer.is_open
    assert "Traceback" not in process.log_text()
    for client in (sender, receiver, bad_room_writer):
        await client.close()


async def test_pending_invalid_update_does_not_block_writer(shared_relay: RelayProcess) -> None:
    """An invalid update that waits for a missing item must not make that item's update fail later.

    The update of client 6 names item (1, 0) as its parent. While (1, 0) is
    missing, pycrdt keeps the update pending and raises only when "hi" arrives
    and (1, 0) turns out to be a string item.
    """
    process = shared_relay
    doc_name = "pending-invalid-update"
    bystander = await RawClient.connect(process.url, doc_name)
    await bystander.sync()
    offender = await RawClient.connect(process.url, doc_name)
    await offender.send_bytes(bytes.fromhex("00 02 0b 01 01 06 00 04 00 01 00 01 78 00"))
    await offender.sync()

    writer = await RawClient.connect(process.url, doc_name)
    await writer.sync()
    await writer.send_update(UPDATE_INSERT_HI)

    try:
        await bystander.wait_for_text("hi", timeout=1.0)
    except TimeoutError:
        pass
    assert writer.is_open, f"writer closed with {writer.ws.close_code} {writer.ws.close_reason!r}"
    assert doc_text(bystander.doc) == "hi"
    fresh_doc, _ = await fetch_doc(process.url, doc_name)
    assert doc_text(fresh_doc) == "hi"
    stored = await wait_for_stored_text(process, doc_name, "hi")
    assert doc_text(stored) == "hi"
    assert 6 not in decode_state_vector(stored.get_state())
    assert "Traceback" not in process.log_text()
    for client in (bystander, offender, writer):
        if client.is_open:
            await client.close()
