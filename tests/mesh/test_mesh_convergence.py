"""Relays joined by one NATS node share documents and presence.

Real Yjs clients (y-websocket providers run by Node) on three relays edit the
same two documents at once and end with the same state. Awareness states
cross relays, and they are removed at the other relays when their client
goes away or when their relay dies and stops sending heartbeats.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import nats
import pytest
from nats.aio.msg import Msg

from tests.interop.helpers import decode_state_vector_base64
from tests.support.node import ScenarioProcess, run_scenario
from tests.support.raw_client import AwarenessEntry, RawClient, awareness_update, connect, wait_until

from .helpers import RELAY_HEADER, SUBJECT_PREFIX, awareness_removals, mesh_script, read_counters

CLIENTS_PER_RELAY = 2
EDITS_PER_CLIENT = 80
SEED = 20240611
# A relay removes a client's awareness state as soon as its socket closes and
# publishes the removal, so other relays see it well within this.
REMOVAL_SEEN_WITHIN = 2.0
PEER_TIMEOUT = 3.0
# A relay sends a heartbeat every 2 s and checks for silent peers at each
# heartbeat, so it notices a dead peer between PEER_TIMEOUT and
# PEER_TIMEOUT + HEARTBEAT_INTERVAL after the peer's last message.
HEARTBEAT_INTERVAL = 2.0
# The bound after the kill: the peer's last message came at most one
# interval before it, and the rest is slack for a loaded test machine.
PEER_REMOVAL_WITHIN = 8.0
# Receive times of the relay and of this test's NATS subscriber differ by
# scheduling delays.
CLOCK_SLACK = 0.25
# A heartbeat may come this much later than the interval on a busy machine.
HEARTBEAT_SLACK = 0.5


def summary(record: dict[str, Any]) -> dict[str, Any]:
    return {key: record[key] for key in ("stateVector", "text", "map", "array")}


def check_document(report: dict[str, Any], tag: str, other_tag: str, relay_urls: list[str]) -> None:
    clients = report["clients"]
    expected = summary(clients[0])

    for client in clients[1:]:
        assert summary(client) == expected, (
            f"client {client['name']} on relay {client['relayIndex']} differs from {clients[0]['name']}: "
            f"state vector {decode_state_vector_base64(client['stateVector'])} vs "
            f"{decode_state_vector_base64(expected['stateVector'])}"
        )

    assert sorted(report["stateVectorClientIds"]) == sorted(report["editorClientIds"]), (
        "the converged state vector does not contain exactly the editing clients"
    )
    assert f"<{tag}:" in expected["text"], f"no edit of the {tag} document survived in its text"
    assert f"{other_tag}:" not in expected["text"], f"edits of the {other_tag} document leaked into the {tag} one"
    assert all(f"{other_tag}:" not in item for item in expected["array"]), (
        f"edits of the {other_tag} document leaked into the {tag} array"
    )

    assert [fresh["url"] for fresh in report["fresh"]] == relay_urls
    for fresh in report["fresh"]:
        assert summary(fresh) == expected, (
            f"a fresh client on {fresh['url']} held, at 'synced', state vector "
            f"{decode_state_vector_base64(fresh['stateVector'])} instead of "
            f"{decode_state_vector_base64(expected['stateVector'])}"
        )


@pytest.mark.slow
def test_three_relays_converge(mesh_relay) -> None:
    relays = [mesh_relay(relay_id) for relay_id in ("ra", "rb", "rc")]
    relay_urls = [relay.url for relay in relays]

    result = run_scenario(
        mesh_script("mesh-converge.mjs"), ",".join(relay_urls), "shared/first", "shared/second",
        CLIENTS_PER_RELAY, EDITS_PER_CLIENT, SEED,
        timeout=150,
    )
    print(f"edits took {result['editMs']:.0f} ms, converged after {result['convergeMs']:.0f} ms")

    check_document(result["first"], "first", "second", relay_urls)
    check_document(result["second"], "second", "first", relay_urls)
    for relay in relays:
        counters = read_counters(relay)
        assert counters.received_peer > 0, f"relay {relay.relay_id} received no update from its peers"
        assert counters.published > 0, f"relay {relay.relay_id} published none of its clients' updates"


def states_of(observer: RawClient, client_id: int) -> list[AwarenessEntry]:
    return [entry for entry in observer.awareness_entries() if entry.client == client_id and entry.state is not None]


async def test_killed_client_presence_removed(mesh_relay) -> None:
    relay_a = mesh_relay("ra")
    mesh_relay("rb")
    relay_c = mesh_relay("rc")
    doc_name = "presence/killed-client"
    observer = await connect(relay_c.url, doc_name)
    await observer.sync()

    with ScenarioProcess("awareness-peer.mjs", relay_a.url, doc_name, "A", 5000) as peer:
        ready = await asyncio.to_thread(peer.wait_for_event, "ready", 15)
        client_id = ready["clientID"]
        await wait_until(
            lambda: bool(states_of(observer, client_id)), 5,
            lambda: f"observer on relay C never saw client {client_id}'s awareness state set on relay A",
        )
        assert states_of(observer, client_id)[-1].state == {"user": {"name": "A", "color": "#30bced"}}
        assert awareness_removals(observer, client_id) == []

        killed_at = time.monotonic()
        peer.kill()

    await wait_until(
        lambda: bool(awareness_removals(observer, client_id)), REMOVAL_SEEN_WITHIN + 3,
        lambda: f"observer on relay C never saw client {client_id}'s state removed after its process was killed",
    )
    removed_at, removal = awareness_removals(observer, client_id)[0]
    print(f"removal seen on relay C {removed_at - killed_at:.3f} s after the client process was killed")
    assert removed_at - killed_at <= REMOVAL_SEEN_WITHIN, (
        f"relay C announced the removal {removed_at - killed_at:.2f} s after the client on relay A was killed"
    )
    assert removal.clock > states_of(observer, client_id)[-1].clock
    await observer.close()


class PeerWatch:
    """Arrival times of each relay's messages at this test's NATS connection."""

    def __init__(self) -> None:
        self.last_seen: dict[str, float] = {}
        self.heartbeats: dict[str, list[float]] = {}

    async def on_message(self, msg: Msg) -> None:
        relay = (msg.headers or {}).get(RELAY_HEADER)
        if not relay:
            return
        now = time.monotonic()
        self.last_seen[relay] = now
        if msg.subject == f"{SUBJECT_PREFIX}.hb.{relay}":
            self.heartbeats.setdefault(relay, []).append(now)


@pytest.mark.slow
async def test_killed_relay_presence_expires(mesh_relay, nats_server) -> None:
    peer_timeout = str(PEER_TIMEOUT)
    relay_a = mesh_relay("ra", "--peer-timeout", peer_timeout)
    relay_c = mesh_relay("rc", "--peer-timeout", peer_timeout)
    doc_name = "presence/killed-relay"
    watch = PeerWatch()
    nc = await nats.connect(nats_server.url, connect_timeout=2)
    await nc.subscribe(f"{SUBJECT_PREFIX}.>", cb=watch.on_message)

    observer = await connect(relay_c.url, doc_name)
    await observer.sync()
    client_a = await connect(relay_a.url, doc_name)
    await client_a.sync()
    await client_a.send_bytes(awareness_update([(4242, 1, {"user": "a"})]))
    await wait_until(
        lambda: bool(states_of(observer, 4242)), 5,
        lambda: "observer on relay C never saw the awareness state set on relay A",
    )

    # Without heartbeats relay C would remove the state within the peer
    # timeout plus one check interval of the last awareness message.
    await asyncio.sleep(PEER_TIMEOUT + HEARTBEAT_INTERVAL + 1)
    assert awareness_removals(observer, 4242) == [], "relay C removed the state of a live relay"
    beats = watch.heartbeats.get("ra", [])
    assert len(beats) >= 2, f"relay A sent {len(beats)} heartbeats in {PEER_TIMEOUT + HEARTBEAT_INTERVAL + 1} s"
    gaps = [later - earlier for earlier, later in zip(beats, beats[1:])]
    assert max(gaps) <= HEARTBEAT_INTERVAL + HEARTBEAT_SLACK, f"relay A's heartbeats came {gaps} s apart"

    relay_a.kill()
    killed_at = time.monotonic()
    last_seen = watch.last_seen["ra"]
    await wait_until(
        lambda: bool(awareness_removals(observer, 4242)), PEER_REMOVAL_WITHIN + 2,
        lambda: "relay C never removed the awareness state of the killed relay A",
    )
    removed_at, removal = awareness_removals(observer, 4242)[0]
    print(
        f"removal seen {removed_at - killed_at:.2f} s after relay A was killed, "
        f"{removed_at - last_seen:.2f} s after its last message on NATS"
    )
    assert removed_at - last_seen >= PEER_TIMEOUT - CLOCK_SLACK, (
        f"relay C removed relay A's states {removed_at - last_seen:.2f} s after A's last message, "
        f"before the peer timeout of {PEER_TIMEOUT} s"
    )
    assert removed_at - killed_at <= PEER_REMOVAL_WITHIN, (
        f"relay C removed relay A's states {removed_at - killed_at:.2f} s after A was killed"
    )
    assert removal.clock == 2, f"removal clock {removal.clock}, expected the state's clock 1 plus one"

    await observer.close()
    await client_a.wait_for_close()
    await nc.close()
