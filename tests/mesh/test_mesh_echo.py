"""An update crosses the mesh once and is never sent back.

A relay publishes each update its own clients send exactly once, skips its
own messages when its consumer delivers them, and never publishes what it
received from the mesh. So N client updates on one relay give N publishes
there, none elsewhere, N peer deliveries at every other relay, one frame
per update at every other client, and nothing back to the sender. When the
clients stop, the counters stop.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.support.raw_client import RawClient, connect, doc_text, new_doc

from .helpers import MeshCounters, read_counters

UPDATES = 25
SEND_INTERVAL = 0.02
# The counters must stop moving within this many seconds after the last update.
QUIET_WITHIN = 1.0


def expected_text(count: int) -> str:
    return "".join(f"u{index};" for index in range(count))


def update_frames(client: RawClient) -> list[bytes]:
    return [message.payload for message in client.messages() if message.is_update]


def check_frames_once_in_order(name: str, client: RawClient) -> None:
    frames = update_frames(client)
    assert len(frames) == UPDATES, f"{name} received {len(frames)} update frames for {UPDATES} updates"
    doc = new_doc()
    for index, frame in enumerate(frames):
        doc.apply_update(frame)
        assert doc_text(doc) == expected_text(index + 1), (
            f"{name}'s update frame {index} does not carry update u{index}: text is {doc_text(doc)!r}"
        )


def check_counters(relay_ids: list[str], counters: list[MeshCounters]) -> None:
    sender, *others = counters
    assert sender.published == UPDATES, (
        f"sender relay {relay_ids[0]} published {sender.published:.0f} updates for {UPDATES} client updates"
    )
    assert sender.received_self == UPDATES, (
        f"sender relay {relay_ids[0]}'s consumer delivered {sender.received_self:.0f} of its own messages"
    )
    assert sender.received_peer == 0, (
        f"sender relay {relay_ids[0]} received {sender.received_peer:.0f} messages from peers, "
        "so a peer republished updates it received"
    )
    for relay_id, other in zip(relay_ids[1:], others):
        assert other.published == 0, f"relay {relay_id} republished {other.published:.0f} updates it received"
        assert other.received_peer == UPDATES, (
            f"relay {relay_id} received {other.received_peer:.0f} peer messages for {UPDATES} updates"
        )
        assert other.received_self == 0, f"relay {relay_id} has {other.received_self:.0f} messages of its own"


@pytest.mark.parametrize("relay_count", [2, 3])
async def test_updates_cross_mesh_once(mesh_relay, relay_count: int) -> None:
    relays = [mesh_relay(f"r{index}") for index in range(relay_count)]
    relay_ids = [relay.relay_id for relay in relays]
    doc_name = f"echo/{relay_count}-relays"

    sender = await connect(relays[0].url, doc_name)
    local_listener = await connect(relays[0].url, doc_name)
    remote_listeners = [await connect(relay.url, doc_name) for relay in relays[1:]]
    listeners = {"local listener": local_listener}
    listeners.update({f"listener on {relay.relay_id}": client for relay, client in zip(relays[1:], remote_listeners)})
    for client in [sender, *listeners.values()]:
        await client.sync()
    before = [read_counters(relay) for relay in relays]
    assert all(counters.published == 0 and counters.received == 0 for counters in before), before

    for index in range(UPDATES):
        await sender.edit_text(f"u{index};")
        await asyncio.sleep(SEND_INTERVAL)
    stopped_at = time.monotonic()
    for client in listeners.values():
        await client.wait_for_text(expected_text(UPDATES), 5)

    await asyncio.sleep(max(0.0, stopped_at + QUIET_WITHIN - time.monotonic()))
    after_quiet = [await asyncio.to_thread(read_counters, relay) for relay in relays]
    await asyncio.sleep(QUIET_WITHIN)
    later = [await asyncio.to_thread(read_counters, relay) for relay in relays]

    check_counters(relay_ids, after_quiet)
    assert later == after_quiet, (
        f"mesh counters still moved {QUIET_WITHIN} s after the clients stopped: {after_quiet} then {later}"
    )
    for name, client in listeners.items():
        check_frames_once_in_order(name, client)
    assert update_frames(sender) == [], f"the sender got {len(update_frames(sender))} of its updates back"
    assert sum(1 for message in sender.messages() if message.is_step2) == 1, "the sender got a second step 2"

    for client in [sender, *listeners.values()]:
        await client.close()
