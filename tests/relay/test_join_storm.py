"""A crowd joining one room at once costs one sync step 2 computation per document state."""

from __future__ import annotations

import asyncio

import pytest
from pycrdt import Doc, Text

from tests.support.raw_client import STEP1_EMPTY, RawClient, fetch_metrics
from tests.support.relay_process import RelayProcess

MIB = 1024 * 1024
JOINERS = 200
DOCUMENT_BYTES = 1 * MIB


def step2_computations(server: RelayProcess) -> float:
    return fetch_metrics(server.http_url)["yrelay_sync_step2_computed_total"]


async def join_all(server: RelayProcess, doc_name: str) -> list[str]:
    """Connect JOINERS clients at once, each sending an empty step 1; return each reply's text."""

    async def join() -> str:
        client = await RawClient.connect(server.url, doc_name, open_timeout=30)
        try:
            await client.send_bytes(STEP1_EMPTY)
            step2 = await client.wait_for_step2(timeout=60)
            reply = Doc()
            reply.apply_update(step2.payload)
            return str(reply.get("t", type=Text))
        finally:
            await client.close()

    return list(await asyncio.gather(*(join() for _ in range(JOINERS))))


@pytest.mark.parametrize("cold", [False, True], ids=["loaded_room", "cold_room"])
async def test_join_storm_computes_step2_once(relay, cold: bool) -> None:
    server: RelayProcess = relay()
    doc_name = "storm"
    writer = await RawClient.connect(server.url, doc_name)
    await writer.sync()
    content = "s" * DOCUMENT_BYTES
    await writer.edit_text(content)
    await writer.close()
    if cold:
        await asyncio.to_thread(server.restart)
    before = step2_computations(server)

    texts = await join_all(server, doc_name)

    assert texts.count(content) == JOINERS, "some joiners got an incomplete step 2"
    assert step2_computations(server) - before == 1

    editor = await RawClient.connect(server.url, doc_name)
    await editor.sync()
    await editor.edit_text("!")
    await editor.close()
    before_second = step2_computations(server)
    texts = await join_all(server, doc_name)
    assert texts.count(content + "!") == JOINERS
    assert step2_computations(server) - before_second == 1, "a new document state should cost one more"
