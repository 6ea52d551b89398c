"""A client that edits while disconnected merges with the edits made online
once it reconnects."""

from __future__ import annotations

from tests.support.node import run_scenario


def test_offline_edits_merge_on_reconnect(start_server) -> None:
    server = start_server()

    result = run_scenario("offline-merge.mjs", server.url, "offline/merge", timeout=60)

    offline = result["whileOffline"]
    assert "[B online]" not in offline["A"]["text"], "A received B's edit while disconnected"
    assert "[A offline]" not in offline["C"]["text"], "C received A's edit while A was disconnected"
    assert offline["B"] == offline["C"], "C did not receive B's online edit before A reconnected"

    final = result["final"]
    assert final["A"] == final["B"] == final["C"], f"clients did not converge: {final}"
    text = final["A"]["text"]
    for fragment in ("[A offline]", "[A tail]", "[B online]", "shared BASE\n"):
        assert fragment in text, f"merged text {text!r} lacks {fragment!r}"
    assert "base" not in text, f"merged text {text!r} still contains 'base', which B replaced while A was offline"
    assert final["A"]["map"] == {"offline": "A", "online": "B"}, f"merged Y.Map is {final['A']['map']}"
