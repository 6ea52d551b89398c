"""MongoStore against a real MongoDB-wire server (mongod, or FerretDB on SQLite)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pycrdt import Doc, Text
from pymongo import AsyncMongoClient

from persistence.mongodb import MongoStore
from tests.support.mongo_server import MongoServer


@pytest.fixture
def mongo(tmp_path: Path) -> Iterator[MongoServer]:
    server = MongoServer(tmp_path / "mongo").start()
    yield server
    server.stop()


def text_update(doc: Doc, text: str) -> bytes:
    updates: list[bytes] = []
    subscription = doc.observe(lambda event: updates.append(event.update))
    content = doc.get("t", type=Text)
    content.insert(len(content), text)
    doc.unobserve(subscription)
    return updates[0]


async def open_store(server: MongoServer, database: str | None = None) -> MongoStore:
    # FerretDB on SQLite has no replica set, so majority means the one server.
    store = MongoStore(server.url, database or f"t{uuid.uuid4().hex[:8]}", write_concern="majority")
    await store.open()
    return store


def rebuild(snapshot: bytes | None, updates: list[bytes]) -> str:
    doc = Doc()
    if snapshot is not None:
        doc.apply_update(snapshot)
    for update in updates:
        doc.apply_update(update)
    return str(doc.get("t", type=Text))


async def test_burst_of_appends_is_few_batches(mongo: MongoServer) -> None:
    store = await open_store(mongo)
    doc = Doc()
    await asyncio.gather(*[store.append("doc", text_update(doc, "x")) for _ in range(500)])
    assert store.commits < 50, f"500 queued appends took {store.commits} batches"
    loaded = await store.load("doc")
    assert len(loaded.updates) == 500
    assert rebuild(loaded.snapshot, loaded.updates) == "x" * 500
    await store.close()


async def test_snapshot_replaces_only_earlier_entries(mongo: MongoServer) -> None:
    store = await open_store(mongo)
    doc = Doc()
    store.append("doc", text_update(doc, "a"))
    store.append("doc", text_update(doc, "b"))
    store.replace_with_snapshot("doc", doc.get_update(), doc.get_state())
    later = text_update(doc, "c")
    await store.append("doc", later)
    loaded = await store.load("doc")
    assert loaded.updates == [later]
    assert rebuild(loaded.snapshot, loaded.updates) == "abc"
    await store.close()


async def test_indexes_exist_after_open(mongo: MongoServer) -> None:
    store = await open_store(mongo, "indexes")
    await store.close()
    client = AsyncMongoClient(mongo.url)
    snapshot_indexes = await client["indexes"].snapshots.index_information()
    update_indexes = await client["indexes"].updates.index_information()
    await client.close()
    assert any(info.get("unique") and info["key"] == [("doc", 1)] for info in snapshot_indexes.values())
    assert any(info.get("unique") and info["key"] == [("doc", 1), ("seq", 1)] for info in update_indexes.values())


async def test_reopen_continues_sequence(mongo: MongoServer) -> None:
    store = await open_store(mongo, "reopen")
    doc = Doc()
    await store.append("doc", text_update(doc, "a"))
    await store.close()
    reopened = await open_store(mongo, "reopen")
    await reopened.append("doc", text_update(doc, "b"))
    loaded = await reopened.load("doc")
    assert rebuild(loaded.snapshot, loaded.updates) == "ab"
    await reopened.close()


async def test_delete_removes_everything(mongo: MongoServer) -> None:
    store = await open_store(mongo)
    doc = Doc()
    store.append("doc", text_update(doc, "a"))
    store.replace_with_snapshot("doc", doc.get_update(), doc.get_state())
    store.append("doc", text_update(doc, "b"))
    await store.delete("doc")
    loaded = await store.load("doc")
    assert loaded.snapshot is None
    assert loaded.updates == []
    await store.close()


async def test_writes_wait_out_a_server_restart(tmp_path: Path) -> None:
    server = MongoServer(tmp_path / "restart").start()
    store = MongoStore(server.url, "restart", timeout_seconds=1.0)
    await store.open()
    doc = Doc()
    await store.append("doc", text_update(doc, "a"))
    server.stop()
    pending = store.append("doc", text_update(doc, "b"))
    await asyncio.sleep(2.5)
    assert not pending.done()
    assert not await store.ping()
    restarted = MongoServer(tmp_path / "restart", port=server.port).start()
    try:
        await asyncio.wait_for(pending, 30)
        assert await store.ping()
        loaded = await store.load("doc")
        assert rebuild(loaded.snapshot, loaded.updates) == "ab"
        await store.close()
    finally:
        restarted.stop()


async def test_versions_are_kept_listed_and_read(mongo: MongoServer) -> None:
    store = await open_store(mongo)
    doc = Doc()
    states = []
    for word in ("one", "two", "three"):
        text_update(doc, word)
        states.append(doc.get_update())
        await store.save_version("doc", states[-1], keep=2)
    versions = await store.list_versions("doc")
    assert len(versions) == 2
    assert [v.version_id for v in versions] == sorted(v.version_id for v in versions)
    assert await store.load_version("doc", versions[0].version_id) == states[1]
    assert await store.load_version("doc", 999) is None
    await store.close()
