"""Edits survive a relay restart: after SIGTERM everything the relay applied
is served, and after SIGKILL everything it had committed to SQLite is."""

from __future__ import annotations

import signal
import time
from urllib.parse import unquote

import pytest

from tests.interop.helpers import (
    committed_state, decode_state_vector_base64, first_difference, missing_clocks, wait_for_committed,
)
from tests.support.node import ScenarioProcess, run_scenario

# The relay percent-decodes the URL path, so SQLite stores the decoded name.
DOC = "durable/caf%C3%A9 notes"
STORED_DOC = unquote(DOC)
SERVICE_RESTART = 1012


def line(index: int) -> str:
    # Must match lineText() in write-lines.mjs.
    return f"line {index} café ✓\n"


@pytest.mark.slow
def test_sigterm_restart_serves_applied_edits(start_server, record_property) -> None:
    server = start_server(needs_persistence=True)
    line_count = 300

    with ScenarioProcess("write-lines.mjs", server.url, DOC, line_count, 0, "hold") as writer:
        applied = writer.wait_for_event("applied", timeout=30)
        started = time.monotonic()
        exit_code = server.stop(signal.SIGTERM)
        stop_seconds = time.monotonic() - started
        closed = writer.finish(timeout=60)
    record_property("sigterm_stop_s", round(stop_seconds, 3))
    print(f"SIGTERM stop took {stop_seconds:.2f} s")

    expected_text = "".join(line(i) for i in range(line_count))
    assert applied["text"] == expected_text, "the writer's own text is not the lines it wrote"
    assert exit_code == 0, f"relay exited with code {exit_code} after SIGTERM"
    assert closed["writerCloseCodes"][:1] == [SERVICE_RESTART], (
        f"writer's connection closed with codes {closed['writerCloseCodes']}, expected {SERVICE_RESTART} (service restart) first"
    )
    assert closed["observerCloseCodes"][:1] == [SERVICE_RESTART], (
        f"observer's connection closed with codes {closed['observerCloseCodes']}, expected {SERVICE_RESTART} first"
    )

    committed = committed_state(server.data_dir, STORED_DOC)
    assert committed.text == expected_text, (
        f"SQLite after SIGTERM does not hold the applied text: {first_difference(committed.text, expected_text)}"
    )
    assert committed.snapshot_rows == 1, f"expected one snapshot row for {STORED_DOC!r} after SIGTERM, found {committed.snapshot_rows}"
    assert committed.update_rows == 0, (
        f"{committed.update_rows} update rows of {STORED_DOC!r} are left after SIGTERM, which should compact them"
    )

    server.start()
    fresh = run_scenario("read-at-synced.mjs", server.url, DOC, 10000, timeout=60)
    record_property("fresh_sync_ms", round(fresh["syncMs"]))

    assert fresh["text"] == expected_text, (
        f"fresh client's text at 'synced' differs: {first_difference(fresh['text'], expected_text)}"
    )
    assert fresh["map"] == {f"line-{i}": i for i in range(line_count)}, "fresh client's Y.Map at 'synced' differs"
    assert fresh["stateVector"] == applied["stateVector"], (
        f"fresh client's state vector {decode_state_vector_base64(fresh['stateVector'])} differs from the "
        f"writer's {decode_state_vector_base64(applied['stateVector'])}"
    )


@pytest.mark.slow
def test_sigkill_restart_serves_committed_edits(start_server, record_property) -> None:
    server = start_server(needs_persistence=True)
    line_count = 600
    min_committed_lines = 100

    with ScenarioProcess("write-lines.mjs", server.url, DOC, line_count, 10, "stream") as writer:
        writer.wait_for_event("connected", timeout=30)
        wait_for_committed(
            server.data_dir, STORED_DOC, lambda state: state.text.count("\n") >= min_committed_lines,
            timeout=30, what=f"{min_committed_lines} lines to be committed",
        )
        # Read what is committed, then kill at once: the relay may commit more
        # in between, which is allowed, but never less.
        before_kill = committed_state(server.data_dir, STORED_DOC)
        server.kill()
        written = writer.finish(timeout=60)

    committed_lines = before_kill.text.count("\n")
    record_property("lines_committed_before_kill", committed_lines)
    print(f"{committed_lines} of {written['linesWritten']} lines were committed before SIGKILL")
    assert before_kill.text == "".join(line(i) for i in range(committed_lines)), (
        "committed text is not a prefix of whole lines; the writer appends one line per transaction"
    )
    assert committed_lines < line_count, "the writer finished before the kill, so the kill did not interrupt it"

    server.start()
    fresh = run_scenario("read-at-synced.mjs", server.url, DOC, 10000, timeout=60)
    record_property("fresh_sync_ms", round(fresh["syncMs"]))

    assert fresh["text"].startswith(before_kill.text), (
        f"fresh client's text at 'synced' lacks committed lines: "
        f"{first_difference(fresh['text'][:len(before_kill.text)], before_kill.text)}"
    )
    missing = missing_clocks(decode_state_vector_base64(fresh["stateVector"]), before_kill.state_vector)
    assert not missing, f"fresh client lacks committed updates, client: (served clock, committed clock): {missing}"
    missing_keys = sorted(set(before_kill.map) - set(fresh["map"]))
    assert not missing_keys, f"fresh client's Y.Map lacks committed keys: {missing_keys[:10]}"
