"""Roles hold across the mesh: a viewer on one relay cannot write through another.

Both relays check tokens with the same shared secret. The editor's edits
reach the viewer on the other relay. The viewer's edits are denied on its
own relay, so they are never published to JetStream and never reach the
editor's relay.
"""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

from auth import Role, issue_token
from tests.support.raw_client import (
    UPDATE_INSERT_HI,
    UPDATE_INSERT_RO,
    RawClient,
    doc_text,
    fetch_metrics,
    wait_until,
)

from .helpers import read_counters

SECRET = secrets.token_hex(32).encode()
READ_ONLY_REPLY = bytes.fromhex("02 00 09 72 65 61 64 2d 6f 6e 6c 79")


async def test_viewer_cannot_write_through_the_mesh(mesh_relay, tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_bytes(SECRET)
    relay_a = mesh_relay("ra", "--auth-secret-file", str(secret_file))
    relay_b = mesh_relay("rb", "--auth-secret-file", str(secret_file))
    doc_name = "mesh/roles"
    editor_token = issue_token(grants={"mesh/*": Role.EDITOR}, ttl=600, secret=SECRET)
    viewer_token = issue_token(grants={"mesh/*": Role.VIEWER}, ttl=600, secret=SECRET)

    editor = await RawClient.connect(relay_a.url, doc_name, token=editor_token)
    viewer = await RawClient.connect(relay_b.url, doc_name, token=viewer_token)
    await editor.sync()
    await viewer.sync()

    await viewer.send_update(UPDATE_INSERT_RO)
    await viewer.wait_for(lambda message: message.raw == READ_ONLY_REPLY, timeout=5)
    await editor.send_update(UPDATE_INSERT_HI)
    # The viewer's own document also contains its denied "ro".
    await wait_until(lambda: "hi" in doc_text(viewer.doc), 10, lambda: f"viewer has {doc_text(viewer.doc)!r}")
    await asyncio.sleep(1.0)

    assert doc_text(editor.doc) == "hi", "the viewer's edit reached the editor through the mesh"
    published_by_b = read_counters(relay_b).published
    assert published_by_b == 0, f"relay B published {published_by_b} updates from a viewer"
    assert read_counters(relay_a).published == 1
    assert fetch_metrics(relay_b.http_url).get("yrelay_writes_denied_total", 0) == 1
    for client in (editor, viewer):
        await client.close()
