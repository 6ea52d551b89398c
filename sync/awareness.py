"""Awareness (presence) bookkeeping for one room, without I/O or clocks.

Follows y-protocols ``awareness.js``: every client id has a clock and a JSON
state; an entry replaces the known one when its clock is higher, or when the
clock is equal and the new state is null (a removal). The relay holds no
local state of its own; it tracks which connection set which client ids so
it can announce their removal when the connection goes away, and it expires
entries that were not renewed within a timeout, as y-protocols does with its
30 s ``outdatedTimeout`` (clients renew every 15 s while they are alive).

The caller passes the current time (seconds, any monotonic origin) into each
call, so tests control time.

Wire format of an awareness update:
    varUint count, count x (varUint client id, varUint clock, varString JSON state)
The JSON text ``null`` means the client is gone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Hashable

from .codec import Decoder, encode_varstring, encode_varuint
from .errors import InvalidAwareness, ProtocolError

# Smallest encoding of one entry: client id, clock and an empty string length.
_MIN_ENTRY_BYTES = 3
_NULL = "null"


@dataclass(slots=True)
class AwarenessEntry:
    """What the relay knows of one client id."""

    clock: int
    state_json: str
    owner: Hashable | None
    updated_at: float


def decode_awareness_update(payload: bytes) -> list[tuple[int, int, str]]:
    """Decode an awareness update into (client id, clock, JSON text) triples.

    Raises ``InvalidAwareness`` when the payload is truncated, claims more
    entries than it could hold, has text that is not UTF-8, or a state that
    is not JSON.
    """
    decoder = Decoder(payload)
    try:
        count = decoder.read_varuint()
        if count * _MIN_ENTRY_BYTES > decoder.remaining:
            raise InvalidAwareness()
        entries = []
        for _ in range(count):
            client_id = decoder.read_varuint()
            clock = decoder.read_varuint()
            state_json = decoder.read_varstring()
            json.loads(state_json)
            entries.append((client_id, clock, state_json))
    except InvalidAwareness:
        raise
    except (ProtocolError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidAwareness() from exc
    if decoder.remaining:
        raise InvalidAwareness()
    return entries


def encode_awareness_update(entries: list[tuple[int, int, str]]) -> bytes:
    """Encode (client id, clock, JSON text) triples as an awareness update."""
    parts = [encode_varuint(len(entries))]
    for client_id, clock, state_json in entries:
        parts.append(encode_varuint(client_id))
        parts.append(encode_varuint(clock))
        parts.append(encode_varstring(state_json))
    return b"".join(parts)


class AwarenessRegistry:
    """The awareness states of one room, and which connection owns each."""

    def __init__(self) -> None:
        self._entries: dict[int, AwarenessEntry] = {}
        self._owned: dict[Hashable, set[int]] = {}

    def __len__(self) -> int:
        return sum(1 for entry in self._entries.values() if entry.state_json != _NULL)

    def apply(self, payload: bytes, owner: Hashable, now: float) -> bytes | None:
        """Apply an awareness update sent by ``owner``.

        Returns the encoded update of the entries that were accepted, to be
        sent to the other connections, or None when nothing was accepted.
        Raises ``InvalidAwareness`` on a malformed payload, before changing
        anything.
        """
        accepted = self.apply_entries(payload, owner, now)
        if not accepted:
            return None
        return encode_awareness_update(accepted)

    def apply_entries(self, payload: bytes, owner: Hashable, now: float) -> list[tuple[int, int, str]]:
        """Apply an awareness update like ``apply``; return the accepted (client id, clock, state) entries."""
        accepted = []
        for client_id, clock, state_json in decode_awareness_update(payload):
            known = self._entries.get(client_id)
            is_null = state_json == _NULL
            if known is not None and not (
                clock > known.clock or (clock == known.clock and is_null and known.state_json != _NULL)
            ):
                continue
            if known is not None and known.owner is not None and known.owner != owner:
                self._owned.get(known.owner, set()).discard(client_id)
            self._entries[client_id] = AwarenessEntry(clock, state_json, None if is_null else owner, now)
            owned = self._owned.setdefault(owner, set())
            if is_null:
                owned.discard(client_id)
            else:
                owned.add(client_id)
            accepted.append((client_id, clock, state_json))
        return accepted

    def encode_clients(self, client_ids: set[int]) -> bytes | None:
        """Encode the current entries of ``client_ids``, removals included; None if none is known."""
        entries = [
            (client_id, entry.clock, entry.state_json)
            for client_id in client_ids
            if (entry := self._entries.get(client_id)) is not None
        ]
        if not entries:
            return None
        return encode_awareness_update(entries)

    def remove_owner(self, owner: Hashable, now: float) -> bytes | None:
        """Mark every state set by ``owner`` as removed (clock + 1, state null).

        Returns the encoded removal update for the other connections, or None
        when the owner had set nothing.
        """
        client_ids = self._owned.pop(owner, None)
        if not client_ids:
            return None
        return self._remove(client_ids, now)

    def expire(self, now: float, timeout: float) -> bytes | None:
        """Remove the states not renewed for ``timeout`` seconds.

        Returns the encoded removal update, or None when none expired.
        """
        stale = [
            client_id
            for client_id, entry in self._entries.items()
            if entry.state_json != _NULL and now - entry.updated_at >= timeout
        ]
        if not stale:
            return None
        for client_id in stale:
            owner = self._entries[client_id].owner
            if owner is not None:
                self._owned.get(owner, set()).discard(client_id)
        return self._remove(stale, now)

    def encode_all(self) -> bytes | None:
        """Encode every live state, for a joining client or a query; None if none."""
        live = [
            (client_id, entry.clock, entry.state_json)
            for client_id, entry in self._entries.items()
            if entry.state_json != _NULL
        ]
        if not live:
            return None
        return encode_awareness_update(live)

    def forget_removed(self) -> None:
        """Drop the tombstones of removed clients, for example when the room empties."""
        self._entries = {cid: entry for cid, entry in self._entries.items() if entry.state_json != _NULL}

    def _remove(self, client_ids: set[int] | list[int], now: float) -> bytes | None:
        removed = []
        for client_id in client_ids:
            entry = self._entries.get(client_id)
            if entry is None or entry.state_json == _NULL:
                continue
            entry.clock += 1
            entry.state_json = _NULL
            entry.owner = None
            entry.updated_at = now
            removed.append((client_id, entry.clock, _NULL))
        if not removed:
            return None
        return encode_awareness_update(removed)
