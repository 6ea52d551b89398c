"""DocumentSession: apply once, reject hostile updates, answer step 1."""

from __future__ import annotations

import time

import pytest
from pycrdt import Doc, Map, Text

from sync.document import DocumentSession
from sync.errors import InvalidStateVector, InvalidUpdate

U_HI = bytes.fromhex("01 01 01 00 04 01 01 74 02 68 69 00")
U_BANG = bytes.fromhex("01 01 01 02 84 01 01 01 21 00")
U_MAP = bytes.fromhex("01 01 02 00 28 01 01 6d 01 6b 01 77 01 76 00")
PARENT_NOT_A_TYPE = bytes.fromhex("01 01 06 00 04 00 01 00 01 78 00")


def text_of(session: DocumentSession) -> str:
    return str(session.doc.get("t", type=Text))


def test_new_update_is_returned_once() -> None:
    session = DocumentSession()
    assert session.apply_update(U_HI) == U_HI
    assert session.apply_update(U_HI) is None
    assert text_of(session) == "hi"


def test_update_waiting_for_dependency_is_released_with_it() -> None:
    session = DocumentSession()
    assert session.apply_update(U_BANG) is None
    released = session.apply_update(U_HI)
    assert released is not None
    fresh = Doc()
    fresh.apply_update(released)
    assert str(fresh.get("t", type=Text)) == "hi!"


@pytest.mark.parametrize(
    "hex_update",
    [
        "",
        "c8 c8 c8 c8",
        "ff ff ff ff ff ff ff ff ff ff 01",
        "67 61 72 62 61 67 65 64 6f 63",
        "01 01 01 00 04 01 01 74 ff 68 69 00",
        "ff ff ff 7f",
    ],
)
def test_invalid_update_leaves_document_unchanged(hex_update: str) -> None:
    session = DocumentSession()
    session.apply_update(U_HI)
    state_before = session.encode_state()
    started = time.process_time()
    with pytest.raises(InvalidUpdate):
        session.apply_update(bytes.fromhex(hex_update))
    assert time.process_time() - started < 1.0, "rejecting must not do work in proportion to claimed sizes"
    assert session.encode_state() == state_before
    assert session.apply_update(U_MAP) is not None


def test_update_yrs_refuses_is_invalid_and_harmless() -> None:
    session = DocumentSession()
    session.apply_update(U_HI)
    version = session.version
    with pytest.raises(InvalidUpdate):
        session.apply_update(PARENT_NOT_A_TYPE)
    assert session.version == version
    assert text_of(session) == "hi"


def test_version_changes_only_with_content() -> None:
    session = DocumentSession()
    session.apply_update(U_HI)
    version = session.version
    session.apply_update(U_HI)
    assert session.version == version
    session.apply_update(U_MAP)
    assert session.version == version + 1


def test_diff_contains_only_what_peer_lacks() -> None:
    session = DocumentSession()
    session.apply_update(U_HI)
    peer = Doc()
    peer.apply_update(U_HI)
    session.apply_update(U_MAP)
    peer.apply_update(session.diff(peer.get_state()))
    assert peer.get("m", type=Map)["k"] == "v"


@pytest.mark.parametrize("hex_vector", ["c8 c8 c8", "ff ff ff 7f", "01 01", "00 00"])
def test_bad_state_vector_is_rejected(hex_vector: str) -> None:
    session = DocumentSession()
    with pytest.raises(InvalidStateVector):
        session.diff(bytes.fromhex(hex_vector))


def test_closed_session_is_freed() -> None:
    import gc
    import weakref

    session = DocumentSession()
    session.apply_update(U_HI)
    reference = weakref.ref(session)
    session.close()
    del session
    gc.collect()
    assert reference() is None


def test_waiting_invalid_update_does_not_block_valid_one() -> None:
    session = DocumentSession()
    # Its parent (1, 0) does not exist yet, so yrs keeps it waiting; once
    # U_HI creates (1, 0), a string item, the waiting struct is invalid.
    assert session.apply_update(PARENT_NOT_A_TYPE) is None
    changed = session.apply_update(U_HI)
    assert changed is not None
    assert text_of(session) == "hi"
    peer = Doc()
    peer.apply_update(changed)
    assert str(peer.get("t", type=Text)) == "hi"
    assert session.apply_update(U_BANG) is not None
    assert text_of(session) == "hi!"


def test_rejected_update_reports_what_was_integrated() -> None:
    session = DocumentSession()
    session.apply_update(U_HI)
    with pytest.raises(InvalidUpdate) as caught:
        session.apply_update(PARENT_NOT_A_TYPE)
    assert caught.value.integrated is None
    assert text_of(session) == "hi"


def test_export_infers_root_kinds() -> None:
    from pycrdt import Array

    from sync.export import document_to_python

    source = Doc()
    source.get("t", type=Text).insert(0, "hi")
    source.get("m", type=Map)["k"] = "v"
    source.get("a", type=Array).extend([1, "x"])
    exported = document_to_python(source.get_update())
    assert exported == {"a": [1.0, "x"], "m": {"k": "v"}, "t": "hi"}


def test_restore_edits_forward_to_old_content() -> None:
    from pycrdt import Array

    from sync.export import document_to_python
    from sync.restore import restore_into

    doc = Doc()
    doc.get("t", type=Text).insert(0, "first draft")
    doc.get("m", type=Map)["k"] = "v"
    old_state = doc.get_update()
    text = doc.get("t", type=Text)
    del text[0 : len(text)]
    text.insert(0, "rewritten ✓")
    doc.get("m", type=Map)["extra"] = 1
    doc.get("a", type=Array).extend([1, 2])
    state_before_restore = doc.get_state()

    restore_into(doc, old_state)

    assert document_to_python(doc.get_update()) == {"a": [], "m": {"k": "v"}, "t": "first draft"}
    assert doc.get_state() != state_before_restore, "restoring must add new changes, not rewind"
    peer = Doc()
    peer.apply_update(doc.get_update())
    assert str(peer.get("t", type=Text)) == "first draft"
