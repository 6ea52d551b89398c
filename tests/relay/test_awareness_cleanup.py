"""Awareness states of clients that leave, or stop renewing them, are removed and announced.

A removal reaches the other connections as an awareness entry with state
``null`` and a clock above the last one the client sent, as y-protocols'
``removeAwarenessStates`` does.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.support.raw_client import (
    AWARENESS_1001,
    QUERY_AWARENESS,
    STEP1_EMPTY,
    AwarenessEntry,
    Message,
    RawClient,
    awareness_update,
    wait_until,
)
from tests.support.relay_process import RelayProcess

pytestmark = pytest.mark.asyncio

CLIENT_A = 1001
STATE_A = {"user": "a"}
# The observer B sets its own state so that every query-awareness reply has at least one entry.
CLIENT_B = 2002
STATE_B = {"user": "b"}


def entries_of(message: Message) -> dict[int, AwarenessEntry]:
    return {entry.client: entry for entry in message.entries}


def has_state(client: int, state: object):
    """Return a predicate for an awareness message with ``client`` in ``state``."""

    def predicate(message: Message) -> bool:
        entry = entries_of(message).get(client) if message.is_awareness else None
        return entry is not None and entry.state == state

    return predicate


async def query_states(client: RawClient, timeout: float = 2.0) -> dict[int, AwarenessEntry]:
    """Send query-awareness and return the entries of the reply.

    A sync round trip first makes the relay send everything that this
    connection's earlier messages caused, and those frames are discarded, so
    the next awareness message is the reply and not a late broadcast.
    """
    await client.send_bytes(STEP1_EMPTY)
    await client.wait_for_step2(timeout)
    client.drain()
    await client.send_bytes(QUERY_AWARENESS)
    reply = await client.wait_for(lambda message: message.is_awareness, timeout)
    return entries_of(reply)


def removed_entries(client: RawClient) -> dict[int, AwarenessEntry]:
    """Return the last removal (state null) that ``client`` received for each client ID."""
    return {entry.client: entry for entry in client.awareness_entries() if entry.state is None}


async def join_with_state(relay: RelayProcess, doc_name: str, frame: bytes = AWARENESS_1001) -> RawClient:
    """Connect A, sync, send its awareness and wait until the relay has applied it."""
    client = await RawClient.connect(relay.url, doc_name)
    await client.send_bytes(STEP1_EMPTY)
    await client.send_bytes(frame)
    await client.wait_for_step2()
    states = await query_states(client)
    assert CLIENT_A in states
    return client


async def join_observer(relay: RelayProcess, doc_name: str) -> RawClient:
    """Connect B, sync, set B's state and check that a query lists A's state."""
    observer = await RawClient.connect(relay.url, doc_name)
    await observer.sync()
    await observer.send_bytes(awareness_update([(CLIENT_B, 1, STATE_B)]))
    states = await query_states(observer)
    assert states[CLIENT_B].state == STATE_B
    assert states[CLIENT_A].state == STATE_A
    assert states[CLIENT_A].clock == 1
    return observer


async def check_late_joiner_does_not_see(relay: RelayProcess, doc_name: str, client_id: int) -> None:
    """Check that a new connection's initial awareness and query reply omit ``client_id``."""
    late = await RawClient.connect(relay.url, doc_name)
    await late.sync()
    states = await query_states(late)
    assert CLIENT_B in states
    assert client_id not in states

    awareness_messages = [message for message in late.messages() if message.is_awareness]
    assert CLIENT_B in entries_of(awareness_messages[0]), "initial awareness does not list the connected client"
    assert all(entry.client != client_id for entry in late.awareness_entries())
    await late.close()


async def wait_for_removal(observer: RawClient, client_id: int, timeout: float) -> AwarenessEntry:
    message = await observer.wait_for(has_state(client_id, None), timeout)
    return entries_of(message)[client_id]


