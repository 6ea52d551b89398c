"""Pure-Python reader of the Yjs v1 update format: validate and split updates.

Why this exists
---------------
pycrdt (yrs) trusts the counts inside an update and allocates in proportion
to them before it notices the bytes are not there: the four bytes
``ff ff ff 7f`` (a claimed 268 million clients) cost about 1.4 s of CPU inside
pycrdt 0.14.13 ``apply_update``, and a 71-bit varint makes it fail an
allocation. The relay therefore walks every incoming update with
:func:`validate_update` first. It checks every count against the bytes that
remain *before* looping, so hostile input is rejected in microseconds without
allocating, and it never recurses deeper than :data:`MAX_ANY_DEPTH`.

:func:`split_update` cuts one large update (say a 40 MiB document) into
several smaller valid updates that, applied in order, build the same document,
so a relay can send it to a slow client as messages below a size cap.

The format
----------
Written by yjs 13.6 ``encodeStateAsUpdate`` and yrs ``encode_v1``; this reader
follows yjs ``src/utils/encoding.js`` (``readClientsStructRefs``),
``src/utils/UpdateDecoder.js`` (``UpdateDecoderV1``), ``src/structs/Item.js``
(``readItemContent``) and lib0 ``decoding.js`` (``readAny``). All integers are
lib0 varUints (LEB128); a varString is a varUint byte length plus UTF-8.

::

    update      = structs delete_set
    structs     = varUint(n_clients) client_run*n_clients
    client_run  = varUint(n_structs) varUint(client) varUint(clock) struct*n_structs
    struct      = info:u8 ...
        info & 0x1f == 0   GC    varUint(len)
        info & 0x1f == 10  Skip  varUint(len)
        info & 0x1f in 1-9 Item:
            [ID origin       if info & 0x80]       ID = varUint(client) varUint(clock)
            [ID right_origin if info & 0x40]
            if info & 0xc0 == 0:                    (no origin: parent is explicit)
                varUint(parent_info); == 1: varString(root type name); else: ID parent
                [varString(parent_sub) if info & 0x20]
            content by ref (info & 0x1f):
                1 Deleted varUint(len)          2 JSON  varUint(n) varString*n
                3 Binary  varBytes              4 String varString
                5 Embed   varString(JSON)       6 Format varString(key) varString(JSON)
                7 Type    varUint(type_ref) [+ varString(name) for XmlElement 3 / XmlHook 5]
                8 Any     varUint(n) any*n      9 Doc   varString(guid) any(opts)
    delete_set  = varUint(n_clients) (varUint(client) varUint(n_ranges)
                  (varUint(clock) varUint(len))*n_ranges)*n_clients

    any (lib0) = tag:u8 ...   127 undefined, 126 null, 125 varInt (signed),
        124 float32, 123 float64, 122 bigint64, 121 false, 120 true,
        119 varString, 118 object varUint(n) (varString key, any)*n,
        117 array varUint(n) any*n, 116 varBytes

Structs of one client are consecutive in clock order; each one occupies
``length`` clocks: GC/Skip their ``len``; an Item its content length (String:
UTF-16 code units; Deleted: len; JSON/Any: n; the other contents 1). The
struct encoding is position-independent (origins and parents are full IDs),
which is what lets :func:`split_update` copy struct bytes verbatim.

What the validator does not check
---------------------------------
It is a structural check, not a CRDT check: it does not parse the JSON inside
JSON/Embed/Format contents (only that it is UTF-8), does not check that
origins or parents exist, and accepts Item-ID parents that pycrdt later
rejects on apply. Type refs above 6 (yrs-only weak links, "undefined") are
rejected because yjs 13.6 cannot read them either. Any values nested deeper
than :data:`MAX_ANY_DEPTH` containers are rejected. Integers may use up to
ten varint bytes (70 bits) although yrs keeps clocks in 32 bits.

JSON content (ref 2, legacy yjs) is read as yjs reads it: a count, then that
many strings. pycrdt 0.14.13 reads one string more than the count, so it
fails on such items; current yjs encoders write Any content instead.
"""

