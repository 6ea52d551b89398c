"""SQLiteStore: group commit, ordered snapshots, recovery from failed commits."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from pycrdt import Doc, Text

from persistence.sqlite import FILE_NAME, SQLiteStore


def text_update(doc: Doc, text: str) -> bytes:
    updates: list[bytes] = []
    subscription = doc.observe(lambda event: updates.append(event.update))
    doc.get("t", type=Text).insert(len(doc.get("t", type=Text)), text)
    doc.unobserve(subscription)
    return updates[0]


async def open_store(path: Path) -> SQLiteStore:
    store = SQLiteStore(path)
    await store.open()
    return store


async def test_burst_of_appends_is_few_commits(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    doc = Doc()
    futures = [store.append("doc", text_update(doc, "x")) for _ in range(1000)]
    await asyncio.gather(*futures)
    assert store.commits < 50, f"1000 queued appends took {store.commits} commits"
    loaded = await store.load("doc")
    assert len(loaded.updates) == 1000
    await store.close()


async def test_append_is_committed_when_future_completes(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    update = text_update(Doc(), "hello")
    await store.append("doc", update)
    with sqlite3.connect(tmp_path / FILE_NAME) as reader:
        rows = reader.execute("SELECT data FROM updates WHERE doc = 'doc'").fetchall()
    assert rows == [(update,)]
    await store.close()


async def test_snapshot_replaces_only_earlier_entries(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    doc = Doc()
    store.append("doc", text_update(doc, "a"))
    store.append("doc", text_update(doc, "b"))
    store.replace_with_snapshot("doc", doc.get_update(), doc.get_state())
    later = text_update(doc, "c")
    await store.append("doc", later)
    loaded = await store.load("doc")
    assert loaded.updates == [later]
    rebuilt = Doc()
    assert loaded.snapshot is not None
    rebuilt.apply_update(loaded.snapshot)
    for update in loaded.updates:
        rebuilt.apply_update(update)
    assert str(rebuilt.get("t", type=Text)) == "abc"
    await store.close()


async def test_documents_are_separate(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    await store.append("one", text_update(Doc(), "1"))
    assert (await store.load("two")).updates == []
    assert (await store.load("two")).snapshot is None
    await store.close()


async def test_close_commits_queued_writes(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    doc = Doc()
    for _ in range(100):
        store.append("doc", text_update(doc, "x"))
    await store.close()
    reopened = await open_store(tmp_path)
    assert len((await reopened.load("doc")).updates) == 100
    await reopened.close()


async def test_failed_commit_is_retried_without_loss(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path, busy_timeout_ms=20)
    await store.open()
    # Another connection holds the write lock, so the writer's commits fail
    # with "database is locked" until it lets go.
    blocker = sqlite3.connect(tmp_path / FILE_NAME, isolation_level=None)
    blocker.execute("PRAGMA busy_timeout=0")
    blocker.execute("BEGIN IMMEDIATE")
    update = text_update(Doc(), "kept")
    pending = store.append("doc", update)
    await asyncio.sleep(0.5)
    assert not pending.done()
    assert not await store.ping()
    blocker.execute("ROLLBACK")
    blocker.close()
    await asyncio.wait_for(pending, 10)
    assert await store.ping()
    assert (await store.load("doc")).updates == [update]
    await store.close()


@pytest.mark.parametrize("synchronous", ["FULL", "NORMAL"])
async def test_synchronous_setting_is_applied(tmp_path: Path, synchronous: str) -> None:
    store = SQLiteStore(tmp_path, synchronous=synchronous)
    await store.open()
    connection = store._connect()
    level = connection.execute("PRAGMA synchronous").fetchone()[0]
    connection.close()
    assert level == {"FULL": 2, "NORMAL": 1}[synchronous]
    await store.close()


@pytest.mark.parametrize(("delay", "expected_commits"), [(0.0, 2), (0.2, 1)])
async def test_commit_delay_groups_spaced_appends(tmp_path: Path, delay: float, expected_commits: int) -> None:
    store = SQLiteStore(tmp_path, commit_delay=delay)
    await store.open()
    doc = Doc()
    first = store.append("doc", text_update(doc, "a"))
    # Without a delay the first append is committed alone before the second arrives.
    await asyncio.sleep(0.05)
    second = store.append("doc", text_update(doc, "b"))
    await asyncio.gather(first, second)
    assert store.commits == expected_commits
    await store.close()
