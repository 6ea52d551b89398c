"""Tests for sync.update_format: the Yjs v1 update validator and splitter.

Documents are built with pycrdt and their real ``get_update()`` bytes are fed
to the module; a split is checked by applying the parts in order to an empty
pycrdt Doc and comparing the result with the original document.
"""

from __future__ import annotations

import gzip
import json
import random
import time

import pytest
from pycrdt import Array, Doc, Map, Text, XmlElement, XmlFragment, XmlText, merge_updates

from sync.codec import Decoder, encode_varstring, encode_varuint
from sync.errors import InvalidUpdate
from sync.update_format import MAX_ANY_DEPTH, _walk, split_update, validate_update
from tests.support.settings import trace_file

TRACE = "sequential/automerge-paper.json.gz"

U_HI = bytes.fromhex("01 01 01 00 04 01 01 74 02 68 69 00")


# --------------------------------------------------------------------------
# Helpers


def byte_index(text: str, char_index: int) -> int:
    """pycrdt Text indexes are UTF-8 byte offsets."""
    return len(text[:char_index].encode())


def rebuild(parts: list[bytes]) -> Doc:
    doc = Doc()
    for part in parts:
        doc.apply_update(part)
    return doc


def state_of(doc: Doc) -> dict[int, int]:
    decoder = Decoder(doc.get_state())
    return {decoder.read_varuint(): decoder.read_varuint() for _ in range(decoder.read_varuint())}


def clocks_in(update: bytes) -> dict[int, int]:
    """Client -> end clock of the structs an update carries (white-box helper)."""
    parsed = _walk(update, True)
    assert parsed is not None
    return {run.client: run.end_clock for run in parsed.runs if run.clocks}


def split_and_check(update: bytes, max_bytes: int, *, exact: bool = True) -> list[bytes]:
    """Split, then check every property a relay relies on; return the parts.

    ``exact``: compare the rebuilt document's ``get_update()`` byte for byte.
    Turn it off for documents holding multi-key maps inside Any values, which
    yrs re-encodes in hash order.
    """
    parts = split_update(update, max_bytes)
    assert parts
    doc = Doc()
    expected_state: dict[int, int] = {}
    for part in parts:
        validate_update(part)
        doc.apply_update(part)
        # Each part integrates completely: nothing is left pending for a later part.
        for client, end_clock in clocks_in(part).items():
            expected_state[client] = max(expected_state.get(client, 0), end_clock)
        assert state_of(doc) == expected_state
    original = Doc()
    original.apply_update(update)
    assert state_of(doc) == state_of(original)
    if exact:
        assert doc.get_update() == update
    else:
        assert len(doc.get_update()) == len(update)
    return parts


def assert_all_fit(parts: list[bytes], max_bytes: int) -> None:
    sizes = [len(part) for part in parts]
    assert max(sizes) <= max_bytes, sizes


def assert_invalid_fast(data: bytes) -> InvalidUpdate:
    start = time.perf_counter()
    with pytest.raises(InvalidUpdate) as info:
        validate_update(data)
    elapsed = time.perf_counter() - start
    assert elapsed < 0.05, f"{data[:16].hex(' ')}: {elapsed * 1e3:.1f} ms"
    assert info.value.__cause__ is not None
    return info.value


def any_update(any_bytes: bytes, count: int = 1) -> bytes:
    """Client 9 sets Y.Map ``m`` key ``k`` to ``count`` raw lib0 Any values."""
    return (
        bytes.fromhex("01 01 09 00 28 01")
        + encode_varstring("m")
        + encode_varstring("k")
        + encode_varuint(count)
        + any_bytes
        + b"\x00"
    )


def item_update(info: int, content: bytes) -> bytes:
    """Client 9 adds one item with ``content`` to root ``t``; info sets the content ref."""
    return bytes.fromhex("01 01 09 00") + bytes((info,)) + b"\x01" + encode_varstring("t") + content + b"\x00"