from __future__ import annotations

import re
from bisect import bisect_right

from .codec import MAX_VARUINT_BYTES, encode_varuint
from .errors import InvalidUpdate, TrailingBytes, TruncatedMessage, VarintOverflow

__all__ = ["MAX_ANY_DEPTH", "split_update", "validate_update"]

#: Deepest nesting of object/array containers accepted inside an ``Any`` value.
MAX_ANY_DEPTH = 64

# Content refs (info & 0x1f) of the items that split_update can cut.
_JSON = 2
_STRING = 4
_ANY = 8

# Skipping varints with a regex match runs in C: about twice as fast as a
# Python loop, which matters for updates with thousands of structs. A failed
# match (truncated or over-long varint) falls back to _skip_varints for the
# precise error.
_VARINT = rb"[\x80-\xff]{0,%d}[\x00-\x7f]" % (MAX_VARUINT_BYTES - 1)
_match_2_varints = re.compile(_VARINT * 2).match
_match_4_varints = re.compile(_VARINT * 4).match

_UTF8_CONTINUATION = bytes(range(0x80, 0xC0))
_UTF8_LEAD4 = bytes(range(0xF0, 0x100))


class _Malformed(ValueError):
    """Internal: the update breaks the format (the message says how)."""


# --------------------------------------------------------------------------
# Low-level readers. They work on ``bytes`` with explicit offsets; reading
# past the end raises IndexError, which the public functions turn into
# InvalidUpdate. Slices do not raise, so every length is checked explicitly.


def _varuint_tail(data: bytes, pos: int, first: int) -> tuple[int, int]:
    """Finish a varUint whose first byte ``first`` (>= 0x80) was read at pos - 1."""
    result = first & 0x7F
    shift = 7
    for _ in range(MAX_VARUINT_BYTES - 1):
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
    raise VarintOverflow()


def _varuint(data: bytes, pos: int) -> tuple[int, int]:
    byte = data[pos]
    if byte < 0x80:
        return byte, pos + 1
    return _varuint_tail(data, pos + 1, byte)


def _read_id(data: bytes, pos: int) -> tuple[int, int, int]:
    """Read an ID (client, clock); returns (client, clock, new pos)."""
    client = data[pos]
    pos += 1
    if client >= 0x80:
        client, pos = _varuint_tail(data, pos, client)
    clock = data[pos]
    pos += 1
    if clock >= 0x80:
        clock, pos = _varuint_tail(data, pos, clock)
    return client, clock, pos


def _skip_varint(data: bytes, pos: int) -> int:
    """Skip a varUint or lib0 signed varInt (same continuation bit)."""
    if data[pos] < 0x80:
        return pos + 1
    limit = pos + MAX_VARUINT_BYTES
    pos += 1
    while pos < limit:
        if data[pos] < 0x80:
            return pos + 1
        pos += 1
    if pos >= len(data):
        raise TruncatedMessage()
    raise VarintOverflow()


def _skip_varints(data: bytes, pos: int, count: int) -> int:
    for _ in range(count):
        pos = _skip_varint(data, pos)
    return pos


def _skip_string(data: bytes, pos: int, end: int) -> int:
    """Skip a varString, checking that it is UTF-8."""
    length = data[pos]
    pos += 1
    if length >= 0x80:
        length, pos = _varuint_tail(data, pos, length)
    stop = pos + length
    if stop > end:
        raise TruncatedMessage()
    chunk = data[pos:stop]
    if not chunk.isascii():
        chunk.decode("utf-8")
    return stop


def _skip_varbytes(data: bytes, pos: int, end: int) -> int:
    length, pos = _varuint(data, pos)
    pos += length
    if pos > end:
        raise TruncatedMessage()
    return pos


