"""A write queued by a store's writer, shared by the SQLite and MongoDB stores."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class QueuedOperation:
    """One queued write; the writer sets ``future`` once it is committed.

    ``kind`` is "append", "snapshot", "version", "delete" or "barrier".
    ``state_vector`` carries the snapshot's state vector, or the number of
    versions to keep for "version". ``result`` is what the future returns.
    """

    kind: str
    doc: str
    data: bytes
    state_vector: bytes
    future: asyncio.Future[Any]
    result: Any = None