# --------------------------------------------------------------------------
# Documents built with pycrdt


def text_doc() -> bytes:
    doc = Doc(client_id=1)
    text = doc.get("t", type=Text)
    text += "Hello wörld! ✓ 中文 😀😁 end"
    text.insert(byte_index(str(text), 6), "big 🎉 ")
    text.insert(0, "bold ", {"bold": True})
    text.insert_embed(byte_index(str(text), 3), {"image": "x.png"})
    text.format(0, 4, {"italic": True})
    del text[byte_index(str(text), 8) : byte_index(str(text), 12)]
    text += "\n" + "tail 🙂" * 50
    return doc.get_update()


def nested_doc() -> bytes:
    doc = Doc(client_id=300)
    root = doc.get("m", type=Map)
    root["int"] = 42
    root["neg"] = -7
    root["big"] = 2**40
    root["float"] = 2.5
    root["flags"] = [True, False, None]
    root["name"] = "ñame"
    root["blob"] = b"\x00\x01\xff"
    root["obj"] = {"only": {"deep": [1, "two", [3.5]]}}
    root["text"] = Text("nested text 😀")
    root["arr"] = Array([1, "x", Map({"k": "v"}), Array([Text("t")])])
    root["gone"] = Map({"a": Array([1, 2, 3]), "b": Text("bye")})
    del root["gone"]  # its children become GC structs
    root["int"] = 43  # overwrites: the old value becomes a deleted item
    items = doc.get("a", type=Array)
    items.extend([i for i in range(100)])
    del items[10:40]
    return doc.get_update()


def xml_doc() -> bytes:
    doc = Doc(client_id=77)
    fragment = doc.get("f", type=XmlFragment)
    paragraph = XmlElement("p", {"class": "lead"}, [XmlText("hello "), XmlElement("b", {}, [XmlText("world")])])
    fragment.children.append(paragraph)
    fragment.children.append(XmlElement("hr"))
    fragment.children.append(XmlText("trailing ü"))
    return doc.get_update()


def concurrent_doc(seed: int = 7, rounds: int = 40) -> bytes:
    """Three clients edit Text, Array and Map concurrently and sync now and then."""
    rnd = random.Random(seed)
    docs = [Doc(client_id=i) for i in (3, 2**32 - 1, 170_000)]
    alphabet = "abcdé中😀 \n"

    def sync() -> None:
        updates = [doc.get_update() for doc in docs]
        for doc in docs:
            for update in updates:
                doc.apply_update(update)

    for round_ in range(rounds):
        for doc in docs:
            text = doc.get("t", type=Text)
            items = doc.get("a", type=Array)
            meta = doc.get("m", type=Map)
            with doc.transaction():
                for _ in range(rnd.randint(1, 6)):
                    current = str(text)
                    if current and rnd.random() < 0.3:
                        start = rnd.randrange(len(current))
                        stop = min(len(current), start + rnd.randint(1, 5))
                        del text[byte_index(current, start) : byte_index(current, stop)]
                    else:
                        at = byte_index(current, rnd.randint(0, len(current)))
                        text.insert(at, "".join(rnd.choice(alphabet) for _ in range(rnd.randint(1, 8))))
                if items and rnd.random() < 0.3:
                    del items[rnd.randrange(len(items))]
                else:
                    items.insert(rnd.randint(0, len(items)), rnd.choice([1, "s", 2.5, None, [1, 2]]))
                meta[rnd.choice("xyz")] = rnd.randint(0, 1000)
        if round_ % 3 == 2:
            sync()
    sync()
    return docs[0].get_update()


def subdoc_doc() -> bytes:
    """A subdocument and multi-key maps (re-encoded by yrs in hash order)."""
    doc = Doc(client_id=12)
    root = doc.get("m", type=Map)
    root["sub"] = Doc()
    root["obj"] = {"a": 1, "b": [1, 2], "c": {"d": None, "e": "f"}}
    return doc.get_update()