def _skip_any(data: bytes, pos: int, end: int, depth: int) -> int:
    """Skip one lib0 ``Any`` value starting at pos."""
    tag = data[pos]
    pos += 1
    if tag == 119:  # string
        return _skip_string(data, pos, end)
    if tag == 127 or tag == 126 or tag == 121 or tag == 120:  # undefined null false true
        return pos
    if tag == 125:  # varInt
        return _skip_varint(data, pos)
    if tag == 124 or tag == 123 or tag == 122:  # float32 float64 bigint64
        pos += 4 if tag == 124 else 8
        if pos > end:
            raise TruncatedMessage()
        return pos
    if tag == 118 or tag == 117:  # object, array
        if depth >= MAX_ANY_DEPTH:
            raise _Malformed("Any nested too deeply")
        count, pos = _varuint(data, pos)
        if tag == 118:
            if count * 2 > end - pos:  # key length byte + value tag
                raise _Malformed("Any object longer than the update")
            for _ in range(count):
                pos = _skip_string(data, pos, end)
                pos = _skip_any(data, pos, end, depth + 1)
        else:
            if count > end - pos:
                raise _Malformed("Any array longer than the update")
            for _ in range(count):
                pos = _skip_any(data, pos, end, depth + 1)
        return pos
    if tag == 116:  # Uint8Array
        return _skip_varbytes(data, pos, end)
    raise _Malformed(f"unknown Any tag {tag}")


def _utf16_length(chunk: bytes) -> int:
    """Number of UTF-16 code units of valid UTF-8 ``chunk`` (no per-char loop)."""
    if chunk.isascii():
        return len(chunk)
    code_points = len(chunk.translate(None, _UTF8_CONTINUATION))
    astral = len(chunk) - len(chunk.translate(None, _UTF8_LEAD4))
    return code_points + astral


# --------------------------------------------------------------------------
# The walker shared by both public functions.


class _Run:
    """One client's structs in the update (collect mode)."""

    __slots__ = ("client", "clocks", "deps", "end_clock", "end_offset", "starts")

    def __init__(self, client: int) -> None:
        self.client = client
        self.starts: list[int] = []  # byte offset of each struct
        self.clocks: list[int] = []  # first clock of each struct
        # IDs of other clients' structs each struct refers to, flat: (client, clock, ...)
        self.deps: list[tuple[int, ...]] = []
        self.end_offset = 0
        self.end_clock = 0


class _Parsed:
    """Layout of a whole update (collect mode)."""

    __slots__ = ("ds_entries", "ds_start", "runs")

    def __init__(
        self, runs: list[_Run], ds_start: int, ds_entries: list[tuple[int, list[int], int]]
    ) -> None:
        self.runs = runs
        self.ds_start = ds_start  # offset of the delete set
        # (client, [offset of each of its ranges], offset after its last range)
        self.ds_entries = ds_entries


