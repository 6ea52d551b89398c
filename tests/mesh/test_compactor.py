"""The compactor folds the JetStream log into MongoDB snapshots and trims it."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pycrdt import Doc, Text
from pymongo import MongoClient

from tests.mesh.helpers import read_stream
from tests.support.mongo_server import MongoServer
from tests.support.raw_client import RawClient, doc_text, sync_update


def snapshot_of(mongo: MongoServer, database: str, doc: str) -> dict | None:
    client = MongoClient(mongo.url, serverSelectionTimeoutMS=3000)
    try:
        return client[database].mesh_snapshots.find_one({"doc": doc})
    finally:
        client.close()


def text_of(state: bytes) -> str:
    doc = Doc()
    doc.apply_update(state)
    return str(doc.get("t", type=Text))


async def wait_for_compaction(mongo: MongoServer, database: str, doc: str, expected: str, nats_url: str) -> dict:
    deadline = time.monotonic() + 30
    while True:
        snapshot = snapshot_of(mongo, database, doc)
        if snapshot is not None and text_of(snapshot["data"]) == expected and not await read_stream(nats_url, doc):
            return snapshot
        assert time.monotonic() < deadline, f"not compacted within 30 s: {snapshot and text_of(snapshot['data'])!r}"
        await asyncio.sleep(0.25)


@pytest.fixture
def mongo(tmp_path: Path):
    server = MongoServer(tmp_path / "mongo").start()
    yield server
    server.stop()


async def test_log_folds_into_snapshot_and_is_trimmed(mesh_relay, nats_server, mongo) -> None:
    options = ("--mongodb", mongo.url, "--mongodb-database", "compacted")
    relay_a = mesh_relay("ca", *options)
    relay_b = mesh_relay("cb", *options)
    writer = await RawClient.connect(relay_a.url, "compact/doc")
    reader = await RawClient.connect(relay_b.url, "compact/doc")
    await writer.sync()
    await reader.sync()
    expected = ""
    for index in range(300):
        piece = f"{index};"
        await writer.edit_text(piece)
        expected += piece
    await reader.wait_for_text(expected, timeout=10)

    snapshot = await wait_for_compaction(mongo, "compacted", "compact/doc", expected, nats_server.url)
    assert snapshot["stream_seq"] >= 300
    await writer.ws.close()
    await reader.ws.close()

    # Both relays crash; the document comes back from the snapshot alone.
    relay_a.kill()
    relay_b.kill()
    relay_a.start()
    fresh = await RawClient.connect(relay_a.url, "compact/doc")
    await fresh.sync()
    assert doc_text(fresh.doc) == expected
    await fresh.ws.close()


async def test_snapshot_plus_tail_after_restart(mesh_relay, nats_server, mongo) -> None:
    relay = mesh_relay("st", "--mongodb", mongo.url, "--mongodb-database", "tail", "--no-compactor")
    writer = await RawClient.connect(relay.url, "tail/doc")
    await writer.sync()
    await writer.edit_text("kept in the stream")
    await asyncio.sleep(0.3)
    await writer.ws.close()
    assert snapshot_of(mongo, "tail", "tail/doc") is None, "--no-compactor must not write snapshots"
    relay.restart(signal.SIGKILL)
    fresh = await RawClient.connect(relay.url, "tail/doc")
    await fresh.sync()
    assert doc_text(fresh.doc) == "kept in the stream"
    await fresh.ws.close()


@pytest.mark.slow
async def test_two_compactors_race_without_loss(mesh_relay, nats_server, mongo, tmp_path: Path) -> None:
    options = ("--mongodb", mongo.url, "--mongodb-database", "race", "--no-compactor")
    relay_a = mesh_relay("ra", *options)
    relay_b = mesh_relay("rb", *options)
    compactors = []
    logs = []
    for name in ("one", "two"):
        log = open(tmp_path / f"compactor-{name}.log", "wb")
        logs.append(log)
        compactors.append(subprocess.Popen(
            [sys.executable, "-m", "relay", "compact", "--nats", nats_server.url, "--mongodb", mongo.url,
             "--mongodb-database", "race", "--compactor-id", name],
            stdout=log, stderr=subprocess.STDOUT,
        ))
    try:
        first = await RawClient.connect(relay_a.url, "race/doc")
        second = await RawClient.connect(relay_b.url, "race/doc")
        await first.sync()
        await second.sync()
        seen_versions: list[tuple[int, int]] = []
        expected_a = expected_b = ""
        for index in range(200):
            await first.edit_text(f"a{index};")
            await second.edit_text(f"b{index};")
            if index % 20 == 0:
                snapshot = snapshot_of(mongo, "race", "race/doc")
                if snapshot is not None:
                    seen_versions.append((snapshot["version"], snapshot["stream_seq"]))
                await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)
        final_text = doc_text(first.doc)
        assert doc_text(second.doc) == final_text
        for index in range(200):
            assert f"a{index};" in final_text and f"b{index};" in final_text
        snapshot = await wait_for_compaction(mongo, "race", "race/doc", final_text, nats_server.url)
        seen_versions.append((snapshot["version"], snapshot["stream_seq"]))
        assert seen_versions == sorted(seen_versions), "snapshot versions and positions must only grow"
        assert len({version for version, _ in seen_versions}) == len(set(seen_versions)), (
            "one version number must never name two different snapshots"
        )
        await first.ws.close()
        await second.ws.close()
        relay_a.kill()
        relay_a.start()
        fresh = await RawClient.connect(relay_a.url, "race/doc")
        await fresh.sync()
        assert doc_text(fresh.doc) == final_text
        await fresh.ws.close()
    finally:
        for process in compactors:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=20)
        for log in logs:
            log.close()
    compacted_by = [
        (tmp_path / f"compactor-{name}.log").read_text().count("compacted doc=race/doc") for name in ("one", "two")
    ]
    assert sum(compacted_by) >= 1, compacted_by


def metric(http_url: str, name: str) -> float:
    import urllib.request

    with urllib.request.urlopen(f"{http_url}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"metric {name} not found")


@pytest.mark.slow
async def test_redis_then_mongodb_then_neither(mesh_relay, nats_server, mongo, tmp_path: Path) -> None:
    from tests.support.redis_server import RedisServer

    cache = RedisServer(tmp_path / "redis").start()
    try:
        relay = mesh_relay("rc", "--mongodb", mongo.url, "--mongodb-database", "cached", "--redis", cache.url)
        writer = await RawClient.connect(relay.url, "cached/doc")
        await writer.sync()
        await writer.edit_text("first;")
        await wait_for_compaction(mongo, "cached", "cached/doc", "first;", nats_server.url)
        await writer.ws.close()
        await asyncio.sleep(0.5)

        relay.restart()
        fresh = await RawClient.connect(relay.url, "cached/doc")
        await fresh.sync()
        assert doc_text(fresh.doc) == "first;"
        assert metric(relay.http_url, "yrelay_cache_hits") >= 1, "the room must open from Redis"
        await fresh.ws.close()

        cache.stop()
        relay.restart()
        fresh = await RawClient.connect(relay.url, "cached/doc")
        await fresh.sync()
        assert doc_text(fresh.doc) == "first;", "the room must open from MongoDB with Redis stopped"
        assert metric(relay.http_url, "yrelay_cache_hits") == 0

        # Both stop mid-session: the relay keeps serving, JetStream keeps the log.
        other = await RawClient.connect(relay.url, "cached/doc")
        await other.sync()
        mongo.stop()
        await fresh.edit_text("second;")
        await other.wait_for_text("first;second;", timeout=2)
        restarted = MongoServer(tmp_path / "mongo", port=mongo.port).start()
        cache = RedisServer(tmp_path / "redis", port=cache.port).start()
        await wait_for_compaction(restarted, "cached", "cached/doc", "first;second;", nats_server.url)
        await fresh.ws.close()
        await other.ws.close()
        relay.restart(signal.SIGKILL)
        last = await RawClient.connect(relay.url, "cached/doc")
        await last.sync()
        assert doc_text(last.doc) == "first;second;"
        await last.ws.close()
        relay.stop()
        restarted.stop()
    finally:
        cache.stop()


async def test_delete_clears_snapshot_cache_and_stream(mesh_relay, nats_server, mongo, tmp_path: Path) -> None:
    import urllib.request

    import redis as redis_client

    from tests.support.redis_server import RedisServer

    cache = RedisServer(tmp_path / "redis").start()
    try:
        relay = mesh_relay("dl", "--mongodb", mongo.url, "--mongodb-database", "deleted", "--redis", cache.url)
        writer = await RawClient.connect(relay.url, "deleted/doc")
        await writer.sync()
        await writer.edit_text("compacted;")
        await wait_for_compaction(mongo, "deleted", "deleted/doc", "compacted;", nats_server.url)
        await writer.edit_text("tail;")
        await asyncio.sleep(0.3)
        keys = redis_client.Redis.from_url(cache.url)
        assert keys.exists("yrelay:doc:deleted/doc")

        request = urllib.request.Request(f"{relay.http_url}/docs/deleted/doc", method="DELETE")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 204
        assert (await writer.wait_for_close())[0] == 4410
        assert snapshot_of(mongo, "deleted", "deleted/doc") is None
        assert not keys.exists("yrelay:doc:deleted/doc")
        assert await read_stream(nats_server.url, "deleted/doc") == []
        keys.close()
    finally:
        cache.stop()


async def test_churn_keeps_snapshot_small(mesh_relay, nats_server, mongo) -> None:
    relay = mesh_relay("ch", "--mongodb", mongo.url, "--mongodb-database", "churn")
    client = await RawClient.connect(relay.url, "churn/doc")
    await client.sync()
    paragraph = "x" * 1024
    text = client.doc.get("t", type=Text)
    for _ in range(300):
        await client.edit_text(paragraph)
        before = client.doc.get_state()
        del text[0 : len(text)]
        await client.send_bytes(sync_update(client.doc.get_update(before)))
    snapshot = await wait_for_compaction(mongo, "churn", "churn/doc", "", nats_server.url)
    # 300 KiB were typed and deleted; the snapshot keeps only tombstones.
    assert len(snapshot["data"]) <= 64 * 1024, len(snapshot["data"])
    await client.ws.close()


async def test_versions_kept_and_restored_in_mesh_mode(mesh_relay, nats_server, mongo) -> None:
    import json

    from tests.relay.test_document_api import http

    relay = mesh_relay("hv", "--mongodb", mongo.url, "--mongodb-database", "history",
                       "--history-interval", "0", "--history-keep", "2")
    editor = await RawClient.connect(relay.url, "history/mesh")
    await editor.sync()
    texts = []
    for word in ("one;", "two;", "three;"):
        await editor.edit_text(word)
        texts.append(doc_text(editor.doc))
        await wait_for_compaction(mongo, "history", "history/mesh", texts[-1], nats_server.url)
    status, body = await asyncio.to_thread(http, "GET", f"{relay.http_url}/versions/history/mesh")
    assert status == 200
    versions = json.loads(body)
    assert len(versions) == 2, versions
    oldest = versions[0]["id"]
    status, _ = await asyncio.to_thread(http, "POST", f"{relay.http_url}/versions/history/mesh?id={oldest}")
    assert status == 204
    await editor.wait_for_text(texts[1])
    await editor.ws.close()
