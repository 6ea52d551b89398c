"""Deleting a document through one relay removes it from every relay and the stream."""

from __future__ import annotations

import asyncio
import sqlite3
import urllib.request

from tests.mesh.helpers import read_stream
from tests.support.raw_client import RawClient


def stored_rows(database_path, doc: str) -> int:
    with sqlite3.connect(f"file:{database_path}?mode=ro", uri=True) as reader:
        updates = reader.execute("SELECT COUNT(*) FROM updates WHERE doc = ?", (doc,)).fetchone()[0]
        snapshots = reader.execute("SELECT COUNT(*) FROM snapshots WHERE doc = ?", (doc,)).fetchone()[0]
    return int(updates) + int(snapshots)


def delete(http_url: str, doc: str) -> int:
    request = urllib.request.Request(f"{http_url}/docs/{doc}", method="DELETE")
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status


async def test_delete_reaches_every_relay(mesh_relay, nats_server) -> None:
    relay_a = mesh_relay("ra")
    relay_b = mesh_relay("rb")
    client_a = await RawClient.connect(relay_a.url, "shared/deleted")
    client_b = await RawClient.connect(relay_b.url, "shared/deleted")
    await client_a.sync()
    await client_b.sync()
    await client_a.edit_text("gone soon")
    await client_b.wait_for_text("gone soon")
    await asyncio.sleep(0.3)
    assert stored_rows(relay_b.database_path, "shared/deleted") > 0
    assert await read_stream(nats_server.url, "shared/deleted")

    assert await asyncio.to_thread(delete, relay_a.http_url, "shared/deleted") == 204

    assert (await client_a.wait_for_close())[0] == 4410
    assert (await client_b.wait_for_close())[0] == 4410
    assert stored_rows(relay_a.database_path, "shared/deleted") == 0
    # Relay B closes its clients first, then removes its copy.
    for _ in range(40):
        if stored_rows(relay_b.database_path, "shared/deleted") == 0:
            break
        await asyncio.sleep(0.05)
    assert stored_rows(relay_b.database_path, "shared/deleted") == 0
    assert await read_stream(nats_server.url, "shared/deleted") == []
