"""Large documents: a slow reader of a 40 MiB room, a 10 MiB update, a 200 MiB update.

A y-websocket client closes and reconnects when no complete message arrives
for 30 s (``messageReconnectTimeout`` in y-websocket). A client on a slow link
can therefore only open a big document if the relay splits its sync step 2
reply into messages below ``--sync-chunk-bytes`` (default 4 MiB). The relay
must also close a frame above ``--max-message-size`` (default 32 MiB) with
1009 while reading it, not after buffering it whole.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
import threading
import time
import urllib.request
from dataclasses import dataclass

import pytest
from pycrdt import Doc, Text
from websockets.frames import apply_mask

from tests.support.raw_client import (
    STEP1_EMPTY,
    UPDATE_INSERT_HI,
    RawClient,
    doc_text,
    fetch_doc,
    fetch_metrics,
    sync_step1,
    sync_step2,
    sync_update,
)
from tests.support.relay_process import RelayProcess
from tests.support.throttle_proxy import ThrottleProxy

MIB = 1024 * 1024
SEED_UPDATES = 40
SEED_TEXT_LENGTH = SEED_UPDATES * MIB  # 41,943,040 characters of "a"
SLOW_LINK_BYTES_PER_SECOND = MIB
STOCK_CLIENT_RECONNECT_SECONDS = 30.0
SLOW_READER_DEADLINE_SECONDS = 90.0
DEFAULT_SYNC_CHUNK_BYTES = 4 * MIB
# Outer type, sync sub-type and the varUint length prefix of a step 2 or
# update message take at most 12 bytes; 64 leaves room for framing choices.
MESSAGE_OVERHEAD_BYTES = 64
DEFAULT_MAX_MESSAGE_SIZE = 32 * MIB
HUGE_UPDATE_TEXT_LENGTH = 200 * MIB
# Client ID of the hand-built 200 MiB update; no other writer in the test uses it.
HUGE_UPDATE_CLIENT = 7


def encode_varuint(value: int) -> bytes:
    """Encode a non-negative integer as a lib0 varUint (LEB128)."""
    out = bytearray()
    while value > 0x7F:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.append(value)
    return bytes(out)


def metric_total(http_url: str, name: str) -> float:
    """Return the sum of every sample of metric ``name`` on ``/metrics``."""
    samples = fetch_metrics(http_url)
    return sum(value for key, value in samples.items() if key == name or key.startswith(name + "{"))


def text_length(client: RawClient) -> int:
    return len(client.doc.get("t", type=Text))


async def wait_until_applied(client: RawClient, timeout: float) -> None:
    """Wait until the relay has applied every update ``client`` sent before.

    The relay handles the messages of one connection in order, so its step 2
    reply to a step 1 that carries the client's own state vector arrives only
    after the earlier updates were applied.
    """
    await client.send_bytes(sync_step1(client.doc.get_state()))
    await client.wait_for_step2(timeout)


async def read_whole_text(base_url: str, doc_name: str, expected_length: int, timeout: float) -> str:
    """Sync a fresh client and return Text "t" once it has ``expected_length`` characters.

    The relay may split a large step 2 reply into several messages, so this
    applies every step 2 and update until the text is complete.
    """
    client = await RawClient.connect(base_url, doc_name)
    try:
        await client.send_bytes(STEP1_EMPTY)
        deadline = time.monotonic() + timeout
        while text_length(client) < expected_length:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{doc_name}: {text_length(client)} of {expected_length} characters after {timeout} s")
            await client.recv_message(remaining)
        assert client.apply_errors == []
        return doc_text(client.doc)
    finally:
        await client.close()


async def seed_large_document(base_url: str, doc_name: str) -> RawClient:
    """Append 40 chunks of 1 MiB of "a" to Text "t" as 40 updates of one client.

    The returned client stays connected so that the room stays loaded.
    """
    seeder = await RawClient.connect(base_url, doc_name)
    for _ in range(SEED_UPDATES):
        await seeder.edit_text("a" * MIB)
    await wait_until_applied(seeder, timeout=120)
    return seeder


@pytest.mark.slow
async def test_slow_reader_gets_40_mib_on_first_connection(relay) -> None:
    server: RelayProcess = relay()
    doc_name = "large/slow-reader"

    seed_started = time.monotonic()
    seeder = await seed_large_document(server.url, doc_name)
    seed_seconds = time.monotonic() - seed_started
    loads_before = await asyncio.to_thread(metric_total, server.http_url, "yrelay_room_loads_total")

    async with ThrottleProxy(server.port, SLOW_LINK_BYTES_PER_SECOND) as proxy:
        reader = await RawClient.connect(proxy.url, doc_name, open_timeout=10)
        connected_at = time.monotonic()
        await reader.send_bytes(STEP1_EMPTY)

        arrival_times = [connected_at]
        frame_sizes: list[int] = []
        answered_step1 = False
        while text_length(reader) < SEED_TEXT_LENGTH:
            elapsed = time.monotonic() - connected_at
            if elapsed > SLOW_READER_DEADLINE_SECONDS:
                pytest.fail(f"slow reader has {text_length(reader)} of {SEED_TEXT_LENGTH} characters after {elapsed:.1f} s")
            try:
                received = await reader.recv(timeout=STOCK_CLIENT_RECONNECT_SECONDS)
            except TimeoutError:
                pytest.fail(
                    f"no complete message for {STOCK_CLIENT_RECONNECT_SECONDS} s after {len(frame_sizes)} messages "
                    f"and {text_length(reader)} characters, so a stock client would reconnect"
                )
            arrival_times.append(received.at)
            assert isinstance(received.frame, bytes), f"relay sent a text frame {received.frame!r}"
            frame_sizes.append(len(received.frame))
            message = received.message
            assert message is not None, received.decode_error
            # A stock client replies to the relay's step 1 with a step 2 of its own state.
            if message.kind == 0 and message.subtype == 0 and not answered_step1:
                await reader.send_bytes(sync_step2(reader.doc.get_update(message.payload)))
                answered_step1 = True
        download_seconds = time.monotonic() - connected_at
        downstream_bytes = proxy.downstream_bytes

        text = doc_text(reader.doc)
        still_open = reader.is_open
        await reader.close()

    loads_after = await asyncio.to_thread(metric_total, server.http_url, "yrelay_room_loads_total")
    await seeder.close()

    gaps = [later - earlier for earlier, later in zip(arrival_times, arrival_times[1:])]
    print(
        f"\nseed {seed_seconds:.1f} s; download {download_seconds:.1f} s, {downstream_bytes} bytes in "
        f"{len(frame_sizes)} messages, largest {max(frame_sizes)} bytes, longest gap {max(gaps):.1f} s"
    )
    assert reader.apply_errors == []
    assert len(text) == SEED_TEXT_LENGTH
    assert text == "a" * SEED_TEXT_LENGTH
    assert download_seconds <= SLOW_READER_DEADLINE_SECONDS
    assert still_open, "the slow reader lost its first connection"
    assert max(gaps) <= STOCK_CLIENT_RECONNECT_SECONDS
    assert max(frame_sizes) <= DEFAULT_SYNC_CHUNK_BYTES + MESSAGE_OVERHEAD_BYTES
    assert loads_after == loads_before, "the room was loaded again while the slow reader downloaded it"


async def test_10_mib_update_is_applied_and_broadcast(relay) -> None:
    server: RelayProcess = relay()
    doc_name = "large/ten-mib-update"
    length = 10 * MIB

    listener = await RawClient.connect(server.url, doc_name)
    await listener.sync()
    writer = await RawClient.connect(server.url, doc_name)
    await writer.sync()

    await writer.edit_text("b" * length)

    deadline = time.monotonic() + 30
    while text_length(listener) < length:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail(f"listener has {text_length(listener)} of {length} characters after 30 s")
        await listener.recv_message(remaining)
    await wait_until_applied(writer, timeout=30)

    assert listener.apply_errors == []
    assert doc_text(listener.doc) == "b" * length
    assert writer.is_open, f"writer was closed with {writer.ws.close_code} {writer.ws.close_reason!r}"
    assert await read_whole_text(server.url, doc_name, length, timeout=30) == "b" * length

    await writer.close()
    await listener.close()


def huge_update_parts(text_length: int) -> tuple[bytes, int, bytes]:
    """Return a sync update message that inserts ``text_length`` "a" into Text "t", in three parts.

    The message is ``prefix + b"a" * text_length + suffix``, so it can be
    streamed without holding it in memory. It is the Yjs v1 update of client
    ``HUGE_UPDATE_CLIENT`` at clock 0: one struct, info 0x04 (string content),
    parent named "t", the string, then an empty delete set.
    """
    update_head = (
        encode_varuint(1)
        + encode_varuint(1)
        + encode_varuint(HUGE_UPDATE_CLIENT)
        + encode_varuint(0)
        + bytes([0x04, 0x01])
        + encode_varuint(1)
        + b"t"
        + encode_varuint(text_length)
    )
    update_tail = b"\x00"
    update_length = len(update_head) + text_length + len(update_tail)
    prefix = b"\x00\x02" + encode_varuint(update_length) + update_head
    return prefix, text_length, update_tail


def test_huge_update_parts_are_a_valid_update() -> None:
    prefix, filler_length, suffix = huge_update_parts(5)
    message = prefix + b"a" * filler_length + suffix
    update = message[3:]
    assert message[:3] == b"\x00\x02" + encode_varuint(len(update))

    doc = Doc()
    doc.apply_update(update)

    assert str(doc.get("t", type=Text)) == "aaaaa"


@dataclass
class StreamResult:
    """Outcome of streaming one oversized frame."""

    close_code: int | None
    bytes_sent: int
    frame_bytes: int
    closed_before_end: bool


async def stream_one_binary_frame(
    port: int,
    path: str,
    prefix: bytes,
    filler_length: int,
    suffix: bytes,
    chunk_bytes: int = MIB,
    close_timeout: float = 10.0,
) -> StreamResult:
    """Open a WebSocket by hand and stream one masked binary frame of the given payload.

    The payload is ``prefix + b"a" * filler_length + suffix``. Sending stops
    when the relay sends a close frame or drops the connection, and the relay
    then has ``close_timeout`` seconds to send its close frame. The payload is
    never built in memory, which no WebSocket library for Python allows for a
    single frame.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET /{path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    await writer.drain()
    response = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert response.startswith(b"HTTP/1.1 101"), response

    close_code: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()

    async def read_frames() -> None:
        # Server frames are unmasked: 2 header bytes, an optional 2 or 8 byte length, the payload.
        try:
            while True:
                head = await reader.readexactly(2)
                opcode = head[0] & 0x0F
                length = head[1] & 0x7F
                if length == 126:
                    length = struct.unpack("!H", await reader.readexactly(2))[0]
                elif length == 127:
                    length = struct.unpack("!Q", await reader.readexactly(8))[0]
                payload = await reader.readexactly(length)
                if opcode == 0x8:
                    close_code.set_result(struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None)
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            if not close_code.done():
                close_code.set_result(None)

    frame_reader = asyncio.create_task(read_frames())
    payload_length = len(prefix) + filler_length + len(suffix)
    mask = os.urandom(4)
    # RFC 6455 requires the shortest of the three length forms.
    if payload_length < 126:
        header = bytes([0x82, 0x80 | payload_length]) + mask
    elif payload_length < 1 << 16:
        header = bytes([0x82, 0x80 | 126]) + struct.pack("!H", payload_length) + mask
    else:
        header = bytes([0x82, 0x80 | 127]) + struct.pack("!Q", payload_length) + mask
    frame_bytes = len(header) + payload_length

    def masked(piece: bytes, offset: int) -> bytes:
        rotation = offset % 4
        return apply_mask(piece, mask[rotation:] + mask[:rotation])

    def payload_pieces():
        yield prefix
        remaining = filler_length
        filler = b"a" * chunk_bytes
        while remaining > 0:
            size = min(chunk_bytes, remaining)
            yield filler[:size]
            remaining -= size
        yield suffix

    bytes_sent = 0
    closed_before_end = False
    try:
        writer.write(header)
        await writer.drain()
        bytes_sent = len(header)
        offset = 0
        for piece in payload_pieces():
            if close_code.done():
                closed_before_end = True
                break
            writer.write(masked(piece, offset))
            await writer.drain()
            offset += len(piece)
            bytes_sent += len(piece)
    except (ConnectionError, OSError):
        closed_before_end = True

    try:
        code = await asyncio.wait_for(asyncio.shield(close_code), close_timeout)
    except TimeoutError:
        code = None
    frame_reader.cancel()
    writer.close()
    return StreamResult(code, bytes_sent, frame_bytes, closed_before_end or bytes_sent < frame_bytes)


class RssSampler:
    """Record the peak RSS of a process from a background thread every few milliseconds."""

    def __init__(self, process: RelayProcess, interval: float = 0.005) -> None:
        self.process = process
        self.interval = interval
        self.peak = process.rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.process.rss_bytes())
            except (OSError, RuntimeError, AssertionError):
                return
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()


