"""One room's shared document: apply updates once, answer state requests.

``DocumentSession`` wraps a pycrdt ``Doc``. It is the only place that hands
client bytes to yrs, so it is where hostile updates are stopped:

- ``update_format.validate_update`` walks the update first, because yrs
  allocates in proportion to the counts an update claims before it notices
  the bytes are missing.
- yrs may still reject an update that parses (an item whose parent is not a
  shared type); pycrdt raises ``RuntimeError``, ``ValueError`` or pyo3's
  ``PanicException``, which derives from ``BaseException``. All of them
  become ``InvalidUpdate``.

Applying returns the bytes yrs reports for the transaction: only what was new
to this document. A duplicate update returns None, so the relay neither
stores nor forwards it, and a re-sent full state costs nothing downstream.
Structs whose dependencies are missing wait inside yrs and are returned once
a later update completes them.

``version`` increases with every change, so a caller can cache what it
derives from the document (the relay caches sync step 2 frames) per version.
"""

from __future__ import annotations

from typing import Callable

from pycrdt import Doc, TransactionEvent, merge_updates

from .codec import Decoder
from .errors import InvalidStateVector, InvalidUpdate, ProtocolError
from .update_format import validate_update

EMPTY_UPDATE = b"\x00\x00"


class _YrsRejected(Exception):
    """yrs raised while applying; the cause is its exception."""


def _combine(first: bytes | None, second: bytes | None) -> bytes | None:
    if first is None:
        return second
    if second is None:
        return first
    return merge_updates(first, second)


def _is_panic(exc: BaseException) -> bool:
    # pyo3's PanicException is created at import time by the extension and
    # has no importable home, so it is recognised by name.
    return type(exc).__name__ == "PanicException"


class DocumentSession:
    """The CRDT state of one document."""

    def __init__(self) -> None:
        self.doc = Doc()
        self.version = 0
        self.step2_computed = 0
        self._captured: bytes | None = None
        self._state_vector: bytes | None = None
        self._subscription = self.doc.observe(self._on_transaction)

    def close(self) -> None:
        """Release the document.

        The transaction observer is a callback held by yrs, which Python's
        garbage collector cannot see through, so without this the session
        and its document are never freed.
        """
        self.doc.unobserve(self._subscription)

    def _on_transaction(self, event: TransactionEvent) -> None:
        update = event.update
        if update != EMPTY_UPDATE:
            self._captured = update

    # --- applying -------------------------------------------------------

    def apply_update(self, update: bytes) -> bytes | None:
        """Apply an update from a peer or from storage.

        Returns the update that describes what changed, or None when the
        update brought nothing new (or only structs still waiting for their
        dependencies). Raises ``InvalidUpdate`` when the bytes are not a
        valid Yjs v1 update or yrs refuses them; the exception's
        ``integrated`` then contains whatever yrs had already integrated, which
        the caller must forward and store like any other change.
        """
        validate_update(update)
        state_before = self.state_vector()
        try:
            return self._apply(update)
        except _YrsRejected as first:
            # yrs may have integrated part of a transaction before it failed,
            # and the failure may come from structs an earlier peer left
            # waiting for their dependencies, not from this update. Rebuild
            # the document from its integrated state, which drops every
            # waiting struct, then give this update a second chance.
            integrated = self._rebuild(state_before)
            try:
                retried = self._apply(update)
            except _YrsRejected as second:
                raise InvalidUpdate(integrated=integrated) from second.__cause__
            return _combine(integrated, retried)

    def edit(self, change: Callable[[Doc], None]) -> bytes | None:
        """Run ``change`` on the document and return the update it made, or None."""
        self._captured = None
        change(self.doc)
        captured = self._captured
        if captured is None:
            return None
        self._captured = None
        self._changed()
        return captured

    def _apply(self, update: bytes) -> bytes | None:
        self._captured = None
        try:
            self.doc.apply_update(update)
        except Exception as exc:
            raise _YrsRejected() from exc
        except BaseException as exc:
            if not _is_panic(exc):
                raise
            raise _YrsRejected() from exc
        captured = self._captured
        if captured is None:
            return None
        self._captured = None
        self._changed()
        return captured

    def _rebuild(self, state_before: bytes) -> bytes | None:
        """Replace the document by a copy of its integrated state.

        Returns the structs integrated since ``state_before`` (with the
        delete set), or None when the state vector did not move.
        """
        integrated_state = self.doc.get_update()
        self.doc.unobserve(self._subscription)
        self.doc = Doc()
        self._subscription = self.doc.observe(self._on_transaction)
        self.doc.apply_update(integrated_state)
        self._captured = None
        # NOTE: a failed update that only deleted items before failing leaves
        # the state vector unchanged and is reported as no change. Waiting
        # structs are released by new structs, never by deletions alone, so
        # only an update that fails on its own can do this.
        if self.doc.get_state() == state_before:
            return None
        self._changed()
        return self.doc.get_update(state_before)

    def _changed(self) -> None:
        self.version += 1
        self._state_vector = None

    # --- reading ----------------------------------------------------------

    def state_vector(self) -> bytes:
        """Return the encoded state vector, cached until the next change."""
        if self._state_vector is None:
            self._state_vector = self.doc.get_state()
        return self._state_vector

    def encode_state(self) -> bytes:
        """Encode the whole document as one update, for snapshots."""
        return self.doc.get_update()

    def diff(self, state_vector: bytes) -> bytes:
        """Encode the update a peer with ``state_vector`` lacks (a sync step 2 payload).

        Raises ``InvalidStateVector`` when the state vector cannot be decoded.
        """
        validate_state_vector(state_vector)
        try:
            answer = self.doc.get_update(state_vector)
        except Exception as exc:
            raise InvalidStateVector() from exc
        except BaseException as exc:
            if not _is_panic(exc):
                raise
            raise InvalidStateVector() from exc
        self.step2_computed += 1
        return answer


def validate_state_vector(state_vector: bytes) -> None:
    """Check that ``state_vector`` is a well-formed encoded state vector.

    Layout: varUint count, count x (varUint client id, varUint clock). The
    count is checked against the remaining bytes before the loop, because
    yrs reserves memory for the count it reads.
    """
    decoder = Decoder(state_vector)
    try:
        count = decoder.read_varuint()
        if count * 2 > decoder.remaining:
            raise InvalidStateVector()
        for _ in range(count):
            decoder.read_varuint()
            decoder.read_varuint()
    except InvalidStateVector:
        raise
    except ProtocolError as exc:
        raise InvalidStateVector() from exc
    if decoder.remaining:
        raise InvalidStateVector()