def _walk(data: bytes, collect: bool) -> _Parsed | None:
    """Walk the whole update; return its layout when ``collect`` is true."""
    end = len(data)
    runs: list[_Run] = []
    ds_entries: list[tuple[int, list[int], int]] = []

    n_clients = data[0]
    pos = 1
    if n_clients >= 0x80:
        n_clients, pos = _varuint_tail(data, pos, n_clients)
    # Each client run needs at least 3 bytes (n_structs, client, clock).
    if n_clients * 3 > end - pos:
        raise _Malformed("client count larger than the update")

    for _ in range(n_clients):
        n_structs = data[pos]
        pos += 1
        if n_structs >= 0x80:
            n_structs, pos = _varuint_tail(data, pos, n_structs)
        if n_structs > end - pos:
            raise _Malformed("struct count larger than the update")
        client_start = pos
        client = data[pos]
        pos += 1
        if client >= 0x80:
            client, pos = _varuint_tail(data, pos, client)
        client_stop = pos
        clock = data[pos]
        pos += 1
        if clock >= 0x80:
            clock, pos = _varuint_tail(data, pos, clock)
        if collect:
            own = data[client_start:client_stop]  # a whole varint: spots own-client IDs
            run = _Run(client)
            runs.append(run)
            starts = run.starts
            clocks = run.clocks
            deps_list = run.deps

        for _ in range(n_structs):
            start = pos
            info = data[pos]
            pos += 1
            ref = info & 0x1F
            if ref == 0 or ref == 10:  # GC, Skip: a clock length
                length = data[pos]
                pos += 1
                if length >= 0x80:
                    length, pos = _varuint_tail(data, pos, length)
                if collect:
                    starts.append(start)
                    clocks.append(clock)
                    deps_list.append(())
                    clock += length
                continue
            if ref > 9:  # 11-31 are unused
                raise _Malformed(f"unknown struct ref {ref}")

            deps: tuple[int, ...] = ()
            if info & 0xC0:  # origin (0x80) and/or right origin (0x40), each an ID
                if collect:
                    # Only references to other clients matter for the order
                    # (this client's structs are emitted in clock order anyway),
                    # so own-client IDs are skipped without decoding.
                    if info & 0x80:
                        if data.startswith(own, pos):
                            pos = _skip_varint(data, pos + len(own))
                        else:
                            o_client, o_clock, pos = _read_id(data, pos)
                            deps = (o_client, o_clock)
                    if info & 0x40:
                        if data.startswith(own, pos):
                            pos = _skip_varint(data, pos + len(own))
                        else:
                            r_client, r_clock, pos = _read_id(data, pos)
                            deps += (r_client, r_clock)
                else:
                    n_varints = 4 if info & 0xC0 == 0xC0 else 2
                    match = (_match_4_varints if n_varints == 4 else _match_2_varints)(data, pos)
                    if match is None:
                        pos = _skip_varints(data, pos, n_varints)
                    else:
                        pos = match.end()
            else:  # no origin: explicit parent
                parent_info = data[pos]
                pos += 1
                if parent_info >= 0x80:
                    parent_info, pos = _varuint_tail(data, pos, parent_info)
                if parent_info == 1:  # root type name
                    pos = _skip_string(data, pos, end)
                else:  # parent item ID
                    p_client, p_clock, pos = _read_id(data, pos)
                    deps = (p_client, p_clock)
                if info & 0x20:
                    pos = _skip_string(data, pos, end)

            # Content. Literals, not the module constants, keep this loop fast.
            length = 1
            if ref == 4:  # String
                size = data[pos]
                pos += 1
                if size >= 0x80:
                    size, pos = _varuint_tail(data, pos, size)
                stop = pos + size
                if stop > end:
                    raise TruncatedMessage()
                chunk = data[pos:stop]
                if chunk.isascii():
                    length = size
                else:
                    chunk.decode("utf-8")
                    if collect:
                        length = _utf16_length(chunk)
                pos = stop
            elif ref == 1:  # Deleted
                length = data[pos]
                pos += 1
                if length >= 0x80:
                    length, pos = _varuint_tail(data, pos, length)
            elif ref == 8:  # Any
                length, pos = _varuint(data, pos)
                if length > end - pos:
                    raise _Malformed("Any count larger than the update")
                for _ in range(length):
                    pos = _skip_any(data, pos, end, 0)
            elif ref == 7:  # Type
                type_ref, pos = _varuint(data, pos)
                if type_ref == 3 or type_ref == 5:  # XmlElement, XmlHook: name
                    pos = _skip_string(data, pos, end)
                elif type_ref > 6:  # 0-6: Array Map Text XmlElement XmlFragment XmlHook XmlText
                    raise _Malformed(f"unknown type ref {type_ref}")
            elif ref == 6:  # Format: key, JSON value
                pos = _skip_string(data, pos, end)
                pos = _skip_string(data, pos, end)
            elif ref == 5:  # Embed: JSON
                pos = _skip_string(data, pos, end)
            elif ref == 3:  # Binary
                pos = _skip_varbytes(data, pos, end)
            elif ref == 2:  # JSON: count, strings
                length, pos = _varuint(data, pos)
                if length > end - pos:
                    raise _Malformed("JSON count larger than the update")
                for _ in range(length):
                    pos = _skip_string(data, pos, end)
            else:  # 9 Doc: guid, options
                pos = _skip_string(data, pos, end)
                pos = _skip_any(data, pos, end, 0)

            if collect:
                starts.append(start)
                clocks.append(clock)
                deps_list.append(deps)
                clock += length

        if collect:
            run.end_offset = pos
            run.end_clock = clock

    # Delete set.
    ds_start = pos
    n_ds, pos = _varuint(data, pos)
    if n_ds * 2 > end - pos:  # client + n_ranges
        raise _Malformed("delete set client count larger than the update")
    for _ in range(n_ds):
        ds_client, pos = _varuint(data, pos)
        n_ranges, pos = _varuint(data, pos)
        if n_ranges * 2 > end - pos:  # clock + len
            raise _Malformed("delete set range count larger than the update")
        if collect:
            offsets = []
            for _ in range(n_ranges):
                offsets.append(pos)
                pos = _skip_varint(data, pos)
                pos = _skip_varint(data, pos)
            ds_entries.append((ds_client, offsets, pos))
        else:
            for _ in range(n_ranges):
                match = _match_2_varints(data, pos)
                pos = _skip_varints(data, pos, 2) if match is None else match.end()
    if pos != end:
        raise TrailingBytes()
    return _Parsed(runs, ds_start, ds_entries) if collect else None


