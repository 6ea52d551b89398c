"""Helpers for the interop tests: reading what the relay committed to SQLite,
decoding state vectors and describing text mismatches."""

from __future__ import annotations

import base64
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pycrdt import Doc, Map, Text

DATABASE_NAME = "yrelay.sqlite3"


def decode_state_vector(data: bytes) -> dict[int, int]:
    """Decode a Yjs state vector (varUint count, then varUint client and clock pairs)."""
    position = 0

    def read_var_uint() -> int:
        nonlocal position
        value = 0
        shift = 0
        while True:
            if position >= len(data):
                raise ValueError(f"truncated state vector: {data.hex()}")
            byte = data[position]
            position += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value

    count = read_var_uint()
    clocks = {}
    for _ in range(count):
        client = read_var_uint()
        clocks[client] = read_var_uint()
    if position != len(data):
        raise ValueError(f"trailing bytes after state vector: {data.hex()}")
    return clocks


def decode_state_vector_base64(encoded: str) -> dict[int, int]:
    """Decode a base64 state vector as printed by the scenario scripts."""
    return decode_state_vector(base64.b64decode(encoded))


def missing_clocks(have: dict[int, int], need: dict[int, int]) -> dict[int, tuple[int, int]]:
    """Return the clients whose clock in ``have`` is below ``need``, as (have, need) pairs."""
    return {
        client: (have.get(client, 0), clock)
        for client, clock in need.items()
        if have.get(client, 0) < clock
    }


def first_difference(actual: str, expected: str) -> str:
    """Describe where two strings first differ, with a little context."""
    if actual == expected:
        return "strings are equal"
    index = next(
        (i for i, (a, b) in enumerate(zip(actual, expected)) if a != b),
        min(len(actual), len(expected)),
    )
    start = max(0, index - 30)
    return (
        f"lengths {len(actual)} (actual) and {len(expected)} (expected), first difference at index {index}: "
        f"actual {actual[start:index + 30]!r}, expected {expected[start:index + 30]!r}"
    )


@dataclass
class CommittedState:
    """A document rebuilt with pycrdt from the rows committed to the relay's SQLite file."""

    text: str = ""
    map: dict[str, Any] = field(default_factory=dict)
    state_vector: dict[int, int] = field(default_factory=dict)
    snapshot_rows: int = 0
    update_rows: int = 0


def _open_read_only(path: Path) -> sqlite3.Connection:
    # mode=ro still reads the WAL, so rows committed there are visible.
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)


def committed_state(data_dir: Path, doc_name: str) -> CommittedState:
    """Rebuild ``doc_name`` from the ``snapshots`` and ``updates`` rows in ``data_dir``.

    The database is opened read-only. Applying an update twice has no effect
    in Yjs, so the snapshot is applied first and then every update row of
    the document in ``seq`` order. Raises ``AssertionError`` naming the row
    when a stored blob is not a valid Yjs update.
    """
    path = Path(data_dir) / DATABASE_NAME
    state = CommittedState()
    if not path.exists():
        return state
    connection = _open_read_only(path)
    try:
        snapshots = connection.execute("SELECT data FROM snapshots WHERE doc = ?", (doc_name,)).fetchall()
        updates = connection.execute("SELECT seq, data FROM updates WHERE doc = ? ORDER BY seq", (doc_name,)).fetchall()
    finally:
        connection.close()

    doc = Doc()
    rows = [("snapshot", blob) for (blob,) in snapshots] + [(f"update seq={seq}", blob) for seq, blob in updates]
    for label, blob in rows:
        try:
            doc.apply_update(bytes(blob))
        except BaseException as error:
            # pycrdt reports some malformed updates with pyo3's PanicException,
            # which derives from BaseException.
            if isinstance(error, (KeyboardInterrupt, SystemExit)):
                raise
            raise AssertionError(
                f"{label} of doc {doc_name!r} in {path} is not a valid Yjs update ({error!r}): {bytes(blob)[:64].hex()}"
            ) from error

    state.text = str(doc.get("text", type=Text))
    state.map = doc.get("map", type=Map).to_py() or {}
    state.state_vector = decode_state_vector(doc.get_state())
    state.snapshot_rows = len(snapshots)
    state.update_rows = len(updates)
    return state


def stored_doc_names(data_dir: Path) -> list[str]:
    """Return the document names that have rows in the relay's SQLite file."""
    path = Path(data_dir) / DATABASE_NAME
    if not path.exists():
        return []
    connection = _open_read_only(path)
    try:
        rows = connection.execute("SELECT doc FROM snapshots UNION SELECT doc FROM updates").fetchall()
    finally:
        connection.close()
    return sorted(name for (name,) in rows)


def wait_for_committed(
    data_dir: Path, doc_name: str, condition: Callable[[CommittedState], bool], timeout: float, what: str,
) -> CommittedState:
    """Poll the SQLite file until ``condition`` holds for the committed document.

    Raises ``AssertionError`` describing ``what`` and the last committed
    state after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    last = CommittedState()
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            last = committed_state(data_dir, doc_name)
            last_error = None
        except sqlite3.OperationalError as error:
            # The relay may not have created its tables yet.
            last_error = error
        else:
            if condition(last):
                return last
        time.sleep(0.05)
    names = []
    try:
        names = stored_doc_names(data_dir)
    except sqlite3.OperationalError:
        pass
    raise AssertionError(
        f"timed out after {timeout} s waiting for {what} in {Path(data_dir) / DATABASE_NAME}: "
        f"doc {doc_name!r} has {last.snapshot_rows} snapshot and {last.update_rows} update rows, "
        f"text length {len(last.text)}; documents stored: {names!r}; last SQLite error: {last_error!r}"
    )
