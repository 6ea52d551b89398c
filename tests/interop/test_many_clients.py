"""A hundred y-websocket clients that join one document at the same moment
all reach 'synced' with the full state, whether the document is loaded in
the relay or still on disk."""

from __future__ import annotations

import re
import signal
import statistics
import urllib.request
from typing import Any

import pytest

from tests.support.node import run_scenario

CLIENT_COUNT = 100
SEED_LINES = 2000
SYNC_TIMEOUT_MS = 60000


def check_crowd(crowd: dict[str, Any], seeded: dict[str, Any]) -> None:
    assert crowd["timeoutError"] is None, crowd["timeoutError"]
    assert crowd["syncedCount"] == CLIENT_COUNT, f"only {crowd['syncedCount']} of {CLIENT_COUNT} clients reached synced"
    assert crowd["closeCodes"] == [], f"the relay closed client connections with codes {crowd['closeCodes']}"
    assert len(crowd["summaries"]) == 1, (
        f"clients saw {len(crowd['summaries'])} different documents at 'synced', counts by hash: {crowd['summaryCounts']}"
    )
    (summary,) = crowd["summaries"].values()
    assert summary["stateVector"] == seeded["stateVector"], "clients' state vector at 'synced' differs from the seeded one"
    assert summary["text"] == seeded["text"], "clients' Y.Text at 'synced' differs from the seeded text"
    assert summary["map"] == seeded["map"], "clients' Y.Map at 'synced' differs from the seeded map"
    assert summary["array"] == seeded["array"], "clients' Y.Array at 'synced' differs from the seeded array"


def report_timings(crowd: dict[str, Any], record_property, prefix: str) -> None:
    sync_ms = crowd["syncMs"]
    timings = {
        f"{prefix}_all_synced_ms": crowd["allSyncedMs"],
        f"{prefix}_median_sync_ms": statistics.median(sync_ms),
        f"{prefix}_max_sync_ms": max(sync_ms),
    }
    for name, value in timings.items():
        record_property(name, round(value))
    print(f"\n{CLIENT_COUNT} clients: " + ", ".join(f"{name} {value:.0f}" for name, value in timings.items()))


def metric_value(http_url: str, name: str) -> float:
    with urllib.request.urlopen(f"{http_url}/metrics", timeout=5) as response:
        text = response.read().decode()
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert match, f"metric {name} not found in /metrics output"
    return float(match.group(1))


@pytest.mark.slow
def test_hundred_clients_join_loaded_document(start_server, record_property) -> None:
    server = start_server()
    doc = "crowd/warm"
    seeded = run_scenario("seed.mjs", server.url, doc, SEED_LINES, timeout=120)

    crowd = run_scenario("crowd.mjs", server.url, doc, CLIENT_COUNT, SYNC_TIMEOUT_MS, timeout=SYNC_TIMEOUT_MS / 1000 + 60)

    report_timings(crowd, record_property, "warm")
    check_crowd(crowd, seeded)


@pytest.mark.slow
def test_hundred_clients_join_document_on_disk(start_server, record_property) -> None:
    server = start_server(needs_persistence=True)
    doc = "crowd/cold"
    seeded = run_scenario("seed.mjs", server.url, doc, SEED_LINES, timeout=120)
    server.restart(signal.SIGTERM)

    crowd = run_scenario("crowd.mjs", server.url, doc, CLIENT_COUNT, SYNC_TIMEOUT_MS, timeout=SYNC_TIMEOUT_MS / 1000 + 60)

    report_timings(crowd, record_property, "cold")
    check_crowd(crowd, seeded)
    loads = metric_value(server.http_url, "yrelay_room_loads_total")
    assert loads == 1, f"the relay loaded the document {loads:g} times for {CLIENT_COUNT} clients that joined together"
