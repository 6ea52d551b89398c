"""``yrelay export`` and ``yrelay import``: one file pair per document.

Export writes, for each stored document, ``<token>.yjs`` (the whole state as
one Yjs v1 update) and ``<token>.json`` (its name, size, state vector and a
SHA-256 of the update). ``<token>`` is the name in unpadded base64url, so any
document name becomes a safe file name. Import reads those pairs back and
stores each update as the document's snapshot.

Run either against a stopped relay's storage, or import into an empty
deployment: a running relay does not see documents imported under it until
their rooms are loaded again.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import TextIO

from pycrdt import Doc

from persistence import DocumentStore

from .progress import Progress


def _token(name: str) -> str:
    return base64.urlsafe_b64encode(name.encode("utf-8")).rstrip(b"=").decode("ascii")


def _state_of(snapshot: bytes | None, updates: list[bytes]) -> Doc:
    doc = Doc()
    if snapshot is not None:
        doc.apply_update(snapshot)
    for update in updates:
        doc.apply_update(update)
    return doc


async def export_documents(store: DocumentStore, target: Path, out: TextIO = sys.stderr) -> int:
    """Write every document of ``store`` into ``target``; returns how many."""
    target.mkdir(parents=True, exist_ok=True)
    names = await store.list_documents()
    progress = Progress("export", len(names), out)
    for name in names:
        stored = await store.load(name)
        doc = _state_of(stored.snapshot, stored.updates)
        state = doc.get_update()
        token = _token(name)
        (target / f"{token}.yjs").write_bytes(state)
        metadata = {
            "name": name,
            "bytes": len(state),
            "state_vector": doc.get_state().hex(),
            "sha256": hashlib.sha256(state).hexdigest(),
            "exported_at": time.time(),
        }
        (target / f"{token}.json").write_text(json.dumps(metadata, indent=2) + "\n")
        progress.advance()
    progress.finish()
    return len(names)


class BackupFormatError(Exception):
    """An export folder entry that cannot be imported; the message names the file."""


async def import_documents(store: DocumentStore, source: Path, out: TextIO = sys.stderr) -> int:
    """Store every document exported into ``source``; returns how many.

    Raises ``BackupFormatError`` for a missing or mismatching update file, before
    anything is written.
    """
    entries = []
    for metadata_path in sorted(source.glob("*.json")):
        metadata = json.loads(metadata_path.read_text())
        update_path = metadata_path.with_suffix(".yjs")
        if not update_path.exists():
            raise BackupFormatError(f"{update_path} is missing for {metadata_path}")
        state = update_path.read_bytes()
        if hashlib.sha256(state).hexdigest() != metadata["sha256"]:
            raise BackupFormatError(f"{update_path} does not match the SHA-256 in {metadata_path}")
        entries.append((metadata["name"], state))
    progress = Progress("import", len(entries), out)
    for name, state in entries:
        doc = Doc()
        doc.apply_update(state)
        await store.replace_with_snapshot(name, state, doc.get_state())
        progress.advance()
    await store.flush()
    progress.finish()
    return len(entries)
