"""The automerge-paper editing trace, replayed through a real Yjs client,
reaches the relay whole and survives a restart."""

from __future__ import annotations

import gzip
import json
import os
import signal
import time

import pytest

from tests.interop.helpers import first_difference
from tests.support.node import run_scenario
from tests.support.settings import trace_file

TRACE = "sequential/automerge-paper.json.gz"
# One Yjs transaction per trace txn, as a person typing would produce: 259,778
# update messages, about 20 s on a 2-core machine. A larger value groups
# consecutive txns into one transaction for a quicker run.
TXNS_PER_TRANSACTION = int(os.environ.get("YRELAY_TRACE_TXNS_PER_TRANSACTION", "1"))
REPLAY_TIMEOUT = 600.0


@pytest.mark.slow
def test_trace_replay_survives_restart(start_server, record_property) -> None:
    trace_path = trace_file(TRACE)
    with gzip.open(trace_path, "rt", encoding="utf-8") as trace_stream:
        end_content = json.load(trace_stream)["endContent"]
    server = start_server(needs_persistence=True)
    doc = "traces/automerge-paper"

    replay = run_scenario(
        "trace-replay.mjs", server.url, doc, trace_path, TXNS_PER_TRANSACTION, REPLAY_TIMEOUT * 1000,
        timeout=REPLAY_TIMEOUT + 120,
    )
    assert replay["writerText"] == end_content, (
        f"replaying client's own text differs from endContent: {first_difference(replay['writerText'], end_content)}"
    )
    assert replay["observerText"] == end_content, (
        f"observer's text differs from endContent: {first_difference(replay['observerText'], end_content)}"
    )

    started = time.monotonic()
    server.restart(signal.SIGTERM)
    restart_seconds = time.monotonic() - started

    fresh = run_scenario("read-at-synced.mjs", server.url, doc, 60000, timeout=120)
    assert fresh["text"] == end_content, (
        f"fresh client's text at 'synced' differs from endContent: {first_difference(fresh['text'], end_content)}"
    )
    assert fresh["stateVector"] == replay["stateVector"], "fresh client's state vector differs from the replaying client's"

    timings = {
        "trace_local_apply_s": replay["localApplyMs"] / 1000,
        "trace_replay_s": replay["replayMs"] / 1000,
        "trace_restart_s": restart_seconds,
        "trace_fresh_sync_s": fresh["syncMs"] / 1000,
    }
    for name, value in timings.items():
        record_property(name, round(value, 3))
    print(
        f"\n{replay['txns']} txns in {replay['transactions']} transactions: applied locally in "
        f"{timings['trace_local_apply_s']:.1f} s, observer had everything after {timings['trace_replay_s']:.1f} s; "
        f"SIGTERM restart took {timings['trace_restart_s']:.1f} s; fresh client synced in {timings['trace_fresh_sync_s']:.2f} s"
    )
