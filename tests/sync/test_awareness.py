"""Awareness bookkeeping with an explicit clock."""

from __future__ import annotations

import pytest

from sync.awareness import AwarenessRegistry, decode_awareness_update, encode_awareness_update
from sync.errors import InvalidAwareness

AW_1001 = bytes.fromhex("01 e9 07 01 0c") + b'{"user":"a"}'


def test_case_vector_decodes() -> None:
    assert decode_awareness_update(AW_1001) == [(1001, 1, '{"user":"a"}')]


@pytest.mark.parametrize(
    "hex_payload",
    [
        "",
        "01 e9 07 01 02 7b 7b",  # state "{{" is not JSON
        "01 01 01 02 ff fe",  # state bytes are not UTF-8
        "ff ff ff ff 0f",  # claims 4294967295 entries
        "01 e9 07",  # truncated
        "01 e9 07 01 04 6e 75 6c 6c 00",  # trailing byte
    ],
)
def test_malformed_awareness_is_rejected(hex_payload: str) -> None:
    with pytest.raises(InvalidAwareness):
        decode_awareness_update(bytes.fromhex(hex_payload))


def test_apply_rejects_before_changing_anything() -> None:
    registry = AwarenessRegistry()
    bad = encode_awareness_update([(5, 1, '{"a":1}')]) + b"\x00"
    with pytest.raises(InvalidAwareness):
        registry.apply(bad, "conn", 0.0)
    assert registry.encode_all() is None


def test_newer_clock_replaces_older_is_ignored() -> None:
    registry = AwarenessRegistry()
    assert registry.apply(encode_awareness_update([(7, 2, '"b"')]), "c1", 0.0) is not None
    assert registry.apply(encode_awareness_update([(7, 1, '"a"')]), "c1", 0.0) is None
    assert decode_awareness_update(registry.encode_all() or b"") == [(7, 2, '"b"')]


def test_owner_removal_announces_null_with_next_clock() -> None:
    registry = AwarenessRegistry()
    registry.apply(AW_1001, "conn-a", 0.0)
    removal = registry.remove_owner("conn-a", 1.0)
    assert removal is not None
    assert decode_awareness_update(removal) == [(1001, 2, "null")]
    assert registry.encode_all() is None


def test_removal_of_other_owner_leaves_states() -> None:
    registry = AwarenessRegistry()
    registry.apply(AW_1001, "conn-a", 0.0)
    assert registry.remove_owner("conn-b", 1.0) is None
    assert len(registry) == 1


def test_states_not_renewed_expire() -> None:
    registry = AwarenessRegistry()
    registry.apply(encode_awareness_update([(1, 1, "{}")]), "a", 0.0)
    registry.apply(encode_awareness_update([(2, 1, "{}")]), "b", 20.0)
    assert registry.expire(29.0, 30.0) is None
    removal = registry.expire(30.0, 30.0)
    assert removal is not None
    assert decode_awareness_update(removal) == [(1, 2, "null")]
    assert decode_awareness_update(registry.encode_all() or b"") == [(2, 1, "{}")]


def test_expired_client_can_return() -> None:
    registry = AwarenessRegistry()
    registry.apply(encode_awareness_update([(1, 1, "{}")]), "a", 0.0)
    registry.expire(31.0, 30.0)
    assert registry.apply(encode_awareness_update([(1, 3, '{"back":true}')]), "a", 32.0) is not None
    assert len(registry) == 1


def test_client_null_state_removes_entry() -> None:
    registry = AwarenessRegistry()
    registry.apply(encode_awareness_update([(1, 1, "{}")]), "a", 0.0)
    assert registry.apply(encode_awareness_update([(1, 2, "null")]), "a", 1.0) is not None
    assert registry.encode_all() is None
    assert registry.remove_owner("a", 2.0) is None
