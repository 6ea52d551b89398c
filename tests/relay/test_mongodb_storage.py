"""A relay storing in MongoDB (mongod or FerretDB): durability and outages."""

from __future__ import annotations

import asyncio
import signal
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support.mongo_server import MongoServer
from tests.support.raw_client import RawClient, doc_text


def readyz(http_url: str) -> int:
    try:
        with urllib.request.urlopen(f"{http_url}/readyz", timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
async def test_edits_survive_restart(relay, tmp_path: Path, sig: int) -> None:
    mongo = MongoServer(tmp_path / "mongo").start()
    try:
        server = relay("--mongodb", mongo.url, "--mongodb-database", "durability")
        writer = await RawClient.connect(server.url, "mongo/doc")
        await writer.sync()
        await writer.edit_text("hello")
        # The relay commits within milliseconds; SIGKILL must not lose it.
        await asyncio.sleep(0.5)
        await writer.ws.close()
        server.restart(sig)
        reader = await RawClient.connect(server.url, "mongo/doc")
        await reader.sync()
        assert doc_text(reader.doc) == "hello"
        await reader.ws.close()
        server.stop()
    finally:
        mongo.stop()


@pytest.mark.slow
async def test_outage_keeps_serving_and_loses_nothing(relay, tmp_path: Path) -> None:
    mongo = MongoServer(tmp_path / "mongo").start()
    server = relay("--mongodb", mongo.url, "--mongodb-database", "outage")
    try:
        first = await RawClient.connect(server.url, "mongo/outage")
        second = await RawClient.connect(server.url, "mongo/outage")
        await first.sync()
        await second.sync()
        await first.edit_text("a")
        await second.wait_for_text("a")
        mongo.stop()
        await first.edit_text("b")
        await second.wait_for_text("ab", timeout=1.0)
        status = await asyncio.to_thread(readyz, server.http_url)
        deadline = asyncio.get_running_loop().time() + 15
        while status == 200 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.5)
            status = await asyncio.to_thread(readyz, server.http_url)
        assert status == 503, "readyz must report the store outage"
        mongo = MongoServer(tmp_path / "mongo", port=mongo.port).start()
        deadline = asyncio.get_running_loop().time() + 30
        while await asyncio.to_thread(readyz, server.http_url) != 200:
            assert asyncio.get_running_loop().time() < deadline, "store did not recover within 30 s"
            await asyncio.sleep(0.5)
        await first.ws.close()
        await second.ws.close()
        server.restart(signal.SIGKILL)
        reader = await RawClient.connect(server.url, "mongo/outage")
        await reader.sync()
        assert doc_text(reader.doc) == "ab"
        await reader.ws.close()
        server.stop()
    finally:
        mongo.stop()


async def test_shutdown_with_store_down_is_bounded(relay, tmp_path: Path) -> None:
    import time

    mongo = MongoServer(tmp_path / "mongo").start()
    server = relay("--mongodb", mongo.url, "--mongodb-database", "bounded", "--shutdown-grace", "2")
    client = await RawClient.connect(server.url, "mongo/bounded")
    await client.sync()
    mongo.stop()
    await client.edit_text("unsaved")
    started = time.monotonic()
    exit_code = server.stop(signal.SIGTERM, timeout=60)
    elapsed = time.monotonic() - started
    assert exit_code == 0
    # Draining and closing the store are each bounded by the grace period.
    assert elapsed < 2 * 2 + 5, f"shutdown took {elapsed:.1f} s with the store down"
    assert "store operations not written" in server.log_text()
