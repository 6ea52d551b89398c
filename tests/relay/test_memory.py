"""Memory of the relay process across many short-lived rooms and reconnects.

Every room a connection opens must be unloaded ``--unload-grace`` seconds
after its last connection closes, and what it held must be released, so the
resident set size (RSS) stays near its baseline however many rooms came and
went.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.support.raw_client import (
    STEP1_EMPTY,
    RawClient,
    doc_text,
    fetch_doc,
    fetch_metrics,
    sync_step1,
)
from tests.support.relay_process import RelayProcess

KIB = 1024
MIB = 1024 * KIB
UNLOAD_GRACE_SECONDS = 0.2
RSS_GROWTH_LIMIT = 64 * MIB
WARM_UP_ROUNDS = 100
SHORT_ROOM_ROUNDS = 5000
# The loop stops early, and reports how far it got, when the rounds take longer than this.
SHORT_ROOM_TIME_BUDGET_SECONDS = 150.0
RECONNECT_CYCLES = 500
RECONNECT_WARM_UP_CYCLES = 20


def metric_total(http_url: str, name: str) -> float:
    """Return the sum of every sample of metric ``name`` on ``/metrics``."""
    samples = fetch_metrics(http_url)
    return sum(value for key, value in samples.items() if key == name or key.startswith(name + "{"))


async def wait_until_unloaded(server: RelayProcess, timeout: float) -> float:
    """Wait until ``yrelay_rooms_loaded`` is 0 and return how long that took."""
    started = time.monotonic()
    while (loaded := await asyncio.to_thread(metric_total, server.http_url, "yrelay_rooms_loaded")) != 0:
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{loaded:g} rooms still loaded {timeout} s after the last connection closed")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def write_and_close(base_url: str, doc_name: str, text: str) -> None:
    """Connect, append ``text`` in one update and close at once, as a short-lived tab does."""
    client = await RawClient.connect(base_url, doc_name)
    await client.edit_text(text)
    await client.close()


async def read_and_close(base_url: str, doc_name: str) -> str:
    """Connect, fetch the whole document with an empty step 1, close and return its text."""
    client = await RawClient.connect(base_url, doc_name)
    await client.send_bytes(STEP1_EMPTY)
    await client.wait_for_step2(timeout=10)
    text = doc_text(client.doc)
    await client.close()
    return text


@pytest.mark.slow
async def test_short_lived_rooms_do_not_leak_memory(relay) -> None:
    server: RelayProcess = relay("--unload-grace", str(UNLOAD_GRACE_SECONDS))
    payload = ("0123456789abcdef" * (10 * KIB // 16))[: 10 * KIB]

    for index in range(WARM_UP_ROUNDS):
        await write_and_close(server.url, f"mem-warm-{index}", payload)
    await wait_until_unloaded(server, timeout=30)
    await asyncio.sleep(0.5)
    rss_baseline = server.rss_bytes()

    started = time.monotonic()
    rounds = 0
    while rounds < SHORT_ROOM_ROUNDS and time.monotonic() - started < SHORT_ROOM_TIME_BUDGET_SECONDS:
        await write_and_close(server.url, f"mem-{rounds}", payload)
        rounds += 1
    rounds_seconds = time.monotonic() - started
    rss_after_rounds = server.rss_bytes()
    unload_seconds = await wait_until_unloaded(server, timeout=60)
    await asyncio.sleep(UNLOAD_GRACE_SECONDS + 0.5)
    rss_after_unload = server.rss_bytes()
    connections = await asyncio.to_thread(metric_total, server.http_url, "yrelay_connections")
    print(
        f"\n{rounds} rounds in {rounds_seconds:.1f} s; RSS baseline {rss_baseline / MIB:.1f} MiB, "
        f"after rounds {rss_after_rounds / MIB:.1f} MiB, after unload {rss_after_unload / MIB:.1f} MiB "
        f"(unloaded {unload_seconds:.1f} s after the last round)"
    )

    assert rounds == SHORT_ROOM_ROUNDS, f"only {rounds} rounds fit in {SHORT_ROOM_TIME_BUDGET_SECONDS} s"
    assert rss_after_unload - rss_baseline <= RSS_GROWTH_LIMIT
    assert connections == 0
    for index in (0, rounds // 2, rounds - 1):
        assert await read_and_close(server.url, f"mem-{index}") == payload, f"mem-{index} lost its update"


@pytest.mark.slow
async def test_reconnect_cycles_do_not_leak_memory(relay) -> None:
    server: RelayProcess = relay("--unload-grace", str(UNLOAD_GRACE_SECONDS))
    doc_name = "mem-reconnect"
    content = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * (MIB // 56 + 1))[:MIB]

    writer = await RawClient.connect(server.url, doc_name)
    await writer.edit_text(content)
    await writer.send_bytes(sync_step1(writer.doc.get_state()))
    await writer.wait_for_step2(timeout=10)
    await writer.close()

    for _ in range(RECONNECT_WARM_UP_CYCLES):
        assert await read_and_close(server.url, doc_name) == content
    await wait_until_unloaded(server, timeout=30)
    await asyncio.sleep(0.5)
    rss_baseline = server.rss_bytes()

    started = time.monotonic()
    mismatches = 0
    for _ in range(RECONNECT_CYCLES):
        if await read_and_close(server.url, doc_name) != content:
            mismatches += 1
    cycles_seconds = time.monotonic() - started
    rss_after_cycles = server.rss_bytes()
    unload_seconds = await wait_until_unloaded(server, timeout=30)
    await asyncio.sleep(UNLOAD_GRACE_SECONDS + 0.5)
    rss_after_unload = server.rss_bytes()
    connections = await asyncio.to_thread(metric_total, server.http_url, "yrelay_connections")
    print(
        f"\n{RECONNECT_CYCLES} cycles in {cycles_seconds:.1f} s; RSS baseline {rss_baseline / MIB:.1f} MiB, "
        f"after cycles {rss_after_cycles / MIB:.1f} MiB, after unload {rss_after_unload / MIB:.1f} MiB "
        f"(unloaded {unload_seconds:.1f} s after the last cycle)"
    )

    assert mismatches == 0
    assert rss_after_unload - rss_baseline <= RSS_GROWTH_LIMIT
    assert connections == 0
    fresh_doc, _ = await fetch_doc(server.url, doc_name)
    assert doc_text(fresh_doc) == content
