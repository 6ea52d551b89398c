"""Document history: versions are kept, listed, read and restored."""

from __future__ import annotations

import asyncio
import json

from tests.relay.test_document_api import http
from tests.support.raw_client import RawClient, doc_text


async def test_versions_listed_read_and_restored(relay) -> None:
    # Every second update folds the log into a snapshot, and each of those
    # keeps a version, of which the newest three stay: of the four versions
    # taken after two, four, six and eight words, the first is dropped.
    server = relay("--compact-updates", "2", "--history-interval", "0", "--history-keep", "3")
    editor = await RawClient.connect(server.url, "history/doc")
    watcher = await RawClient.connect(server.url, "history/doc")
    await editor.sync()
    await watcher.sync()
    for word in ["one ", "two ", "three ", "four ", "five ", "six ", "seven ", "eight "]:
        await editor.edit_text(word)
    await watcher.wait_for_text("one two three four five six seven eight ")
    await asyncio.sleep(0.3)

    status, body = await asyncio.to_thread(http, "GET", f"{server.http_url}/versions/history/doc")
    assert status == 200
    versions = json.loads(body)
    assert len(versions) == 3, versions
    assert [v["id"] for v in versions] == sorted(v["id"] for v in versions)
    oldest = versions[0]["id"]

    status, body = await asyncio.to_thread(
        http, "GET", f"{server.http_url}/versions/history/doc?id={oldest}&format=json"
    )
    assert status == 200
    old_text = json.loads(body)["t"]
    assert old_text == "one two three four "

    status, _ = await asyncio.to_thread(http, "POST", f"{server.http_url}/versions/history/doc?id={oldest}")
    assert status == 204
    await watcher.wait_for_text(old_text)
    await editor.wait_for_text(old_text)

    fresh = await RawClient.connect(server.url, "history/doc")
    await fresh.sync()
    assert doc_text(fresh.doc) == old_text
    for client in (editor, watcher, fresh):
        await client.ws.close()


async def test_unknown_version_is_404(relay) -> None:
    server = relay()
    status, _ = await asyncio.to_thread(http, "GET", f"{server.http_url}/versions/none/here?id=7")
    assert status == 404
    status, body = await asyncio.to_thread(http, "GET", f"{server.http_url}/versions/none/here?id=seven")
    assert status == 400, body
    status, body = await asyncio.to_thread(http, "GET", f"{server.http_url}/versions/none/here")
    assert status == 200
    assert json.loads(body) == []
