"""Access without token checks: open on loopback, refused elsewhere unless allowed."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from auth import AuthSettings, TokenVerifier
from relay.access import AnonymousAccessRejected, check_anonymous_allowed, is_loopback
from tests.support.raw_client import UPDATE_INSERT_HI, RawClient
from tests.support.relay_process import RelayProcess, free_port


async def test_loopback_relay_accepts_anonymous_clients(relay) -> None:
    server: RelayProcess = relay()
    client = await RawClient.connect(server.url, "open/doc")
    await client.sync()
    await client.send_update(UPDATE_INSERT_HI)
    await client.close()
    assert "anonymous access: no token is required because the relay listens on loopback address 127.0.0.1" in (
        server.log_text()
    )


def test_public_address_without_auth_refuses_to_start(tmp_path: Path) -> None:
    port = free_port()
    # The process exits before binding, so nothing listens on any address.
    completed = subprocess.run(
        [sys.executable, "-m", "relay", "serve", "--host", "0.0.0.0", "--port", str(port),
         "--data-dir", str(tmp_path / "data")],
        capture_output=True, text=True, timeout=60,
    )
    assert completed.returncode == 2, completed.stderr
    assert "refusing to listen on 0.0.0.0 without token verification" in completed.stderr
    assert "--allow-anonymous" in completed.stderr
    with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
        probe.connect(("127.0.0.1", port))


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.0.0.2"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)
    assert "anonymous access" in check_anonymous_allowed(host, None, allow_anonymous=False)


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_other_hosts_need_auth_or_flag(host: str) -> None:
    assert not is_loopback(host)
    with pytest.raises(AnonymousAccessRejected):
        check_anonymous_allowed(host, None, allow_anonymous=False)
    assert "anyone who can reach this address" in check_anonymous_allowed(host, None, allow_anonymous=True)
    verifier = TokenVerifier(AuthSettings(secret=b"s" * 32))
    assert check_anonymous_allowed(host, verifier, allow_anonymous=False).startswith("tokens required")