def big_string_update(text: str, client_id: int = 1) -> bytes:
    doc = Doc(client_id=client_id)
    doc.get("t", type=Text).insert(0, text)
    return doc.get_update()


def coalesce(patches: list[list]) -> list[list]:
    """Merge runs of typing and of backspacing into single patches.

    Same document, and 25 times fewer pycrdt calls (10 s -> 0.2 s); yrs
    squashes such runs into the same items anyway.
    """
    out: list[list] = []
    for position, deleted, inserted in patches:
        if out:
            last_position, last_deleted, last_inserted = out[-1]
            if not deleted and not last_deleted and inserted and position == last_position + len(last_inserted):
                out[-1] = [last_position, 0, last_inserted + inserted]
                continue
            if deleted and not inserted and not last_inserted and position + deleted == last_position:
                out[-1] = [position, last_deleted + deleted, ""]
                continue
        out.append([position, deleted, inserted])
    return out


@pytest.fixture(scope="module")
def trace_update() -> tuple[bytes, str]:
    """The automerge-paper editing trace replayed into one pycrdt Text."""
    trace = json.loads(gzip.decompress(trace_file(TRACE).read_bytes()))
    patches = coalesce([patch for txn in trace["txns"] for patch in txn["patches"]])
    doc = Doc(client_id=42)
    text = doc.get("t", type=Text)
    for start in range(0, len(patches), 2000):  # a transaction per batch
        with doc.transaction():
            for position, deleted, inserted in patches[start : start + 2000]:  # ASCII: bytes = chars
                if deleted:
                    del text[position : position + deleted]
                if inserted:
                    text.insert(position, inserted)
    assert str(text) == trace["endContent"]
    return doc.get_update(), trace["endContent"]


BUILDERS = [text_doc, nested_doc, xml_doc, concurrent_doc]


# --------------------------------------------------------------------------
# validate_update accepts what real encoders write


def test_validate_accepts_client_1_inserting_hi():
    validate_update(U_HI)


@pytest.mark.parametrize("build", BUILDERS + [subdoc_doc])
def test_validate_accepts_pycrdt_documents(build):
    update = build()
    validate_update(update)
    validate_update(bytearray(update))
    validate_update(memoryview(update))


def test_validate_accepts_the_empty_update():
    validate_update(b"\x00\x00")
    validate_update(Doc().get_update())


def test_validate_accepts_an_item_whose_parent_is_an_item_id():
    # Structurally valid; pycrdt rejects it on apply, which the relay handles.
    validate_update(bytes.fromhex("01 01 06 00 04 00 01 00 01 78 00"))


def test_validate_accepts_skip_structs_from_merged_updates_with_a_gap():
    doc = Doc(client_id=1)
    text = doc.get("t", type=Text)
    text += "ab"
    first = doc.get_update()
    text += "cd"
    state = doc.get_state()
    text += "ef"
    merged = merge_updates(first, doc.get_update(state))
    assert 10 in {merged[run.starts[i]] & 0x1F for run in _walk(merged, True).runs for i in range(len(run.clocks))}
    validate_update(merged)


def test_validate_accepts_json_and_binary_contents_that_yjs_writes():
    # Legacy JSON content as yjs 13.6 reads it: a count, then that many strings.
    # (pycrdt 0.14.13 reads one string more than the count, so it cannot apply
    # this; yjs can. The validator follows yjs.)
    validate_update(item_update(0x02, encode_varuint(2) + encode_varstring('{"a":1}') + encode_varstring("undefined")))
    binary_item = item_update(0x03, encode_varuint(3) + b"\x01\x02\x03")
    validate_update(binary_item)
    Doc().apply_update(binary_item)  # pycrdt agrees it is well formed