# Everything the walker raises on bad input (IndexError: read past the end).
_DECODE_ERRORS = (IndexError, TruncatedMessage, VarintOverflow, TrailingBytes,
                  UnicodeDecodeError, _Malformed)


def _invalid(exc: Exception) -> InvalidUpdate:
    if isinstance(exc, (IndexError, TruncatedMessage)):
        detail = "update truncated"
    elif isinstance(exc, VarintOverflow):
        detail = "varint longer than 70 bits"
    elif isinstance(exc, TrailingBytes):
        detail = "trailing bytes after the delete set"
    elif isinstance(exc, UnicodeDecodeError):
        detail = "string is not UTF-8"
    else:
        detail = str(exc)
    return InvalidUpdate(detail)


def _checked_walk(data: bytes, collect: bool) -> _Parsed | None:
    try:
        return _walk(data, collect)
    except _DECODE_ERRORS as exc:
        raise _invalid(exc) from exc


def validate_update(data: bytes | bytearray | memoryview) -> None:
    """Check that ``data`` is one complete, well-formed Yjs v1 update.

    Raises :class:`~sync.errors.InvalidUpdate` (with the decoding error as
    ``__cause__``) on truncation, varints over ten bytes, unknown struct,
    content, type or Any tags, invalid UTF-8, counts larger than the bytes
    left could hold, Any nested deeper than :data:`MAX_ANY_DEPTH`, and bytes
    left over after the delete set.
    """
    if type(data) is not bytes:
        data = bytes(data)
    try:
        _walk(data, False)
    except _DECODE_ERRORS as exc:
        raise _invalid(exc) from exc


# --------------------------------------------------------------------------
# Splitting.


def _vlen(value: int) -> int:
    """Byte length of ``value`` as a varUint."""
    n = 1
    while value >= 0x80:
        value >>= 7
        n += 1
    return n


def _integration_order(runs: list[_Run]) -> list[tuple[int, int, int]]:
    """Order all structs so that each comes after the structs it refers to.

    Same idea as yjs ``integrateStructs``: walk the clients; when the next
    struct refers to a not yet emitted struct of another client in this
    update, first emit that client's structs up to the one referred to. Each
    client's structs stay in clock order. References outside the update, to
    the struct's own client, or around a cycle (impossible in a real
    document) are ignored, so this always terminates. Emitting in this order
    means no part leaves the receiver with pending structs that wait for a
    later part. Returns ``(run, first, stop)`` ranges of struct indexes.
    """
    index_of = {run.client: i for i, run in enumerate(runs)}
    n_runs = len(runs)
    next_i = [0] * n_runs
    counts = [len(run.clocks) for run in runs]
    clocks_of = [run.clocks for run in runs]
    deps_of = [run.deps for run in runs]
    end_clock = [run.end_clock for run in runs]
    on_stack = [False] * n_runs
    order: list[tuple[int, int, int]] = []
    for root in range(n_runs):
        if next_i[root] >= counts[root]:
            continue
        # (run, emit up to the struct holding this clock; -1: all of them)
        stack = [(root, -1)]
        on_stack[root] = True
        while stack:
            x, target = stack[-1]
            i = first = next_i[x]
            n = counts[x]
            clocks_x = clocks_of[x]
            deps_x = deps_of[x]
            blocker = -1
            needed = 0
            while i < n:
                if 0 <= target < clocks_x[i]:
                    break
                deps = deps_x[i]
                if deps:
                    for k in range(0, len(deps), 2):
                        d = index_of.get(deps[k])
                        if d is None or on_stack[d]:
                            continue
                        j = next_i[d]
                        clock = deps[k + 1]
                        if j < counts[d] and clocks_of[d][j] <= clock < end_clock[d]:
                            blocker = d
                            needed = clock
                            break
                    if blocker >= 0:
                        break
                i += 1
            if i > first:
                order.append((x, first, i))
                next_i[x] = i
            if blocker >= 0:
                stack.append((blocker, needed))
                on_stack[blocker] = True
            else:
                stack.pop()
                on_stack[x] = False
    return order


