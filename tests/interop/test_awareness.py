"""Awareness states of a client that dies without a WebSocket close frame are
removed for the other clients: at once when the kernel closes its socket,
and after the relay's awareness timeout when the socket stays open."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.node import run_scenario

AWARENESS_TIMEOUT = 5.0
# The client A renews its awareness state this often, well inside the timeout.
RENEW_MS = 1000
# A killed process's socket is closed by the kernel (FIN or RST), so the
# relay notices at once and announces the removal.
CLOSE_NOTICED_WITHIN = 2.0
# Slack above the awareness timeout for the relay's expiry check interval.
EXPIRY_SLACK = 2.5
EXPECTED_STATE = {"user": {"name": "A", "color": "#30bced"}}


def check_state_seen(result: dict[str, Any]) -> None:
    assert result["stateSeenByB"] == EXPECTED_STATE, f"B saw A's awareness state as {result['stateSeenByB']!r}"
    assert result["stateSeenByC"] == EXPECTED_STATE, (
        f"C (connected after A set its state) saw A's state as {result['stateSeenByC']!r}"
    )


@pytest.mark.slow
def test_killed_client_removed_promptly(start_server) -> None:
    server = start_server(awareness_timeout=AWARENESS_TIMEOUT)
    timeout_ms = server.awareness_timeout * 1000

    result = run_scenario(
        "awareness.mjs", server.url, "awareness/killed", "kill", RENEW_MS, 1500, timeout_ms + 5000,
        timeout=timeout_ms / 1000 + 60,
    )
    print(f"removal seen {result['removedAfterActionMs']} ms after SIGKILL")

    check_state_seen(result)
    assert result["presentAfterHold"] == {"B": True, "C": True}, (
        f"A's state disappeared while A was alive and renewing it: {result['presentAfterHold']}"
    )
    assert result["removalError"] is None, result["removalError"]
    for observer in ("B", "C"):
        elapsed = result["removedAfterActionMs"][observer] / 1000
        assert elapsed <= CLOSE_NOTICED_WITHIN, (
            f"{observer} saw A's state removed {elapsed:.2f} s after A was killed; the relay should notice "
            f"the closed socket within {CLOSE_NOTICED_WITHIN} s instead of waiting for the awareness timeout"
        )


@pytest.mark.slow
def test_frozen_client_expires_after_timeout(start_server) -> None:
    server = start_server(awareness_timeout=AWARENESS_TIMEOUT)
    timeout = server.awareness_timeout
    # Holding longer than the timeout checks that renewed states are kept.
    hold_ms = timeout * 1000 + 2000

    result = run_scenario(
        "awareness.mjs", server.url, "awareness/frozen", "freeze", RENEW_MS, hold_ms,
        (timeout + EXPIRY_SLACK + 5) * 1000,
        timeout=hold_ms / 1000 + timeout + 60,
    )
    print(f"removal seen {result['removedAfterLastUpdateMs']} ms after A's last renewal")

    check_state_seen(result)
    assert result["presentAfterHold"] == {"B": True, "C": True}, (
        f"A's state was removed while A renewed it every {RENEW_MS} ms for {hold_ms / 1000:.0f} s "
        f"(awareness timeout {timeout} s): {result['presentAfterHold']}"
    )
    assert result["removalError"] is None, result["removalError"]
    for observer in ("B", "C"):
        elapsed = result["removedAfterLastUpdateMs"][observer] / 1000
        assert elapsed >= timeout - 0.5, (
            f"{observer} saw A's state removed {elapsed:.2f} s after A's last renewal, before the "
            f"awareness timeout of {timeout} s"
        )
        assert elapsed <= timeout + EXPIRY_SLACK, (
            f"{observer} saw A's state removed {elapsed:.2f} s after A's last renewal; expected within "
            f"{timeout} s + {EXPIRY_SLACK} s"
        )