def test_validate_accepts_every_any_tag():
    values = [
        b"\x7f",  # undefined
        b"\x7e",  # null
        b"\x7d\x45",  # varInt -5
        b"\x7d\xff\xff\xff\xff\x0f",  # long varInt
        b"\x7c\x3f\x80\x00\x00",  # float32
        b"\x7b" + b"\x00" * 8,  # float64
        b"\x7a" + b"\x00" * 8,  # bigint64
        b"\x79",  # false
        b"\x78",  # true
        b"\x77" + encode_varstring("ü"),  # string
        b"\x76\x01" + encode_varstring("k") + b"\x7e",  # object
        b"\x75\x02\x78\x79",  # array
        b"\x74\x02\xaa\xbb",  # Uint8Array
    ]
    validate_update(any_update(b"".join(values), len(values)))


def test_validate_bounds_any_nesting_depth():
    def nested(depth: int) -> bytes:
        return b"\x75\x01" * depth + b"\x7e"

    validate_update(any_update(nested(MAX_ANY_DEPTH)))
    assert_invalid_fast(any_update(nested(MAX_ANY_DEPTH + 1)))
    assert_invalid_fast(any_update(nested(100_000)))  # no RecursionError
    objects = (b"\x76\x01" + encode_varstring("k")) * 100_000 + b"\x7e"
    assert_invalid_fast(any_update(objects))


# --------------------------------------------------------------------------
# validate_update rejects malformed input quickly


@pytest.mark.parametrize(
    "data",
    [
        b"",
        bytes.fromhex("c8 c8 c8 c8"),
        bytes.fromhex("ff ff ff ff ff ff ff ff ff ff 01"),  # 71-bit varint
        b"garbagedoc",
        bytes.fromhex("01 01 01 00 04 01 01 74 ff 68 69 00"),  # U_HI, string length corrupted
        bytes.fromhex("ff ff ff 7f"),  # claims 268M clients
        bytes.fromhex("01 ff ff ff 7f 01 00"),  # claims 268M structs
        bytes.fromhex("00 ff ff ff 7f"),  # claims 268M delete set clients
        bytes.fromhex("00 01 01 ff ff ff 7f"),  # claims 268M delete ranges
        U_HI + b"\x00",
        U_HI + b"trailing garbage",
        bytes.fromhex("01 01 01 00 0b 00"),  # struct ref 11 does not exist
        item_update(0x07, b"\x07"),  # type ref 7 (yrs weak link) is not Yjs
        item_update(0x04, b"\x02\xc3\x28"),  # invalid UTF-8 content
        item_update(0x04, b"\x03\xed\xa0\x80"),  # an encoded lone surrogate
        bytes.fromhex("01 01 09 00 04 01 02 ff fe 01 61 00"),  # invalid UTF-8 root name
        item_update(0x02, b"\xff\xff\xff\x7f"),  # JSON count
        item_update(0x08, b"\xff\xff\xff\x7f"),  # Any count
        any_update(b"\x76\xff\xff\xff\x7f"),  # Any object size
        any_update(b"\x75\xff\xff\xff\x7f"),  # Any array size
        any_update(b"\x73"),  # unknown Any tag
        any_update(b"\x7b\x00\x00"),  # truncated float64
        any_update(b"\x7d" + b"\xff" * 12 + b"\x01"),  # over-long varInt
        item_update(0x03, b"\xff\xff\xff\x7f"),  # Binary longer than the update
        bytes.fromhex("01 01") + b"\xff" * 10 + b"\x01\x00\x00\x00",  # 71-bit client
    ],
)
def test_validate_rejects_malformed_updates_fast(data):
    assert_invalid_fast(data)


def test_invalid_update_keeps_the_decoding_error_as_its_cause():
    error = assert_invalid_fast(bytes.fromhex("ff ff ff ff ff ff ff ff ff ff 01"))
    assert error.reason == "invalid update"
    assert error.close_code == 1007
    assert "varint" in str(error)


