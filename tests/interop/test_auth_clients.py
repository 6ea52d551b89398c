"""Roles and token expiry with real y-websocket clients.

The relay checks HS256 tokens with a shared secret. The clients pass their
token in the URL through the provider's ``params`` option, as y-websocket
applications do.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from pycrdt import Text

from auth import Role, issue_token
from tests.support.node import run_scenario
from tests.support.raw_client import RawClient, fetch_metrics
from tests.support.relay_process import RelayProcess

SECRET = secrets.token_hex(32).encode()
# Lifetime of the token that expires mid-session, in seconds.
SHORT_TTL = 3


def token(pattern: str, role: Role, ttl: float = 3600) -> str:
    return issue_token(grants={pattern: role}, ttl=ttl, secret=SECRET)


@pytest.fixture
def secured_relay(tmp_path: Path) -> Iterator[RelayProcess]:
    secret_file = tmp_path / "secret"
    secret_file.write_bytes(SECRET)
    server = RelayProcess(tmp_path / "data", ["--auth-secret-file", str(secret_file), "--auth-leeway", "0"])
    server.start()
    yield server
    server.stop()


async def read_text(server: RelayProcess, doc_name: str) -> str:
    client = await RawClient.connect(server.url, doc_name, token=token(doc_name, Role.VIEWER))
    try:
        await client.sync()
        return str(client.doc.get("text", type=Text))
    finally:
        await client.close()


@pytest.mark.slow
async def test_viewer_edits_reach_nobody(secured_relay: RelayProcess) -> None:
    doc_name = "roles/viewer"
    result = await asyncio.to_thread(
        run_scenario, "roles.mjs", secured_relay.url, doc_name,
        token("roles/*", Role.EDITOR), token("roles/*", Role.VIEWER), timeout=90,
    )

    assert "from-editor;" in result["viewerText"], "the viewer did not receive the editor's edit"
    assert "later;" in result["viewerText"], "the viewer stopped receiving edits after its own was denied"
    assert "from-viewer;" not in result["editorText"], "the viewer's edit reached the editor"
    assert result["viewerConnected"], "the viewer was disconnected for trying to edit"
    assert any("read-only" in line for line in result["warnings"]), result["warnings"]

    stored = await read_text(secured_relay, doc_name)
    assert stored == "from-editor;later;"
    secured_relay.restart()
    assert await read_text(secured_relay, doc_name) == "from-editor;later;"
    assert "write denied doc=roles/viewer conn=" in secured_relay.log_text()


@pytest.mark.slow
async def test_expired_token_closes_then_reconnects(secured_relay: RelayProcess) -> None:
    doc_name = "expiry/lines"
    short = token(doc_name, Role.EDITOR, ttl=SHORT_TTL)
    result = await asyncio.to_thread(
        run_scenario, "token-expiry.mjs", secured_relay.url, doc_name, short, token(doc_name, Role.EDITOR),
        timeout=90,
    )

    first_close = result["closes"][0]
    assert first_close["code"] == 4401, result["closes"]
    assert first_close["reason"] == "token expired"
    assert result["connected"]

    stored = await read_text(secured_relay, doc_name)
    assert stored == result["text"], "the relay lost lines written around the expiry"
    for line in range(result["written"]):
        assert f"line-{line};" in stored
    assert stored.endswith("after;")
    samples = fetch_metrics(secured_relay.http_url)
    assert samples.get('yrelay_connections_closed_total{code="4401"}', 0) >= 1
