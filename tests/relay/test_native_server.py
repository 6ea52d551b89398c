"""The relay's own HTTP/1.1 and WebSocket server (``--server native``).

The rest of the suite runs against it with YRELAY_TEST_SERVER=native; these
tests cover what only this server does: frame parsing, control frames, the
handshake and the plain-HTTP bridge.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct

import pytest

from relay.frames import encode_binary_frame, frame_payload
from relay.native_websocket import accept_key, unmask
from tests.support.raw_client import STEP1_EMPTY, UPDATE_INSERT_HI, RawClient, doc_text, fetch_doc, sync_update
from tests.support.relay_process import RelayProcess


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 200_000])
def test_frame_round_trip(size: int) -> None:
    message = os.urandom(size)
    assert frame_payload(encode_binary_frame(message)) == message


@pytest.mark.parametrize("size", [0, 1, 3, 4, 5, 1000])
def test_unmask_matches_bytewise_xor(size: int) -> None:
    payload = os.urandom(size)
    mask = os.urandom(4)
    expected = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
    assert unmask(payload, mask) == expected


def test_accept_key_matches_rfc_example() -> None:
    # RFC 6455, section 1.3.
    assert accept_key(b"dGhlIHNhbXBsZSBub25jZQ==") == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


class HandRolledSocket:
    """A WebSocket client written by hand, to send frames that libraries refuse to build."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int, path: str) -> HandRolledSocket:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET /{path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101"), head
        assert accept_key(key.encode()) in head
        return cls(reader, writer)

    def send(self, opcode: int, payload: bytes, fin: bool = True, masked: bool = True, rsv: int = 0) -> None:
        first = (0x80 if fin else 0) | rsv | opcode
        mask = os.urandom(4)
        length = len(payload)
        if length < 126:
            header = bytes((first, (0x80 if masked else 0) | length))
        else:
            header = bytes((first, (0x80 if masked else 0) | 126)) + struct.pack("!H", length)
        body = mask + unmask(payload, mask) if masked else payload
        self.writer.write(header + body)

    async def read_frame(self, timeout: float = 5.0) -> tuple[int, bytes]:
        head = await asyncio.wait_for(self.reader.readexactly(2), timeout)
        length = head[1] & 0x7F
        if length == 126:
            length = struct.unpack("!H", await self.reader.readexactly(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", await self.reader.readexactly(8))[0]
        return head[0] & 0x0F, await self.reader.readexactly(length)

    async def read_until_close(self, timeout: float = 5.0) -> int:
        while True:
            opcode, payload = await self.read_frame(timeout)
            if opcode == 0x8:
                return struct.unpack("!H", payload[:2])[0]

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
def native(relay) -> RelayProcess:
    return relay("--server", "native")


async def test_ping_answered_with_pong(native: RelayProcess) -> None:
    client = await HandRolledSocket.open(native.port, "native/ping")
    client.send(0x9, b"are you there")
    while True:
        opcode, payload = await client.read_frame()
        if opcode == 0xA:
            break
    assert payload == b"are you there"
    client.close()


async def test_fragmented_message_is_reassembled(native: RelayProcess) -> None:
    client = await HandRolledSocket.open(native.port, "native/fragments")
    message = sync_update(UPDATE_INSERT_HI)
    client.send(0x2, message[:3], fin=False)
    client.send(0x0, message[3:7], fin=False)
    client.send(0x0, message[7:])
    await asyncio.sleep(0.3)
    doc, _ = await fetch_doc(native.url, "native/fragments")
    assert doc_text(doc) == "hi"
    client.close()


@pytest.mark.parametrize(
    ("name", "frame_args", "code"),
    [
        ("unmasked frame", {"opcode": 0x2, "payload": STEP1_EMPTY, "masked": False}, 1002),
        ("reserved bit", {"opcode": 0x2, "payload": STEP1_EMPTY, "rsv": 0x40}, 1002),
        ("unknown opcode", {"opcode": 0x3, "payload": b"x"}, 1002),
        ("orphan continuation", {"opcode": 0x0, "payload": b"x"}, 1002),
        ("fragmented ping", {"opcode": 0x9, "payload": b"x", "fin": False}, 1002),
        ("text frame", {"opcode": 0x1, "payload": b"hello"}, 1003),
        ("invalid utf-8 text", {"opcode": 0x1, "payload": b"\xff\xfe"}, 1007),
    ],
)
async def test_protocol_violation_closes_only_offender(native: RelayProcess, name: str, frame_args: dict,
                                                       code: int) -> None:
    bystander = await RawClient.connect(native.url, "native/violations")
    await bystander.sync()
    offender = await HandRolledSocket.open(native.port, "native/violations")

    offender.send(**frame_args)

    assert await offender.read_until_close() == code, name
    offender.close()
    await bystander.edit_text("still here")
    doc, _ = await fetch_doc(native.url, "native/violations")
    assert doc_text(doc) == "still here"
    assert f"doc=native/violations conn=" in native.log_text()
    await bystander.close()


async def http_exchange(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    response = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return response


async def test_incomplete_request_times_out(relay) -> None:
    native = relay("--server", "native")
    reader, writer = await asyncio.open_connection("127.0.0.1", native.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    response = await asyncio.wait_for(reader.read(), 20)
    writer.close()
    assert response.startswith(b"HTTP/1.1 408"), response
    assert b"request not received within 10 s" in response


async def test_http_bridge_serves_api_and_rejects_bad_requests(native: RelayProcess) -> None:
    health = await http_exchange(native.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert health.startswith(b"HTTP/1.1 200"), health
    assert b'"ok"' in health

    body = UPDATE_INSERT_HI
    posted = await http_exchange(
        native.port, b"POST /docs/native/api HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    )
    assert posted.startswith(b"HTTP/1.1 204"), posted
    doc, _ = await fetch_doc(native.url, "native/api")
    assert doc_text(doc) == "hi"

    chunked = await http_exchange(
        native.port, b"POST /docs/native/api HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    )
    assert chunked.startswith(b"HTTP/1.1 411"), chunked
    assert chunked.endswith(b'{"error": "chunked request bodies are not supported; send Content-Length"}')
    head = await http_exchange(native.port, b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert head.endswith(b"\r\n\r\n"), "a HEAD response carried a body"
    huge_head = await http_exchange(native.port, b"GET /healthz HTTP/1.1\r\nX-Filler: " + b"a" * 20_000 + b"\r\n\r\n")
    assert huge_head.startswith(b"HTTP/1.1 431"), huge_head[:40]
    bad_version = await http_exchange(
        native.port,
        b"GET /native/api HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\nSec-WebSocket-Version: 8\r\n\r\n",
    )
    assert bad_version.startswith(b"HTTP/1.1 400"), bad_version