@pytest.mark.parametrize("build", BUILDERS)
def test_validate_rejects_every_truncation_of_a_valid_update(build):
    update = build()
    step = 1 if len(update) <= 2000 else 7  # keep the big one quick
    for length in range(0, len(update), step):
        with pytest.raises(InvalidUpdate):
            validate_update(update[:length])


def test_random_mutations_pass_or_raise_invalid_update_only():
    rnd = random.Random(2024)
    originals = [U_HI] + [build() for build in BUILDERS]
    originals = [update[:4000] if len(update) > 4000 else update for update in originals]
    passed = 0
    for n in range(600):
        data = bytearray(rnd.choice(originals))
        for _ in range(rnd.randint(1, 3)):
            kind = rnd.randrange(6)
            at = rnd.randrange(len(data)) if data else 0
            if kind == 0 and data:
                data[at] = rnd.randrange(256)
            elif kind == 1:
                data.insert(at, rnd.choice([0x00, 0x7F, 0x80, 0xFF, rnd.randrange(256)]))
            elif kind == 2 and data:
                del data[at]
            elif kind == 3:
                del data[at:]
            elif kind == 4 and data:
                data[at] ^= 1 << rnd.randrange(8)
            else:
                data[at:at] = data[at : at + rnd.randint(1, 8)]
        try:
            validate_update(bytes(data))
        except InvalidUpdate:
            continue
        passed += 1
        # Whatever the validator lets through, the splitter handles too.
        try:
            parts = split_update(bytes(data), 48)
        except InvalidUpdate:
            continue
        for part in parts:
            validate_update(part)
    assert passed  # some mutations (e.g. of string bytes) stay valid


# --------------------------------------------------------------------------
# split_update


def test_split_returns_the_update_itself_when_it_fits():
    update = text_doc()
    parts = split_update(update, len(update))
    assert parts == [update]
    assert parts[0] is update


def test_split_rejects_a_bad_limit():
    for limit in (0, -1, 1.5, "10"):
        with pytest.raises(ValueError):
            split_update(U_HI, limit)  # type: ignore[arg-type]


def test_split_rejects_invalid_updates_small_or_large():
    with pytest.raises(InvalidUpdate):
        split_update(U_HI + b"\x00", 1000)
    with pytest.raises(InvalidUpdate):
        split_update(bytes.fromhex("ff ff ff 7f"), 2)


def test_split_rejects_two_runs_for_one_client():
    run = bytes.fromhex("01 01 00 04 01 01 74 02 68 69")
    with pytest.raises(InvalidUpdate):
        split_update(b"\x02" + run + run + b"\x00", 10)


@pytest.mark.parametrize("build", BUILDERS)
@pytest.mark.parametrize("max_bytes", [64, 100, 333, 1000])
def test_split_parts_rebuild_the_same_document(build, max_bytes):
    update = build()
    parts = split_and_check(update, max_bytes)
    assert_all_fit(parts, max_bytes)
    if len(update) > max_bytes:
        assert len(parts) > 1


def test_split_concurrent_clients_text_matches():
    update = concurrent_doc(seed=11, rounds=60)
    original = Doc()
    original.apply_update(update)
    parts = split_and_check(update, 256)
    assert_all_fit(parts, 256)
    rebuilt = rebuild(parts)
    assert str(rebuilt.get("t", type=Text)) == str(original.get("t", type=Text))
    assert rebuilt.get("a", type=Array).to_py() == original.get("a", type=Array).to_py()
    assert rebuilt.get("m", type=Map).to_py() == original.get("m", type=Map).to_py()


def test_split_of_a_document_with_multi_key_maps_and_a_subdocument():
    update = subdoc_doc()
    original = Doc()
    original.apply_update(update)
    parts = split_and_check(update, 60, exact=False)
    assert len(parts) > 1
    rebuilt = rebuild(parts)
    assert rebuilt.get("m", type=Map)["obj"] == original.get("m", type=Map)["obj"]
    assert isinstance(rebuilt.get("m", type=Map)["sub"], Doc)


