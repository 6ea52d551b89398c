"""A raw y-protocols client over ``websockets`` for black-box tests of the relay.

The client sends exactly the bytes a test gives it, so tests can send frames
that no Yjs library would build. A background task reads and decodes every
incoming frame and keeps it in ``RawClient.history``. It also applies every
sync step 2 and update to a pycrdt ``Doc`` (``RawClient.doc``), so tests can
read the room's Text ``t`` and Map ``m`` as this client sees them.

Wire format (y-websocket): outer varUint type 0 sync, 1 awareness, 2 auth,
3 query-awareness. Sync sub-type 0 step 1 (varBytes state vector), 1 step 2
(varBytes update), 2 update (varBytes update). An awareness message carries
varBytes of: varUint count, then per entry varUint client ID, varUint clock
and varString JSON state (``null`` removes the client).
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from pycrdt import Doc, Map, Text
from websockets.asyncio.client import ClientConnection, connect as ws_connect
from websockets.exceptions import ConnectionClosed

from sync.codec import Decoder, encode_varbytes, encode_varstring, encode_varuint

MESSAGE_SYNC = 0
MESSAGE_AWARENESS = 1
MESSAGE_AUTH = 2
MESSAGE_QUERY_AWARENESS = 3

SYNC_STEP1 = 0
SYNC_STEP2 = 1
SYNC_UPDATE = 2

# Yjs v1 updates, decoded with pycrdt 0.14.
# Client 1, clock 0 inserts "hi" into the root Y.Text "t".
UPDATE_INSERT_HI = bytes.fromhex("01 01 01 00 04 01 01 74 02 68 69 00")
# Client 1, clock 2 appends "!" after the item (1, 1), so it depends on UPDATE_INSERT_HI.
UPDATE_APPEND_BANG = bytes.fromhex("01 01 01 02 84 01 01 01 21 00")
# Client 2, clock 0 sets key "k" of the root Y.Map "m" to "v".
UPDATE_MAP_K_V = bytes.fromhex("01 01 02 00 28 01 01 6d 01 6b 01 77 01 76 00")
# Client 3, clock 0 inserts "ro" into the root Y.Text "t".
UPDATE_INSERT_RO = bytes.fromhex("01 01 03 00 04 01 01 74 02 72 6f 00")

# Sync step 1 with an empty state vector, so the reply is a step 2 with the whole document.
STEP1_EMPTY = bytes.fromhex("00 00 01 00")
QUERY_AWARENESS = bytes.fromhex("03")


@dataclass(frozen=True)
class AwarenessEntry:
    """One awareness state, where ``state`` is the parsed JSON or ``None`` for a removal."""

    client: int
    clock: int
    state: object


@dataclass(frozen=True)
class Message:
    """One decoded y-protocols message.

    ``subtype`` is the sync or auth sub-type (``None`` for awareness and
    query-awareness). ``payload`` is the state vector or update of a sync
    message and the inner bytes of an awareness message. ``entries`` contains the
    decoded awareness entries and ``reason`` the text of an auth message.
    """

    kind: int
    subtype: int | None
    payload: bytes
    raw: bytes
    entries: tuple[AwarenessEntry, ...] = ()
    reason: str | None = None

    @property
    def is_step2(self) -> bool:
        return self.kind == MESSAGE_SYNC and self.subtype == SYNC_STEP2

    @property
    def is_update(self) -> bool:
        return self.kind == MESSAGE_SYNC and self.subtype == SYNC_UPDATE

    @property
    def is_awareness(self) -> bool:
        return self.kind == MESSAGE_AWARENESS


@dataclass
class Received:
    """A frame as it arrived, with its arrival time from ``time.monotonic()``."""

    frame: bytes | str
    at: float
    message: Message | None = None
    decode_error: str | None = None


class MessageDecodeError(ValueError):
    """The relay sent a frame that is not exactly one valid y-protocols message."""


# Message builders.


def sync_step1(state_vector: bytes) -> bytes:
    """Build a sync step 1 message carrying ``state_vector``."""
    return encode_varuint(MESSAGE_SYNC) + encode_varuint(SYNC_STEP1) + encode_varbytes(state_vector)


def sync_step2(update: bytes) -> bytes:
    """Build a sync step 2 message carrying ``update``."""
    return encode_varuint(MESSAGE_SYNC) + encode_varuint(SYNC_STEP2) + encode_varbytes(update)


def sync_update(update: bytes) -> bytes:
    """Build a sync update message carrying ``update``."""
    return encode_varuint(MESSAGE_SYNC) + encode_varuint(SYNC_UPDATE) + encode_varbytes(update)


def awareness_payload(entries: Iterable[tuple[int, int, object]]) -> bytes:
    """Encode the inner awareness update for ``(client, clock, state)`` entries.

    A state of ``None`` is sent as the JSON text ``null``, which removes the client.
    """
    entry_list = list(entries)
    out = bytearray(encode_varuint(len(entry_list)))
    for client, clock, state in entry_list:
        out += encode_varuint(client)
        out += encode_varuint(clock)
        out += encode_varstring(json.dumps(state, separators=(",", ":")))
    return bytes(out)


def awareness_update(entries: Iterable[tuple[int, int, object]]) -> bytes:
    """Build an awareness message for ``(client, clock, state)`` entries."""
    return encode_varuint(MESSAGE_AWARENESS) + encode_varbytes(awareness_payload(entries))


def query_awareness() -> bytes:
    """Build a query-awareness message."""
    return QUERY_AWARENESS


# Awareness of client 1001, clock 1, state {"user":"a"}, as awareness_update([(1001, 1, {"user": "a"})]) builds it.
AWARENESS_1001 = bytes.fromhex("01 11 01 e9 07 01 0c 7b 22 75 73 65 72 22 3a 22 61 22 7d")


# Decoding.


def decode_awareness_entries(payload: bytes) -> tuple[AwarenessEntry, ...]:
    """Decode the inner bytes of an awareness message into entries."""
    decoder = Decoder(payload)
    count = decoder.read_varuint()
    entries = []
    for _ in range(count):
        client = decoder.read_varuint()
        clock = decoder.read_varuint()
        state = json.loads(decoder.read_varstring())
        entries.append(AwarenessEntry(client, clock, state))
    if decoder.remaining:
        raise MessageDecodeError(f"{decoder.remaining} trailing bytes after {count} awareness entries")
    return tuple(entries)


def decode_message(frame: bytes) -> Message:
    """Decode one binary frame into one message.

    Raise ``MessageDecodeError`` when the frame is not exactly one valid
    message, because y-websocket clients read one message per frame.
    """
    try:
        decoder = Decoder(frame)
        kind = decoder.read_varuint()
        if kind == MESSAGE_SYNC:
            subtype = decoder.read_varuint()
            if subtype not in (SYNC_STEP1, SYNC_STEP2, SYNC_UPDATE):
                raise MessageDecodeError(f"unknown sync sub-type {subtype}")
            message = Message(kind, subtype, decoder.read_varbytes(), frame)
        elif kind == MESSAGE_AWARENESS:
            payload = decoder.read_varbytes()
            message = Message(kind, None, payload, frame, entries=decode_awareness_entries(payload))
        elif kind == MESSAGE_AUTH:
            subtype = decoder.read_varuint()
            reason = decoder.read_varstring()
            message = Message(kind, subtype, b"", frame, reason=reason)
        elif kind == MESSAGE_QUERY_AWARENESS:
            message = Message(kind, None, b"", frame)
        else:
            raise MessageDecodeError(f"unknown message type {kind}")
    except MessageDecodeError:
        raise
    except Exception as exc:
        raise MessageDecodeError(f"cannot decode frame {frame[:32].hex(' ')}: {exc!r}") from exc
    if decoder.remaining:
        raise MessageDecodeError(f"{decoder.remaining} trailing bytes after message in frame {frame[:32].hex(' ')}")
    return message


def new_doc() -> Doc:
    """Create a pycrdt document with the root types the tests use: Text "t" and Map "m"."""
    doc = Doc()
    doc.get("t", type=Text)
    doc.get("m", type=Map)
    return doc


def doc_text(doc: Doc) -> str:
    """Return the content of the root Text "t"."""
    return str(doc.get("t", type=Text))


def doc_map(doc: Doc) -> dict:
    """Return the content of the root Map "m" as a plain dict."""
    return doc.get("m", type=Map).to_py() or {}


def doc_from_updates(updates: Iterable[bytes]) -> Doc:
    """Apply ``updates`` in order to a new document and return it."""
    doc = new_doc()
    for update in updates:
        doc.apply_update(update)
    return doc


async def wait_until(condition: Callable[[], bool], timeout: float, describe: Callable[[], str]) -> None:
    """Poll ``condition`` every 10 ms and raise ``TimeoutError`` with ``describe()`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{describe()} after {timeout} s")
        await asyncio.sleep(0.01)


# Client.


def document_url(base_url: str, doc_name: str) -> str:
    """Return the WebSocket URL of ``doc_name``, percent-encoded into the path (``/`` kept)."""
    return f"{base_url}/{urllib.parse.quote(doc_name, safe='/')}"


@dataclass
class RawClient:
    """One WebSocket connection to a room that sends raw bytes and records what arrives."""

    ws: ClientConnection
    doc_name: str
    doc: Doc = field(default_factory=new_doc)
    history: list[Received] = field(default_factory=list)
    apply_errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._queue: asyncio.Queue[Received | None] = asyncio.Queue()
        self._reader = asyncio.get_running_loop().create_task(self._read_loop())

    @classmethod
    async def connect(
        cls,
        base_url: str,
        doc_name: str,
        *,
        open_timeout: float = 5.0,
        token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> RawClient:
        """Open a connection to ``doc_name`` on the relay at ``base_url`` (``ws://127.0.0.1:PORT``).

        ``token`` is sent as the ``token`` query parameter, as the y-websocket
        provider's ``params`` option does.
        """
        url = document_url(base_url, doc_name)
        if token is not None:
            url += "?" + urllib.parse.urlencode({"token": token})
        ws = await ws_connect(
            url,
            additional_headers=headers,
            max_size=None,
            compression=None,
            proxy=None,
            open_timeout=open_timeout,
            ping_interval=None,
            max_queue=None,
        )
        return cls(ws, doc_name)

    async def _read_loop(self) -> None:
        try:
            async for frame in self.ws:
                received = Received(frame, time.monotonic())
                if isinstance(frame, bytes):
                    try:
                        received.message = decode_message(frame)
                    except MessageDecodeError as exc:
                        received.decode_error = str(exc)
                    else:
                        self._apply(received.message)
                self.history.append(received)
                self._queue.put_nowait(received)
        except ConnectionClosed:
            pass
        finally:
            self._queue.put_nowait(None)

    def _apply(self, message: Message) -> None:
        if not (message.is_step2 or message.is_update):
            return
        try:
            self.doc.apply_update(message.payload)
        except Exception as exc:
            self.apply_errors.append(f"{exc!r} on update {message.payload[:32].hex(' ')}")

    # Sending.

    async def send_bytes(self, data: bytes) -> None:
        """Send ``data`` as one binary frame."""
        await self.ws.send(data)

    async def send_text(self, text: str) -> None:
        """Send ``text`` as one text frame."""
        await self.ws.send(text)

    async def send_update(self, update: bytes) -> None:
        """Send a sync update message and apply it to the local document."""
        self.doc.apply_update(update)
        await self.send_bytes(sync_update(update))

    def append_text_locally(self, append: str) -> bytes:
        """Append ``append`` to Text "t" of the local document and return the change as an update."""
        before = self.doc.get_state()
        text = self.doc.get("t", type=Text)
        text += append
        return self.doc.get_update(before)

    async def edit_text(self, append: str) -> bytes:
        """Append ``append`` to Text "t" locally, send the change as an update and return it."""
        update = self.append_text_locally(append)
        await self.send_bytes(sync_update(update))
        return update

    async def send_then_close_in_one_write(self, data: bytes, code: int = 1000) -> None:
        """Write a binary frame and a close frame to the socket in a single ``write`` call."""
        protocol = self.ws.protocol
        protocol.send_binary(data)
        protocol.send_close(code)
        self.ws.transport.write(b"".join(chunk for chunk in protocol.data_to_send() if chunk))

    # Receiving.

    async def recv(self, timeout: float = 2.0) -> Received:
        """Return the next frame.

        Raise ``TimeoutError`` when none arrives within ``timeout`` seconds and
        ``EOFError`` once the connection is closed and every frame was read.
        """
        item = await asyncio.wait_for(self._queue.get(), timeout)
        if item is None:
            self._queue.put_nowait(None)
            raise EOFError(f"connection closed with code {self.ws.close_code} {self.ws.close_reason!r}")
        return item

    def drain(self) -> int:
        """Discard every frame that arrived but was not read yet, and return their count.

        Discarded frames stay in ``history``.
        """
        count = 0
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is None:
                self._queue.put_nowait(None)
                break
            count += 1
        return count

    async def recv_message(self, timeout: float = 2.0) -> Message:
        """Return the next decoded message, or fail the test on a text frame or an undecodable frame."""
        received = await self.recv(timeout)
        if received.message is None:
            raise AssertionError(f"relay sent an invalid frame {received.frame!r}: {received.decode_error}")
        return received.message

    async def wait_for(self, predicate: Callable[[Message], bool], timeout: float = 2.0) -> Message:
        """Return the first coming message that matches ``predicate``, skipping others.

        Skipped messages stay in ``history``. Raise ``TimeoutError`` when none
        arrives within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no matching message within {timeout} s")
            message = await self.recv_message(remaining)
            if predicate(message):
                return message

    async def wait_for_step2(self, timeout: float = 2.0) -> Message:
        """Return the next sync step 2 message."""
        return await self.wait_for(lambda message: message.is_step2, timeout)

    async def sync(self, timeout: float = 2.0) -> Message:
        """Send a step 1 with an empty state vector and return the relay's step 2 reply."""
        await self.send_bytes(STEP1_EMPTY)
        return await self.wait_for_step2(timeout)

    async def wait_for_text(self, expected: str, timeout: float = 2.0) -> None:
        """Wait until Text "t" of the local document equals ``expected``."""
        await wait_until(
            lambda: doc_text(self.doc) == expected,
            timeout,
            lambda: f"text is {doc_text(self.doc)[:80]!r}, expected {expected[:80]!r}",
        )

    async def wait_for_map(self, expected: dict, timeout: float = 2.0) -> None:
        """Wait until Map "m" of the local document equals ``expected``."""
        await wait_until(
            lambda: doc_map(self.doc) == expected,
            timeout,
            lambda: f"map is {doc_map(self.doc)!r}, expected {expected!r}",
        )

    async def wait_for_close(self, timeout: float = 3.0) -> tuple[int | None, str | None]:
        """Wait until the connection is closed and return the received (code, reason).

        The code is 1006 when the TCP connection ended without a close frame.
        """
        await asyncio.wait_for(asyncio.shield(self._reader), timeout)
        await asyncio.wait_for(self.ws.wait_closed(), timeout)
        return self.ws.close_code, self.ws.close_reason

    @property
    def is_open(self) -> bool:
        return not self._reader.done()

    @property
    def close_frame_received(self) -> tuple[int, str] | None:
        """Return the (code, reason) of the peer's close frame, even while TCP is still open."""
        frame = self.ws.protocol.close_rcvd
        return None if frame is None else (frame.code, frame.reason)

    def frames(self) -> list[bytes]:
        """Return every binary frame received so far."""
        return [item.frame for item in self.history if isinstance(item.frame, bytes)]

    def messages(self) -> list[Message]:
        """Return every decoded message received so far."""
        return [item.message for item in self.history if item.message is not None]

    def awareness_entries(self) -> list[AwarenessEntry]:
        """Return every awareness entry received so far, in arrival order."""
        return [entry for message in self.messages() if message.is_awareness for entry in message.entries]

    # Closing.

    async def close(self, code: int = 1000) -> None:
        """Close with a close handshake and wait for the reader to stop."""
        await self.ws.close(code)
        await asyncio.wait_for(asyncio.shield(self._reader), 5.0)

    def abort(self, reset: bool = True) -> None:
        """Drop the TCP connection without a close frame.

        With ``reset`` the socket gets ``SO_LINGER`` 0 first, so the kernel sends
        an RST instead of a FIN, as a crashed host or a network loss would.
        """
        if reset:
            sock = self.ws.transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.ws.transport.abort()


async def connect(base_url: str, doc_name: str, *, open_timeout: float = 5.0) -> RawClient:
    """Open a raw client connection to ``doc_name``."""
    return await RawClient.connect(base_url, doc_name, open_timeout=open_timeout)


async def fetch_doc(base_url: str, doc_name: str, timeout: float = 5.0) -> tuple[Doc, Message]:
    """Connect, request the whole document with an empty step 1 and return it with the step 2.

    Only the first step 2 reply is applied, so the document shows exactly what
    that reply contained.
    """
    client = await RawClient.connect(base_url, doc_name)
    try:
        step2 = await client.sync(timeout)
        return doc_from_updates([step2.payload]), step2
    finally:
        await client.close()


# Relay HTTP endpoints.

_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def fetch_metrics(http_url: str, timeout: float = 5.0) -> dict[str, float]:
    """Read ``/metrics`` and return each sample as ``{"name{labels}": value}``."""
    with _NO_PROXY_OPENER.open(f"{http_url}/metrics", timeout=timeout) as response:
        text = response.read().decode("utf-8")
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        try:
            samples[name.strip()] = float(value)
        except ValueError:
            continue
    return samples
