"""Redis in front of MongoDB: opening rooms from the cache, and outages of either."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import redis

from tests.support.mongo_server import MongoServer
from tests.support.raw_client import RawClient, doc_text
from tests.support.redis_server import RedisServer


def cache_keys(server: RedisServer) -> dict[bytes, int]:
    client = redis.Redis.from_url(server.url)
    try:
        return {key: client.ttl(key) for key in client.scan_iter("yrelay:doc:*")}
    finally:
        client.close()


def metric(http_url: str, name: str) -> float:
    import urllib.request

    with urllib.request.urlopen(f"{http_url}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"metric {name} not found")


async def write_and_unload(url: str, name: str, text: str) -> None:
    writer = await RawClient.connect(url, name)
    await writer.sync()
    await writer.edit_text(text)
    await asyncio.sleep(0.3)
    await writer.ws.close()
    # --unload-grace 0.2: the room folds its log into a snapshot, which
    # the cache then holds.
    await asyncio.sleep(1.0)


async def read(url: str, name: str) -> str:
    reader = await RawClient.connect(url, name)
    await reader.sync()
    text = doc_text(reader.doc)
    await reader.ws.close()
    return text


async def test_room_opens_from_cache_and_without_it(relay, tmp_path: Path) -> None:
    mongo = MongoServer(tmp_path / "mongo").start()
    cache = RedisServer(tmp_path / "redis").start()
    try:
        server = relay("--mongodb", mongo.url, "--mongodb-database", "cached", "--redis", cache.url,
                       "--redis-ttl", "600", "--unload-grace", "0.2")
        await write_and_unload(server.url, "cached/doc", "hello")
        keys = cache_keys(cache)
        assert len(keys) == 1, keys
        assert all(0 < ttl <= 600 for ttl in keys.values()), "every cached document must have a TTL"

        assert await read(server.url, "cached/doc") == "hello"
        assert metric(server.http_url, "yrelay_cache_hits") == 1, "the room must open from the cache"

        cache.stop()
        await asyncio.sleep(1.0)
        assert await read(server.url, "cached/doc") == "hello", "must open from MongoDB with Redis stopped"
        assert "Redis read failed" in server.log_text()
    finally:
        cache.stop()
        mongo.stop()


async def test_keeps_serving_when_both_stop(relay, tmp_path: Path) -> None:
    mongo = MongoServer(tmp_path / "mongo").start()
    cache = RedisServer(tmp_path / "redis").start()
    server = relay("--mongodb", mongo.url, "--mongodb-database", "outage", "--redis", cache.url)
    try:
        first = await RawClient.connect(server.url, "both/down")
        second = await RawClient.connect(server.url, "both/down")
        await first.sync()
        await second.sync()
        await first.edit_text("a")
        await second.wait_for_text("a")
        mongo.stop()
        cache.stop()
        await first.edit_text("b")
        await second.wait_for_text("ab", timeout=1.0)
        mongo = MongoServer(tmp_path / "mongo", port=mongo.port).start()
        cache = RedisServer(tmp_path / "redis", port=cache.port).start()
        await first.edit_text("c")
        await second.wait_for_text("abc", timeout=1.0)
        await first.ws.close()
        await second.ws.close()
        server.restart(signal.SIGTERM)
        assert await read(server.url, "both/down") == "abc"
        server.stop()
    finally:
        cache.stop()
        mongo.stop()