def test_split_with_a_limit_smaller_than_any_struct_still_rebuilds():
    # Every struct is then alone in a part that exceeds the limit (documented).
    for build in BUILDERS:
        parts = split_and_check(build(), 1)
        assert all(len(part) > 1 for part in parts)


@pytest.mark.parametrize("max_bytes", [97, 1000, 1001, 1002, 1003, 4099])
def test_split_cuts_a_big_string_item_between_code_points(max_bytes):
    pattern = "a😀é中bc🎉" * 3000  # 1-, 2-, 3- and 4-byte characters, surrogate pairs
    update = big_string_update(pattern)
    assert len(_walk(update, True).runs[0].clocks) == 1  # one String item
    parts = split_and_check(update, max_bytes)
    assert_all_fit(parts, max_bytes)
    assert str(rebuild(parts).get("t", type=Text)) == pattern


def test_split_cuts_a_string_item_that_has_origins_and_a_parent_sub():
    doc = Doc(client_id=5)
    text = doc.get("t", type=Text)
    text += "left right"
    text.insert(5, "😀" * 2000 + "middle")  # origin and right origin set
    parts = split_and_check(doc.get_update(), 500)
    assert_all_fit(parts, 500)


def test_split_40_mib_text_into_parts_of_at_most_4_mib():
    size = 40 * 1024 * 1024
    update = big_string_update("a" * size)
    limit = 4 * 1024 * 1024
    parts = split_update(update, limit)
    assert_all_fit(parts, limit)
    assert len(parts) == 11  # 40 MiB of text plus headers: ten full parts and a little
    doc = rebuild(parts)
    assert len(str(doc.get("t", type=Text))) == size
    assert doc.get_update() == update


def test_split_cuts_a_big_any_item_between_values():
    doc = Doc(client_id=8)
    items = doc.get("a", type=Array)
    items.extend([i * 1000 for i in range(3000)] + ["ü" * 50, [1, [2]], None])  # one Any item
    items.insert(100, "x")  # split by an insertion: two Any items with origins
    update = doc.get_update()
    parts = split_and_check(update, 500)
    assert_all_fit(parts, 500)
    assert rebuild(parts).get("a", type=Array).to_py() == items.to_py()


def test_split_sends_a_big_uncuttable_struct_alone_in_an_oversized_part():
    doc = Doc(client_id=8)
    root = doc.get("m", type=Map)
    root["before"] = "x" * 100
    root["blob"] = bytes(range(256)) * 40  # a map entry holding one 10 KiB value
    doc.get("a", type=Array).extend([i for i in range(300)])
    update = doc.get_update()
    parts = split_and_check(update, 1024)
    oversized = [part for part in parts if len(part) > 1024]
    assert len(oversized) == 1
    assert len(clocks_in(oversized[0])) == 1
    assert bytes(range(256)) * 40 in oversized[0]


def test_split_spreads_a_big_delete_set_over_extra_parts():
    doc = Doc(client_id=2**31)
    text = doc.get("t", type=Text)
    text += "abcdefghij" * 3000
    with doc.transaction():
        for position in range(29990, 0, -10):  # 3000 separate deletions
            del text[position : position + 1]
    update = doc.get_update()
    parts = split_and_check(update, 2000)
    assert_all_fit(parts, 2000)
    delete_only = [part for part in parts if part[0] == 0]
    assert len(delete_only) >= 5  # the delete set alone is over 10 KB
    assert str(rebuild(parts).get("t", type=Text)) == str(text)


def test_split_the_automerge_paper_trace_into_16_kib_parts(trace_update):
    update, end_content = trace_update
    validate_update(update)
    parts = split_and_check(update, 16 * 1024)
    assert_all_fit(parts, 16 * 1024)
    assert len(parts) >= len(update) // (16 * 1024)
    assert str(rebuild(parts).get("t", type=Text)) == end_content