def healthz_status(http_url: str) -> int:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{http_url}/healthz", timeout=5) as response:
        return response.status


async def test_200_mib_update_is_closed_with_1009(relay) -> None:
    server: RelayProcess = relay()
    doc_name = "large/huge-update"

    writer = await RawClient.connect(server.url, doc_name)
    await writer.send_update(UPDATE_INSERT_HI)
    await wait_until_applied(writer, timeout=10)
    listener = await RawClient.connect(server.url, doc_name)
    await listener.sync()
    doc_before, _ = await fetch_doc(server.url, doc_name)
    messages_before = len(listener.messages())
    await asyncio.sleep(0.5)
    rss_before = server.rss_bytes()

    prefix, filler_length, suffix = huge_update_parts(HUGE_UPDATE_TEXT_LENGTH)
    started = time.monotonic()
    with RssSampler(server) as sampler:
        result = await stream_one_binary_frame(server.port, doc_name, prefix, filler_length, suffix)
        await asyncio.sleep(0.5)
    seconds = time.monotonic() - started
    rss_growth = sampler.peak - rss_before
    print(
        f"\nclose {result.close_code} after {result.bytes_sent} of {result.frame_bytes} bytes in {seconds:.1f} s; "
        f"RSS {rss_before / MIB:.1f} MiB, peak growth {rss_growth / MIB:.1f} MiB"
    )

    assert result.close_code == 1009
    assert result.closed_before_end, "the relay read the whole 200 MiB frame before closing"
    assert rss_growth < 2 * DEFAULT_MAX_MESSAGE_SIZE
    assert server.is_running()
    assert await asyncio.to_thread(healthz_status, server.http_url) == 200

    await asyncio.sleep(0.5)
    assert len(listener.messages()) == messages_before, "the listener received something after the 200 MiB frame"
    assert listener.is_open
    doc_after, _ = await fetch_doc(server.url, doc_name)
    assert doc_text(doc_after) == "hi"
    assert doc_after.get_state() == doc_before.get_state()
    assert doc_text(doc_before) == "hi"

    await listener.close()
    await writer.close()


async def test_update_below_limit_is_sent_as_one_frame(relay) -> None:
    """The hand-written frame sender delivers a normal update that the relay applies."""
    server: RelayProcess = relay()
    doc_name = "large/hand-framed"
    listener = await RawClient.connect(server.url, doc_name)
    await listener.sync()

    message = sync_update(UPDATE_INSERT_HI)
    result = await stream_one_binary_frame(server.port, doc_name, message[:4], 0, message[4:], close_timeout=0.5)

    await listener.wait_for_text("hi", timeout=5)
    assert result.bytes_sent == result.frame_bytes
    await listener.close()
