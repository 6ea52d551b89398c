"""Awareness updates from many clients are coalesced into few broadcasts."""

from __future__ import annotations

import asyncio

from relay.presence import AwarenessBatcher
from sync.awareness import AwarenessRegistry, decode_awareness_update, encode_awareness_update
from tests.support.raw_client import RawClient, awareness_update, wait_until
from tests.support.relay_process import RelayProcess

INTERVAL = 0.05


def make_batcher(registry: AwarenessRegistry, sent: list[tuple[bytes, object | None]]) -> AwarenessBatcher:
    return AwarenessBatcher(INTERVAL, registry.encode_clients, lambda payload, origin: sent.append((payload, origin)))


def offer(batcher: AwarenessBatcher, registry: AwarenessRegistry, client_id: int, clock: int, origin: str) -> None:
    payload = encode_awareness_update([(client_id, clock, f'{{"n":{clock}}}')])
    entries = registry.apply_entries(payload, origin, 0.0)
    batcher.offer([entry[0] for entry in entries], payload, origin)


async def test_first_update_is_sent_at_once() -> None:
    registry = AwarenessRegistry()
    sent: list[tuple[bytes, object | None]] = []
    batcher = make_batcher(registry, sent)

    offer(batcher, registry, 1, 1, "a")

    assert len(sent) == 1
    assert sent[0][1] == "a", "the origin must be excluded from an immediate broadcast"


async def test_burst_becomes_one_message_with_latest_entries() -> None:
    registry = AwarenessRegistry()
    sent: list[tuple[bytes, object | None]] = []
    batcher = make_batcher(registry, sent)

    offer(batcher, registry, 1, 1, "a")
    for clock in range(2, 6):
        offer(batcher, registry, 1, clock, "a")
        offer(batcher, registry, 2, clock, "b")
    assert len(sent) == 1
    await asyncio.sleep(INTERVAL * 2)

    assert len(sent) == 2
    batched = sorted(decode_awareness_update(sent[1][0]))
    assert batched == [(1, 5, '{"n":5}'), (2, 5, '{"n":5}')]


async def test_removal_wins_over_pending_state() -> None:
    registry = AwarenessRegistry()
    sent: list[tuple[bytes, object | None]] = []
    batcher = make_batcher(registry, sent)
    offer(batcher, registry, 1, 1, "a")
    offer(batcher, registry, 1, 2, "a")
    registry.remove_owner("a", 0.0)
    await asyncio.sleep(INTERVAL * 2)

    assert decode_awareness_update(sent[-1][0]) == [(1, 3, "null")]


async def test_closed_batcher_sends_nothing() -> None:
    registry = AwarenessRegistry()
    sent: list[tuple[bytes, object | None]] = []
    batcher = make_batcher(registry, sent)
    offer(batcher, registry, 1, 1, "a")
    offer(batcher, registry, 1, 2, "a")
    batcher.close()
    await asyncio.sleep(INTERVAL * 2)
    assert len(sent) == 1


async def test_relay_coalesces_presence_of_a_crowd(relay) -> None:
    server: RelayProcess = relay()
    senders = [await RawClient.connect(server.url, "presence") for _ in range(20)]
    observer = await RawClient.connect(server.url, "presence")
    for client in [*senders, observer]:
        await client.sync()
    observer.drain()

    rounds = 5
    for clock in range(1, rounds + 1):
        await asyncio.gather(*(
            sender.send_bytes(awareness_update([(1000 + index, clock, {"cursor": clock})]))
            for index, sender in enumerate(senders)
        ))
        await asyncio.sleep(0.01)

    def latest_clocks() -> dict[int, int]:
        clocks: dict[int, int] = {}
        for entry in observer.awareness_entries():
            clocks[entry.client] = max(entry.clock, clocks.get(entry.client, 0))
        return clocks

    expected = {1000 + index: rounds for index in range(len(senders))}
    await wait_until(lambda: latest_clocks() == expected, 5, lambda: f"observer has {latest_clocks()}")
    messages = [m for m in observer.messages() if m.is_awareness]
    print(f"{len(senders) * rounds} awareness updates reached the observer in {len(messages)} messages")
    assert len(messages) < len(senders) * rounds / 4
    for client in [*senders, observer]:
        await client.close()
