"""Coalescing of awareness updates: at most one broadcast per room per interval.

Every client of a busy room sends presence (cursor, selection) updates, and
forwarding each one to every other client costs a send per pair, which grows
with the square of the room size. The batcher forwards the first update
after a quiet interval at once, so a lone cursor move is not delayed, and
collects the client ids changed during the next ``interval`` seconds into
one message that carries each client's latest entry.

The batched message also goes back to the clients whose states it carries.
y-protocols ignores an entry whose clock is not newer than the one it holds,
so a client that receives its own state back does nothing with it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable


class AwarenessBatcher:
    """Decides when a room's accepted awareness changes are broadcast."""

    def __init__(
        self,
        interval: float,
        encode_clients: Callable[[set[int]], bytes | None],
        broadcast: Callable[[bytes, object | None], None],
    ) -> None:
        self.interval = interval
        self._encode_clients = encode_clients
        self._broadcast = broadcast
        self._pending: set[int] = set()
        self._last_broadcast = float("-inf")
        self._timer: asyncio.TimerHandle | None = None

    def offer(self, client_ids: list[int], payload: bytes, origin: object | None) -> None:
        """Broadcast ``payload`` now if the room was quiet, else queue ``client_ids`` for the next batch."""
        now = time.monotonic()
        if self._timer is None and now - self._last_broadcast >= self.interval:
            self._last_broadcast = now
            self._broadcast(payload, origin)
            return
        self._pending.update(client_ids)
        if self._timer is None:
            delay = max(0.0, self._last_broadcast + self.interval - now)
            self._timer = asyncio.get_running_loop().call_later(delay, self._flush)

    def _flush(self) -> None:
        self._timer = None
        pending, self._pending = self._pending, set()
        payload = self._encode_clients(pending)
        if payload is not None:
            self._last_broadcast = time.monotonic()
            self._broadcast(payload, None)

    def close(self) -> None:
        """Drop what is pending, for a room that is being unloaded."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._pending.clear()