class _Part:
    """Struct section of one output update, built run by run."""

    __slots__ = ("runs", "size")

    def __init__(self) -> None:
        # run index -> [client, first clock, struct count, chunks]
        self.runs: dict[int, list] = {}
        # Encoded size including a one-byte empty delete set.
        self.size = 2

    def cost(self, run: int, client: int, clock: int, count: int) -> int:
        """Bytes that adding ``count`` structs adds besides the structs themselves."""
        entry = self.runs.get(run)
        if entry is not None:
            old = entry[2]
            return _vlen(old + count) - _vlen(old)
        n = len(self.runs)
        return _vlen(count) + _vlen(client) + _vlen(clock) + _vlen(n + 1) - _vlen(n)

    def add(self, run: int, client: int, clock: int, chunk: bytes | list[int], count: int) -> None:
        """Add ``count`` structs: raw ``[start, stop]`` of the input or new bytes."""
        nbytes = chunk[1] - chunk[0] if type(chunk) is list else len(chunk)
        entry = self.runs.get(run)
        if entry is None:
            n = len(self.runs)
            self.size += _vlen(n + 1) - _vlen(n) + _vlen(count) + _vlen(client) + _vlen(clock)
            self.runs[run] = [client, clock, count, [chunk]]
        else:
            old = entry[2]
            entry[2] = old + count
            self.size += _vlen(old + count) - _vlen(old)
            chunks = entry[3]
            last = chunks[-1]
            # Extend a raw range instead of keeping one chunk per struct.
            if type(chunk) is list and type(last) is list and last[1] == chunk[0]:
                last[1] = chunk[1]
            else:
                chunks.append(chunk)
        self.size += nbytes

    def encode(self, data: bytes) -> bytes:
        out = [encode_varuint(len(self.runs))]
        # Higher client ids first, like yjs writeClientsStructs.
        for client, clock, count, chunks in sorted(self.runs.values(), key=lambda r: -r[0]):
            out.append(encode_varuint(count))
            out.append(encode_varuint(client))
            out.append(encode_varuint(clock))
            for chunk in chunks:
                out.append(data[chunk[0] : chunk[1]] if type(chunk) is list else chunk)
        return b"".join(out)