@pytest.mark.parametrize("how", ["tcp_reset", "tcp_abort", "close_1000"])
async def test_departed_client_state_removed(relay, how: str) -> None:
    process = relay()
    doc_name = f"awareness-{how}"
    departing = await join_with_state(process, doc_name)
    observer = await join_observer(process, doc_name)

    left_at = time.monotonic()
    if how == "tcp_reset":
        departing.abort(reset=True)
    elif how == "tcp_abort":
        departing.abort(reset=False)
    else:
        await departing.close(1000)

    removal = await wait_for_removal(observer, CLIENT_A, timeout=2.0)
    assert time.monotonic() - left_at < 2.0
    assert removal.state is None
    assert removal.clock > 1

    states = await query_states(observer)
    assert set(states) == {CLIENT_B}
    await check_late_joiner_does_not_see(process, doc_name, CLIENT_A)
    assert observer.is_open
    assert "Traceback" not in process.log_text()
    await observer.close()


async def test_all_states_of_dropped_connection_removed(relay) -> None:
    process = relay()
    doc_name = "awareness-two-states"
    two_states = awareness_update([(CLIENT_A, 1, STATE_A), (1003, 5, {"user": "c"})])
    departing = await join_with_state(process, doc_name, two_states)
    observer = await join_observer(process, doc_name)

    departing.abort(reset=True)
    await wait_until(
        lambda: {CLIENT_A, 1003} <= set(removed_entries(observer)),
        2.0,
        lambda: f"removals received: {sorted(removed_entries(observer))}",
    )

    removals = removed_entries(observer)
    assert removals[CLIENT_A].clock > 1
    assert removals[1003].clock > 5
    states = await query_states(observer)
    assert set(states) == {CLIENT_B}
    await observer.close()


async def test_query_returns_current_states(relay) -> None:
    process = relay()
    doc_name = "awareness-query"
    first = await join_with_state(process, doc_name)
    second = await RawClient.connect(process.url, doc_name)
    await second.sync()
    await second.send_bytes(awareness_update([(1002, 1, {"user": "second"})]))
    second_states = await query_states(second)
    assert 1002 in second_states
    observer = await RawClient.connect(process.url, doc_name)
    await observer.sync()

    states = await query_states(observer)
    assert {client: entry.state for client, entry in states.items()} == {
        CLIENT_A: STATE_A,
        1002: {"user": "second"},
    }

    await first.send_bytes(awareness_update([(CLIENT_A, 2, {"user": "a2"})]))
    await observer.wait_for(has_state(CLIENT_A, {"user": "a2"}), timeout=1.0)
    states = await query_states(observer)
    assert states[CLIENT_A].state == {"user": "a2"}
    assert states[CLIENT_A].clock == 2

    await first.send_bytes(awareness_update([(CLIENT_A, 3, None)]))
    await observer.wait_for(has_state(CLIENT_A, None), timeout=1.0)
    states = await query_states(observer)
    assert set(states) == {1002}

    for client in (first, second, observer):
        await client.close()


@pytest.mark.slow
async def test_state_not_renewed_times_out(relay) -> None:
    timeout_seconds = 2.0
    process = relay("--awareness-timeout", str(timeout_seconds))
    doc_name = "awareness-timeout"
    silent = await join_with_state(process, doc_name)
    set_at = time.monotonic()

    renewing = await RawClient.connect(process.url, doc_name)
    await renewing.sync()
    observer = await RawClient.connect(process.url, doc_name)
    await observer.sync()

    async def renew() -> None:
        for clock in range(1, 13):
            await renewing.send_bytes(awareness_update([(3003, clock, {"user": "renewing"})]))
            await asyncio.sleep(0.4)

    renew_task = asyncio.create_task(renew())
    removal = await wait_for_removal(observer, CLIENT_A, timeout=2 * timeout_seconds + 1.0)
    removed_after = time.monotonic() - set_at

    assert removal.clock > 1
    assert removed_after >= timeout_seconds * 0.9, f"removed after {removed_after:.2f} s"
    assert removed_after <= 2 * timeout_seconds + 0.5, f"removed after {removed_after:.2f} s"
    assert silent.is_open

    await renew_task
    assert 3003 not in removed_entries(observer), "a state renewed every 0.4 s was removed"
    states = await query_states(observer)
    assert CLIENT_A not in states
    assert states[3003].state == {"user": "renewing"}

    assert "Traceback" not in process.log_text()
    for client in (silent, renewing, observer):
        await client.close()
