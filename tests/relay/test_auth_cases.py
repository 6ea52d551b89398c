"""Field cases about tokens: early frames, read-only connections, expiry.

Each case is a failure operators of other Yjs servers met in production:
frames pipelined behind the upgrade while the room loads, a viewer writing
through a sync sub-type the permission check forgot, and write access that
outlives its token. The relay checks HS256 tokens with a shared secret, with
no clock leeway, so expiry times are exact.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pycrdt import Doc, Text
from websockets.exceptions import ConnectionClosed, InvalidStatus

from auth import Role, issue_token
from tests.support.raw_client import (
    AWARENESS_1001,
    STEP1_EMPTY,
    UPDATE_APPEND_BANG,
    UPDATE_INSERT_HI,
    UPDATE_INSERT_RO,
    UPDATE_MAP_K_V,
    RawClient,
    doc_map,
    doc_text,
    fetch_metrics,
    query_awareness,
    sync_step2,
    sync_update,
    wait_until,
)
from tests.support.relay_process import RelayProcess

MIB = 1024 * 1024
SECRET = secrets.token_hex(32).encode()
READ_ONLY_REPLY = bytes.fromhex("02 00 09 72 65 61 64 2d 6f 6e 6c 79")


def token(pattern: str, role: Role, ttl: float = 3600, secret: bytes = SECRET) -> str:
    return issue_token(grants={pattern: role}, ttl=ttl, secret=secret)


@pytest.fixture
def secured(relay: Callable[..., RelayProcess], tmp_path: Path) -> Callable[..., RelayProcess]:
    """Start relays that check tokens against ``SECRET`` with no leeway."""
    secret_file = tmp_path / "secret"
    secret_file.write_bytes(SECRET)

    def start(*extra_args: str) -> RelayProcess:
        return relay("--auth-secret-file", str(secret_file), "--auth-leeway", "0", *extra_args)

    return start


def unsigned(signed: str) -> str:
    """Return ``signed`` with its header replaced by ``alg: none`` and its signature removed."""
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    return f"{header}.{signed.split('.')[1]}."


async def read_document(server: RelayProcess, doc_name: str) -> tuple[str, dict]:
    client = await RawClient.connect(server.url, doc_name, token=token(doc_name, Role.VIEWER))
    try:
        await client.send_bytes(STEP1_EMPTY)
        await client.wait_for_step2(timeout=15)
        return doc_text(client.doc), doc_map(client.doc)
    finally:
        await client.close()


def has_client_1001(client: RawClient) -> bool:
    return any(entry.client == 1001 for entry in client.awareness_entries())


async def write_in_one_segment(client: RawClient, frames: list[bytes]) -> None:
    """Write ``frames`` as binary WebSocket frames with a single ``write`` call."""
    protocol = client.ws.protocol
    for frame in frames:
        protocol.send_binary(frame)
    client.ws.transport.write(b"".join(chunk for chunk in protocol.data_to_send() if chunk))


# Frames pipelined behind the upgrade while the room loads.


async def test_early_frames_with_valid_token_merge_after_load(secured) -> None:
    server: RelayProcess = secured()
    doc_name = "b08"
    writer = await RawClient.connect(server.url, doc_name, token=token(doc_name, Role.EDITOR))
    await writer.sync()
    padding = writer.doc.get("pad", type=Text)
    before = writer.doc.get_state()
    padding += "p" * (3 * MIB)
    await writer.send_update(writer.doc.get_update(before))
    await writer.close()
    await asyncio.to_thread(server.restart)

    client = await RawClient.connect(server.url, doc_name, token=token(doc_name, Role.EDITOR))
    await write_in_one_segment(client, [STEP1_EMPTY, sync_update(UPDATE_INSERT_HI), AWARENESS_1001, query_awareness()])
    step2 = await client.wait_for_step2(timeout=15)
    assert any(m.kind == 0 and m.subtype == 0 for m in client.messages()), "the relay sent no sync step 1"
    reply_doc = Doc()
    reply_doc.apply_update(step2.payload)
    assert len(str(reply_doc.get("pad", type=Text))) == 3 * MIB, "the step 2 lacks the persisted content"

    observer = await RawClient.connect(server.url, doc_name, token=token(doc_name, Role.VIEWER))
    await observer.send_bytes(STEP1_EMPTY)
    await observer.wait_for_step2(timeout=15)
    assert doc_text(observer.doc) == "hi"
    assert len(str(observer.doc.get("pad", type=Text))) == 3 * MIB
    await wait_until(lambda: has_client_1001(observer), 5, lambda: "client 1001 missing from the awareness")
    for open_client in (client, observer):
        await open_client.close()


async def test_early_frames_with_bad_signature_never_processed(secured) -> None:
    server: RelayProcess = secured()
    doc_name = "b08"
    forged = token(doc_name, Role.EDITOR, secret=secrets.token_hex(32).encode())
    with pytest.raises(InvalidStatus) as refused:
        await RawClient.connect(server.url, doc_name, token=forged)
    assert refused.value.response.status_code == 401

    text, _ = await read_document(server, doc_name)
    assert text == ""
    await asyncio.to_thread(server.restart)
    text, _ = await read_document(server, doc_name)
    assert text == ""
    samples = fetch_metrics(server.http_url)
    assert samples.get("yrelay_updates_applied_total", 0) == 0
    assert "rejected upgrade doc=b08 status=401: invalid token signature" in server.log_text()


# Read-only connections.


async def test_viewer_cannot_write_through_any_sync_message(secured) -> None:
    server: RelayProcess = secured()
    doc_name = "b15-room"
    writer = await RawClient.connect(server.url, doc_name, token=token("b15-*", Role.EDITOR))
    await writer.sync()
    await writer.send_update(UPDATE_INSERT_HI)
    await writer.sync()

    reader = await RawClient.connect(server.url, doc_name, token=token("b15-*", Role.VIEWER))
    other = await RawClient.connect(server.url, "b15-other", token=token("b15-other", Role.EDITOR))
    await asyncio.gather(
        reader.send_bytes(sync_update(UPDATE_INSERT_RO)),
        other.send_bytes(sync_update(UPDATE_INSERT_RO)),
    )
    await reader.send_bytes(sync_step2(UPDATE_INSERT_RO))
    await reader.send_bytes(bytes.fromhex("00 01 02 00 00"))
    await reader.send_bytes(STEP1_EMPTY)
    await reader.send_bytes(AWARENESS_1001)

    step2 = await reader.wait_for_step2(timeout=5)
    answered = Doc()
    answered.apply_update(step2.payload)
    assert str(answered.get("t", type=Text)) == "hi"
    await wait_until(lambda: has_client_1001(writer), 5, lambda: "the viewer's awareness did not reach the writer")

    await writer.send_update(UPDATE_APPEND_BANG)
    await reader.wait_for_text("hi!", timeout=5)
    assert reader.is_open, f"the viewer was disconnected: {reader.close_frame_received}"
    denials = [frame for frame in reader.frames() if frame == READ_ONLY_REPLY]
    assert len(denials) == 2, f"expected a denial for the update and the step 2, got {len(denials)}"
    assert doc_text(writer.doc) == "hi!"
    assert fetch_metrics(server.http_url).get("yrelay_writes_denied_total", 0) == 2

    text, _ = await read_document(server, doc_name)
    assert text == "hi!"
    other_text, _ = await read_document(server, "b15-other")
    assert other_text == "ro", "the write token on the other document was affected by the viewer's"
    for open_client in (writer, reader, other):
        await open_client.close()
    await asyncio.to_thread(server.restart)
    text, _ = await read_document(server, doc_name)
    assert text == "hi!"


# Token expiry, forged tokens, and retry after a refusal.


async def test_expired_token_closes_and_good_token_still_works(secured) -> None:
    server: RelayProcess = secured()
    doc_name = "b16-room"
    short = token(doc_name, Role.EDITOR, ttl=5)
    expires_at = time.time() + 5
    client = await RawClient.connect(server.url, doc_name, token=short)
    await client.sync()
    await asyncio.sleep(1)
    await client.send_update(UPDATE_INSERT_HI)

    code, reason = await client.wait_for_close(timeout=10)
    closed_at = time.time()
    assert code == 4401, reason
    assert reason == "token expired"
    assert closed_at <= expires_at + 1.5, f"closed {closed_at - expires_at:.2f} s after expiry"
    with pytest.raises(ConnectionClosed):
        await client.ws.send(sync_update(UPDATE_MAP_K_V))

    forged = {
        "expired": issue_token(grants={doc_name: Role.EDITOR}, ttl=1, secret=SECRET, now=time.time() - 10),
        "bad signature": short[:-1] + ("A" if short[-1] != "A" else "B"),
        "alg none": unsigned(short),
        "other room": token("b16-other", Role.EDITOR),
    }
    for name, value in forged.items():
        with pytest.raises(InvalidStatus) as refused:
            await RawClient.connect(server.url, doc_name, token=value)
        assert refused.value.response.status_code in (401, 403), name

    good = await RawClient.connect(server.url, doc_name, token=token(doc_name, Role.EDITOR))
    await good.sync()
    await good.close()
    started = time.monotonic()
    for _ in range(20):
        again = await RawClient.connect(server.url, doc_name, token=token(doc_name, Role.EDITOR))
        await again.sync()
        await again.close()
    assert time.monotonic() - started < 10

    text, document_map = await read_document(server, doc_name)
    assert text == "hi"
    assert document_map == {}
    log = server.log_text()
    assert f"closing doc={doc_name} conn=" in log
    assert "code=4401: token expired" in log
    for value in forged.values():
        assert value not in log


async def test_auth_message_extends_session(secured) -> None:
    server: RelayProcess = secured()
    doc_name = "refresh/doc"
    client = await RawClient.connect(server.url, doc_name, token=token(doc_name, Role.EDITOR, ttl=2))
    await client.sync()
    fresh = token(doc_name, Role.EDITOR).encode()
    await client.send_bytes(bytes([2, 0]) + var_uint(len(fresh)) + fresh)

    await asyncio.sleep(3.5)
    await client.send_update(UPDATE_INSERT_HI)
    await client.send_bytes(STEP1_EMPTY)
    await client.wait_for_step2(timeout=5)
    assert client.is_open, f"closed despite the new token: {client.close_frame_received}"
    text, _ = await read_document(server, doc_name)
    assert text == "hi"
    await client.close()


async def test_auth_message_with_viewer_token_drops_write_access(secured) -> None:
    server: RelayProcess = secured()
    doc_name = "refresh/downgrade"
    client = await RawClient.connect(server.url, doc_name, token=token(doc_name, Role.EDITOR))
    await client.sync()
    viewer = token(doc_name, Role.VIEWER).encode()
    await client.send_bytes(bytes([2, 0]) + var_uint(len(viewer)) + viewer)
    await client.send_update(UPDATE_INSERT_HI)
    await client.wait_for(lambda message: message.raw == READ_ONLY_REPLY, timeout=5)

    text, _ = await read_document(server, doc_name)
    assert text == ""
    await client.close()


def var_uint(value: int) -> bytes:
    encoded = bytearray()
    while value > 0x7F:
        encoded.append((value & 0x7F) | 0x80)
        value >>= 7
    encoded.append(value)
    return bytes(encoded)
