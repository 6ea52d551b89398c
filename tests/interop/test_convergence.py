"""Real y-websocket clients editing one document at the same time converge,
and a second document edited alongside stays separate."""

from __future__ import annotations

from typing import Any

import pytest

from tests.interop.helpers import decode_state_vector_base64
from tests.support.node import run_scenario

# Document names with '/', a space and percent-encoded UTF-8. The second
# name is a prefix of the first, so a relay that matched rooms by prefix
# would mix them up.
FIRST_DOC = "team/notes/caf%C3%A9 1"
SECOND_DOC = "team/notes"
EDITS_PER_CLIENT = 200
SEED = 20240917


def content(summary: dict[str, Any]) -> dict[str, Any]:
    return {key: summary[key] for key in ("text", "map", "array")}


def check_group(name: str, group: dict[str, Any]) -> None:
    clients = group["clients"]
    reference = clients[0]

    for client in clients[1:]:
        assert client["stateVector"] == reference["stateVector"], (
            f"{name} document: state vector of {client['name']} differs from {reference['name']}: "
            f"{decode_state_vector_base64(client['stateVector'])} != {decode_state_vector_base64(reference['stateVector'])}"
        )
    for client in clients[1:]:
        assert content(client) == content(reference), (
            f"{name} document: content of {client['name']} differs from {reference['name']} despite equal state vectors"
        )

    clocks = decode_state_vector_base64(reference["stateVector"])
    for editor in group["editorClientIds"]:
        assert clocks.get(editor, 0) > 0, f"{name} document: edits of client {editor} are missing: state vector {clocks}"
    assert reference["text"], f"{name} document: Y.Text is empty after the edits"
    assert reference["map"], f"{name} document: Y.Map is empty after the edits"
    assert reference["array"], f"{name} document: Y.Array is empty after the edits"

    late = group["late"]
    assert late["stateVector"] == reference["stateVector"], (
        f"{name} document: late client's state vector at 'synced' "
        f"{decode_state_vector_base64(late['stateVector'])} differs from the editors' {clocks}"
    )
    assert content(late) == content(reference), f"{name} document: late client's content at 'synced' differs from the editors'"


def check_no_leak(source_name: str, source: dict[str, Any], target_name: str, target: dict[str, Any], tag: str) -> None:
    leaked_ids = set(source["editorClientIds"]) & set(target["stateVectorClientIds"])
    assert not leaked_ids, f"updates of {source_name} clients {sorted(leaked_ids)} reached the {target_name} document"

    summary = target["clients"][0]
    assert f"<{tag}:" not in summary["text"], f"{target_name} Y.Text contains text written to the {source_name} document"
    leaked_keys = [key for key in summary["map"] if key.startswith(f"{tag}-")]
    assert not leaked_keys, f"{target_name} Y.Map contains keys written to the {source_name} document: {leaked_keys}"
    leaked_items = [item for item in summary["array"] if item.startswith(f"{tag}:")]
    assert not leaked_items, f"{target_name} Y.Array contains items written to the {source_name} document: {leaked_items[:5]}"


@pytest.mark.slow
def test_concurrent_editors_converge(start_server, record_property) -> None:
    server = start_server()

    result = run_scenario(
        "converge.mjs", server.url, FIRST_DOC, SECOND_DOC, EDITS_PER_CLIENT, SEED, timeout=150,
    )
    record_property("converge_ms", round(result["convergeMs"]))
    print(f"edits took {result['editMs']:.0f} ms, converged after {result['convergeMs']:.0f} ms")

    check_group("first", result["first"])
    check_group("second", result["second"])
    check_no_leak("first", result["first"], "second", result["second"], "first")
    check_no_leak("second", result["second"], "first", result["first"], "second")