def _item_pieces(
    data: bytes, start: int, client: int, clock: int, budget: int
) -> list[tuple[int, bytes]] | None:
    """Cut the String, Any or JSON item at ``start`` into items of ``budget`` bytes.

    Returns ``(clock, encoded struct)`` pairs, or None when the item is of
    another kind or cannot be cut. The first piece keeps the original origin,
    right origin and parent info; every later piece has origin = the last
    clock of the piece before it and the original right origin, exactly like
    yjs ``splitItem``; receivers merge the pieces back into one item. Strings
    are cut between code points, so never inside a UTF-16 surrogate pair; Any
    and JSON items between values, so one value bigger than the budget gets a
    piece of its own that exceeds it.
    """
    info = data[start]
    ref = info & 0x1F
    if ref != _STRING and ref != _ANY and ref != _JSON:
        return None
    end = len(data)
    pos = start + 1
    right = b""
    if info & 0x80:
        pos = _skip_varints(data, pos, 2)
    if info & 0x40:
        right_start = pos
        pos = _skip_varints(data, pos, 2)
        right = data[right_start:pos]
    if not info & 0xC0:
        parent_info, pos = _varuint(data, pos)
        pos = _skip_string(data, pos, end) if parent_info == 1 else _skip_varints(data, pos, 2)
        if info & 0x20:
            pos = _skip_string(data, pos, end)
    first_head = data[start:pos]
    # String: byte size (>= its UTF-16 length); Any and JSON: number of values.
    amount, pos = _varuint(data, pos)
    later_info = bytes((0x80 | (info & 0x60) | ref,))
    client_bytes = encode_varuint(client)
    # The longest header a piece can get: origin clocks stay below clock + amount.
    longest_later = 1 + len(client_bytes) + _vlen(clock + amount) + len(right)
    room = budget - max(len(first_head), longest_later) - _vlen(amount)

    spans: list[tuple[int, int, int]] = []  # (first byte, stop byte, clock length)
    if ref == _STRING:
        if room < 4:  # not even one code point would fit
            return None
        stop = pos + amount
        while pos < stop:
            cut = pos + room
            if cut >= stop:
                cut = stop
            else:
                while data[cut] & 0xC0 == 0x80:  # back to the start of a code point
                    cut -= 1
            spans.append((pos, cut, _utf16_length(data[pos:cut])))
            pos = cut
    else:
        if room < 1:
            return None
        first = pos
        count = 0
        for _ in range(amount):
            after = _skip_any(data, pos, end, 0) if ref == _ANY else _skip_string(data, pos, end)
            if count and after - first > room:
                spans.append((first, pos, count))
                first = pos
                count = 0
            pos = after
            count += 1
        spans.append((first, pos, count))
    if len(spans) < 2:
        return None

    pieces = []
    piece_clock = clock
    for n, (first, stop, length) in enumerate(spans):
        if n == 0:
            header = first_head
        else:
            header = later_info + client_bytes + encode_varuint(piece_clock - 1) + right
        prefix = encode_varuint(stop - first if ref == _STRING else length)
        pieces.append((piece_clock, header + prefix + data[first:stop]))
        piece_clock += length
    return pieces


def _delete_set_chunks(
    data: bytes, parsed: _Parsed, first_room: int, room: int
) -> list[bytes]:
    """Encode the delete set as one or more delete sets.

    The first fits in ``first_room`` bytes (it may be empty), the rest in
    ``room`` bytes each unless a single range is bigger than that.
    """
    end = len(data)
    if end - parsed.ds_start <= first_room:
        return [data[parsed.ds_start :]]
    chunks: list[bytes] = []
    entries: list[tuple[int, list[int], int]] = []  # (client, [first, stop], count)
    size = 1
    limit = first_room

    def flush() -> None:
        out = [encode_varuint(len(entries))]
        for client, span, count in entries:
            out.append(encode_varuint(client))
            out.append(encode_varuint(count))
            out.append(data[span[0] : span[1]])
        chunks.append(b"".join(out))

    for client, offsets, stop in parsed.ds_entries:
        bounds = offsets + [stop]
        for k in range(len(offsets)):
            r_start, r_stop = bounds[k], bounds[k + 1]
            nbytes = r_stop - r_start
            last = entries[-1] if entries else None
            if last is not None and last[0] == client:
                cost = nbytes + _vlen(last[2] + 1) - _vlen(last[2])
            else:
                n = len(entries)
                cost = nbytes + _vlen(client) + 1 + _vlen(n + 1) - _vlen(n)
            if size + cost > limit and (entries or not chunks):
                flush()
                entries = []
                size = 1
                limit = room
                last = None
                cost = nbytes + _vlen(client) + 1
            if last is not None and last[0] == client:
                entries[-1] = (client, [last[1][0], r_stop], last[2] + 1)
            else:
                entries.append((client, [r_start, r_stop], 1))
            size += cost
    flush()
    return chunks


