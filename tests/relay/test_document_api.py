"""The HTTP document API against a real relay and real WebSocket clients."""

from __future__ import annotations

import asyncio
import sqlite3
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from pycrdt import Doc, Text

from tests.support.raw_client import RawClient, doc_text

U_HI = bytes.fromhex("01 01 01 00 04 01 01 74 02 68 69 00")
U_BANG = bytes.fromhex("01 01 01 02 84 01 01 01 21 00")


def http(method: str, url: str, body: bytes | None = None) -> tuple[int, bytes]:
    """Send one request and return (status, body) without raising on 4xx/5xx."""
    request = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def stored_rows(data_dir: Path, doc: str) -> int:
    with sqlite3.connect(f"file:{data_dir / 'yrelay.sqlite3'}?mode=ro", uri=True) as reader:
        updates = reader.execute("SELECT COUNT(*) FROM updates WHERE doc = ?", (doc,)).fetchone()[0]
        snapshots = reader.execute("SELECT COUNT(*) FROM snapshots WHERE doc = ?", (doc,)).fetchone()[0]
    return int(updates) + int(snapshots)


async def test_post_reaches_connected_clients(relay) -> None:
    server = relay()
    client = await RawClient.connect(server.url, "api/post")
    await client.sync()
    status, _ = await asyncio.to_thread(http, "POST", f"{server.http_url}/docs/api/post", U_HI)
    assert status == 204
    await client.wait_for_text("hi")
    assert stored_rows(server.data_dir, "api/post") >= 1
    await client.ws.close()


async def test_get_returns_state_and_json(relay) -> None:
    server = relay()
    writer = await RawClient.connect(server.url, "api/get")
    await writer.sync()
    await writer.send_update(U_HI)
    await writer.send_update(U_BANG)
    await asyncio.sleep(0.2)
    status, body = await asyncio.to_thread(http, "GET", f"{server.http_url}/docs/api/get")
    assert status == 200
    rebuilt = Doc()
    rebuilt.apply_update(body)
    assert str(rebuilt.get("t", type=Text)) == "hi!"
    status, body = await asyncio.to_thread(http, "GET", f"{server.http_url}/docs/api/get?format=json")
    assert status == 200
    assert body == b'{"t":"hi!"}'
    await writer.ws.close()


async def test_malformed_update_is_400_and_not_stored(relay) -> None:
    server = relay()
    status, body = await asyncio.to_thread(http, "POST", f"{server.http_url}/docs/api/bad", b"\xff\xff\xff\x7f")
    assert status == 400
    assert b"not a valid Yjs v1 update" in body
    status, _ = await asyncio.to_thread(http, "GET", f"{server.http_url}/docs/api/bad")
    assert status == 404
    assert stored_rows(server.data_dir, "api/bad") == 0


async def test_unknown_document_is_404(relay) -> None:
    server = relay()
    status, body = await asyncio.to_thread(http, "GET", f"{server.http_url}/docs/never/written")
    assert status == 404
    assert b"not found" in body
    status, _ = await asyncio.to_thread(http, "DELETE", f"{server.http_url}/docs/never/written")
    assert status == 404


@pytest.mark.parametrize("path", ["/docs/a/../b", "/docs/a//b", "/docs/" + "x" * 1100])
async def test_invalid_name_is_400(relay, path: str) -> None:
    server = relay()
    status, body = await asyncio.to_thread(http, "GET", f"{server.http_url}{path}")
    assert status == 400, body


async def test_oversized_body_is_413(relay) -> None:
    server = relay("--max-message-size", "1024")
    status, _ = await asyncio.to_thread(http, "POST", f"{server.http_url}/docs/api/big", b"\x00" * 4096)
    assert status == 413


async def test_delete_removes_and_disconnects(relay) -> None:
    server = relay()
    client = await RawClient.connect(server.url, "api/delete")
    await client.sync()
    await client.send_update(U_HI)
    await asyncio.sleep(0.2)
    assert stored_rows(server.data_dir, "api/delete") >= 1
    status, _ = await asyncio.to_thread(http, "DELETE", f"{server.http_url}/docs/api/delete")
    assert status == 204
    code, reason = await client.wait_for_close()
    assert code == 4410
    assert reason == "document deleted"
    assert stored_rows(server.data_dir, "api/delete") == 0
    status, _ = await asyncio.to_thread(http, "GET", f"{server.http_url}/docs/api/delete")
    assert status == 404
    assert doc_text(client.doc) == "hi"


@pytest.mark.parametrize("path", ["docs", "versions"])
async def test_head_reads_and_never_deletes(relay, path: str) -> None:
    server = relay()
    status, _ = await asyncio.to_thread(http, "POST", f"{server.http_url}/docs/api/head", U_HI)
    assert status == 204

    status, body = await asyncio.to_thread(http, "HEAD", f"{server.http_url}/{path}/api/head")
    assert status == 200
    assert body == b""

    status, body = await asyncio.to_thread(http, "GET", f"{server.http_url}/docs/api/head?format=json")
    assert status == 200, "HEAD deleted the document"
    assert body == b'{"t":"hi"}'