def split_update(data: bytes | bytearray | memoryview, max_bytes: int) -> list[bytes]:
    """Split a v1 update into updates of at most ``max_bytes`` bytes each.

    Applied in order to an empty document, the parts build exactly the
    document that ``data`` builds. Struct bytes are copied verbatim into
    per-client runs with fresh headers, in an order where every struct comes
    after the structs it refers to (so no part leaves pending structs behind).
    The delete set travels after all structs: in the last struct part when it
    fits, otherwise cut at range boundaries into extra struct-less parts.

    A String, Any or JSON item too big for one part is cut into several
    items the way yjs splits items (receivers merge them back). Parts exceed
    ``max_bytes`` only where nothing smaller exists: a single struct that
    cannot be cut (a big Binary, Embed, Format, Type or Doc item, or a
    map entry holding one big value) or one value of an Any/JSON item, each
    sent alone in its part; any struct when ``max_bytes`` cannot hold its
    header plus one character or value; one delete set range that does not
    fit on its own. If ``data`` already fits it is returned unchanged as
    ``[data]``. The input is fully validated either way; malformed input, or
    input with two struct runs for one client (which no encoder writes; yjs
    would keep only the last), raises :class:`~sync.errors.InvalidUpdate`.

    Cost: about 2 µs of pure Python per struct, plus copying the bytes.
    """
    if type(max_bytes) is not int or max_bytes < 1:
        raise ValueError(f"max_bytes must be a positive int, got {max_bytes!r}")
    if type(data) is not bytes:
        data = bytes(data)
    if len(data) <= max_bytes:
        _checked_walk(data, False)
        return [data]
    parsed = _checked_walk(data, True)
    assert parsed is not None  # for the type checker: collect mode returns the layout
    runs = parsed.runs
    seen: set[int] = set()
    for run in runs:
        if run.client in seen:
            raise InvalidUpdate(f"client {run.client} has two struct runs")
        seen.add(run.client)
        run.starts.append(run.end_offset)  # so struct i spans starts[i]:starts[i + 1]

    sections: list[bytes] = []
    part = _Part()
    for r, first, stop in _integration_order(runs):
        run = runs[r]
        client = run.client
        clocks = run.clocks
        starts = run.starts
        i = first
        while i < stop:
            # Take as many of structs i..stop-1 as fit (header sized for all).
            room = max_bytes - part.size - part.cost(r, client, clocks[i], stop - i)
            k = bisect_right(starts, starts[i] + room, i, stop + 1) - 1
            if k > i:
                part.add(r, client, clocks[i], [starts[i], starts[k]], k - i)
                i = k
                if i < stop:  # struct i did not fit
                    sections.append(part.encode(data))
                    part = _Part()
                continue
            size = starts[i + 1] - starts[i]
            if part.runs:
                if part.size + part.cost(r, client, clocks[i], 1) + size <= max_bytes:
                    part.add(r, client, clocks[i], [starts[i], starts[i + 1]], 1)
                    i += 1
                else:
                    sections.append(part.encode(data))
                    part = _Part()
                continue
            # Struct i alone is too big for a part.
            # Its budget: all of an empty part but the run header.
            budget = max_bytes - part.size - part.cost(r, client, run.end_clock, 1)
            pieces = _item_pieces(data, starts[i], client, clocks[i], budget)
            if pieces is None:
                part.add(r, client, clocks[i], [starts[i], starts[i + 1]], 1)
            else:
                for piece_clock, piece in pieces:
                    if part.runs and (
                        part.size + part.cost(r, client, piece_clock, 1) + len(piece) > max_bytes
                    ):
                        sections.append(part.encode(data))
                        part = _Part()
                    part.add(r, client, piece_clock, piece, 1)
            i += 1
    last = part.encode(data)

    ds = _delete_set_chunks(data, parsed, max_bytes - len(last), max_bytes - 1)
    parts = [section + b"\x00" for section in sections]  # empty delete sets
    parts.append(last + ds[0])
    parts.extend(b"\x00" + chunk for chunk in ds[1:])  # no structs, only deletes
    return parts
