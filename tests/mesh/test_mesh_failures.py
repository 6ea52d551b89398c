"""Failure injection for the NATS JetStream mesh, with real processes only.

Each test runs a real nats-server (or a three-node cluster), real relays and
real Yjs clients: yjs with y-websocket providers in Node, driven through
``failure-editors.mjs`` beside this file. It breaks one process while the
clients edit one document. Once everything is quiet, it checks what the
stream and the clients contain.

An update counts as acknowledged by a relay when JetStream stored it: it is
a message of stream YRELAY_UPDATES whose ``Yrelay-Relay`` header is that
relay's id. A document contains a set of acknowledged updates when its state
vector covers every clock range those updates insert, and applying them to a
copy of the document changes neither its encoded state nor its content.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.js.api import DeliverPolicy
from pycrdt import Array, Doc, Map, Text

from sync.update_format import _walk
from tests.interop.helpers import decode_state_vector, missing_clocks
from tests.support.nats_server import NatsCluster, NatsServer
from tests.support.node import ScenarioError, ScenarioProcess, ensure_node_modules
from tests.support.raw_client import connect as raw_connect
from tests.support.raw_client import doc_text, fetch_metrics, wait_until
from tests.support.relay_process import RelayProcess, free_port

STREAM = "YRELAY_UPDATES"
UPDATES_FILTER = "yrelay.doc.>"
RELAY_HEADER = "Yrelay-Relay"
DOC_NAME = "mesh failure doc"
# Edited by one client of relay A only, so after A dies its updates can reach
# relay B through the stream alone.
SOLO_DOC_NAME = "mesh failure solo doc"
# ScenarioProcess runs scripts from tests/interop, where the npm packages are installed.
EDITOR_SCRIPT = "../mesh/failure-editors.mjs"

PUBLISHED = "yrelay_mesh_updates_published_total"
UNACKNOWLEDGED = "yrelay_mesh_unacknowledged_updates"

CLIENTS_ON_A = ["a1", "a2"]
CLIENTS_ON_B = ["b1", "b2"]
ALL_CLIENTS = CLIENTS_ON_A + CLIENTS_ON_B

COMMAND_TIMEOUT = 30.0
CONVERGE_TIMEOUT_MS = 40000
QUIET_TIMEOUT = 30.0
LOG_TAIL_LINES = 60

_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def document_subject(name: str) -> str:
    """Return the stream subject of a document: the prefix, ``doc`` and the base64url name."""
    token = base64.urlsafe_b64encode(name.encode("utf-8")).rstrip(b"=").decode("ascii")
    return f"yrelay.doc.{token}"


# --- processes -----------------------------------------------------------------


class MeshProcesses:
    """The NATS servers and relays of one test, stopped when the test ends."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self.nats_servers: list[NatsServer] = []
        self.clusters: list[NatsCluster] = []
        self.relays: dict[str, RelayProcess] = {}

    def start_nats(self) -> NatsServer:
        """Start one JetStream node."""
        server = NatsServer(self.base_dir / "nats-store")
        self.nats_servers.append(server)
        return server.start()

    def start_cluster(self) -> NatsCluster:
        """Start three JetStream nodes joined by routes."""
        cluster = NatsCluster(self.base_dir / "cluster")
        self.clusters.append(cluster)
        return cluster.start()

    def relay(self, relay_id: str, servers: list[str], *extra_args: str) -> RelayProcess:
        """Create (without starting) a relay joined to ``servers`` under ``relay_id``."""
        args = ["--nats", ",".join(servers), "--relay-id", relay_id, *extra_args]
        relay = RelayProcess(self.base_dir / f"data-{relay_id}", args)
        self.relays[relay_id] = relay
        return relay

    def start_relay(self, relay_id: str, servers: list[str], *extra_args: str) -> RelayProcess:
        """Start a relay joined to ``servers`` and wait until it is healthy."""
        return self.relay(relay_id, servers, *extra_args).start()

    def stop_all(self) -> None:
        """Stop every relay, then every NATS node, and print the log tails."""
        for relay_id, relay in self.relays.items():
            relay.stop()
            tail = "\n".join(relay.log_text().splitlines()[-LOG_TAIL_LINES:])
            print(f"--- last {LOG_TAIL_LINES} log lines of relay {relay_id} ---\n{tail}")
        nodes = list(self.nats_servers) + [node for cluster in self.clusters for node in cluster.nodes]
        for node in nodes:
            node.stop()
            tail = "\n".join(node.log_text().splitlines()[-20:])
            print(f"--- last 20 log lines of nats-server {node.name} at {node.url} ---\n{tail}")


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[MeshProcesses]:
    """Start NATS and relays for one test. pytest shows their log tails when the test fails."""
    processes = MeshProcesses(tmp_path)
    yield processes
    processes.stop_all()


@pytest.fixture
def editors() -> Iterator[Editors]:
    """Start the Node clients and kill them if the test ends early."""
    ensure_node_modules()
    with Editors() as running:
        yield running


# --- Node clients --------------------------------------------------------------


class Editors:
    """The Yjs clients of ``failure-editors.mjs``, driven by JSON commands on stdin."""

    def __init__(self) -> None:
        self.scenario = ScenarioProcess(EDITOR_SCRIPT)
        self._replies: list[dict[str, Any]] = []

    def __enter__(self) -> Editors:
        self.scenario.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.scenario.__exit__(*exc_info)

    def send(self, command: str, **fields: Any) -> None:
        """Send one command without waiting for its reply (see ``reply``)."""
        proc = self.scenario.proc
        assert proc is not None and proc.stdin is not None
        proc.stdin.write(json.dumps({"cmd": command, **fields}) + "\n")
        proc.stdin.flush()

    def reply(self, step: str, timeout: float = COMMAND_TIMEOUT, **match: Any) -> dict[str, Any]:
        """Return the reply to ``step`` whose fields equal ``match``.

        Raises ``AssertionError`` when the reply reports that the command failed.
        """
        deadline = time.monotonic() + timeout
        while True:
            for index, reply in enumerate(self._replies):
                if reply.get("step") == step and all(reply.get(key) == value for key, value in match.items()):
                    del self._replies[index]
                    if "error" in reply:
                        raise AssertionError(
                            f"command {step} failed in the Node client: {reply['error']}\n{self.scenario.output()}"
                        )
                    return reply
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ScenarioError(f"no reply to {step} {match} within {timeout:.0f} s\n{self.scenario.output()}")
            self._replies.append(self.scenario.wait_for_event("done", remaining))

    def call(self, command: str, timeout: float = COMMAND_TIMEOUT, **fields: Any) -> dict[str, Any]:
        """Send a command and return its reply."""
        self.send(command, **fields)
        match = {"name": fields["name"]} if "name" in fields else {}
        return self.reply(command, timeout, **match)

    def connect(self, names: list[str], url: str, doc_name: str = DOC_NAME) -> None:
        """Connect a new client for each name to ``url`` and wait until all are synced."""
        for name in names:
            self.send("connect", name=name, url=url, doc=doc_name)
        for name in names:
            self.reply("connect", name=name)

    def converge(self, names: list[str]) -> list[dict[str, Any]]:
        """Wait until the named clients are equal and return their states."""
        reply = self.call("converge", timeout=CONVERGE_TIMEOUT_MS / 1000 + 10, names=names, timeoutMs=CONVERGE_TIMEOUT_MS)
        summaries = {client["name"]: client["stateVector"] for client in reply["clients"]}
        assert reply["converged"], f"clients did not converge within {CONVERGE_TIMEOUT_MS} ms: {summaries}"
        return reply["clients"]

    def fresh(self, url: str, doc_name: str = DOC_NAME) -> dict[str, Any]:
        """Return what a new client of ``doc_name`` held when it reported synced with ``url``."""
        client = self.call("fresh", url=url, doc=doc_name)["client"]
        client["name"] = f"fresh client of {doc_name!r} on {url}"
        return client

    def finish(self) -> dict[str, Any]:
        """Close stdin, so the script destroys its providers and exits."""
        return self.scenario.finish(timeout=30)


# --- the stream ----------------------------------------------------------------


@dataclass(frozen=True)
class StreamMessage:
    """One message of the updates stream."""

    sequence: int
    subject: str
    relay: str | None
    data: bytes


async def _read_stream(servers: list[str]) -> list[StreamMessage]:
    nc = await nats.connect(servers, connect_timeout=2, max_reconnect_attempts=10, reconnect_time_wait=0.5)
    try:
        js = nc.jetstream()
        info = await js.stream_info(STREAM)
        if info.state.messages == 0:
            return []
        last_sequence = info.state.last_seq
        subscription = await js.subscribe(
            UPDATES_FILTER, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL, stream=STREAM
        )
        messages = []
        try:
            while not messages or messages[-1].sequence < last_sequence:
                msg = await subscription.next_msg(timeout=10)
                messages.append(StreamMessage(
                    sequence=msg.metadata.sequence.stream,
                    subject=msg.subject,
                    relay=(msg.headers or {}).get(RELAY_HEADER),
                    data=msg.data,
                ))
        finally:
            await subscription.unsubscribe()
        return messages
    finally:
        await nc.close()


def read_stream(servers: list[str]) -> list[StreamMessage]:
    """Read every message of the stream with an ordered consumer."""
    return asyncio.run(_read_stream(servers))


def of_document(messages: Iterable[StreamMessage], doc_name: str = DOC_NAME) -> list[StreamMessage]:
    """Return the messages of one document."""
    subject = document_subject(doc_name)
    return [message for message in messages if message.subject == subject]


async def _stream_info(servers: list[str]) -> Any:
    nc = await nats.connect(servers, connect_timeout=2, max_reconnect_attempts=10, reconnect_time_wait=0.5)
    try:
        return await nc.jetstream().stream_info(STREAM)
    finally:
        await nc.close()


def stream_info(servers: list[str]) -> Any:
    """Return nats-py's ``StreamInfo`` of the updates stream."""
    return asyncio.run(_stream_info(servers))


def clock_ends(updates: Iterable[bytes]) -> dict[int, int]:
    """Return, per client, the clock after the last struct that ``updates`` insert."""
    ends: dict[int, int] = {}
    for update in updates:
        for run in _walk(update, True).runs:
            ends[run.client] = max(ends.get(run.client, 0), run.end_clock)
    return ends


def by_relay(messages: Iterable[StreamMessage]) -> dict[str | None, list[StreamMessage]]:
    """Group stream messages by the relay id in their header."""
    groups: dict[str | None, list[StreamMessage]] = {}
    for message in messages:
        groups.setdefault(message.relay, []).append(message)
    return groups


# --- documents -----------------------------------------------------------------


def doc_from(updates: Iterable[bytes]) -> Doc:
    """Apply ``updates`` in order to a new pycrdt document."""
    doc = Doc()
    for update in updates:
        doc.apply_update(update)
    return doc


def content(doc: Doc) -> dict[str, Any]:
    """Return the Y.Text "text", Y.Map "map" and Y.Array "array" that the clients edit."""
    return {
        "text": str(doc.get("text", type=Text)),
        "map": doc.get("map", type=Map).to_py() or {},
        "array": doc.get("array", type=Array).to_py() or [],
    }


def client_doc(client: dict[str, Any]) -> Doc:
    """Rebuild a client's document from the base64 update the script printed."""
    return doc_from([base64.b64decode(client["update"])])


def assert_contains(client: dict[str, Any], acknowledged: list[StreamMessage], description: str) -> None:
    """Assert that a client's document contains every update in ``acknowledged``."""
    holder = client["name"]
    doc = client_doc(client)
    have = decode_state_vector(doc.get_state())
    need = clock_ends(message.data for message in acknowledged)
    lacking = missing_clocks(have, need)
    assert lacking == {}, f"{holder} lacks clock ranges of {description}, as (have, need) per client: {lacking}"

    encoded_before = doc.get_update()
    content_before = content(doc)
    for message in acknowledged:
        doc.apply_update(message.data)
    assert content(doc) == content_before, f"applying {description} changed the content of {holder}"
    assert doc.get_update() == encoded_before, f"applying {description} changed the encoded state of {holder}"


def assert_matches_stream(client: dict[str, Any], stream_doc: Doc) -> None:
    """Assert that a client's document equals the document rebuilt from the stream."""
    doc = client_doc(client)
    stream_state = decode_state_vector(stream_doc.get_state())
    client_state = decode_state_vector(doc.get_state())
    assert client_state == stream_state, (
        f"state vector of {client['name']} differs from the stream's: "
        f"the client lacks {missing_clocks(client_state, stream_state)}, "
        f"the stream lacks {missing_clocks(stream_state, client_state)}"
    )
    assert content(doc) == content(stream_doc), f"content of {client['name']} differs from the stream's"


# --- relay endpoints -----------------------------------------------------------


def readyz(relay: RelayProcess) -> tuple[int, dict[str, Any]]:
    """Return the status code and JSON body of ``GET /readyz``."""
    try:
        with _HTTP.open(f"{relay.http_url}/readyz", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def poll_until(condition: Callable[[], bool], timeout: float, describe: Callable[[], str]) -> None:
    """Call ``condition`` every 100 ms until it is true; fail with ``describe()`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s: {describe()}")
        time.sleep(0.1)


def is_quiet(relay: RelayProcess) -> bool:
    """True when the relay is ready, connected and has nothing left to publish."""
    status, body = readyz(relay)
    mesh = body.get("mesh", {})
    return status == 200 and mesh.get("connected") is True and mesh.get("unacknowledged_updates") == 0


def mesh_unavailable(relay: RelayProcess) -> bool:
    """True when /readyz returns 503 "mesh unavailable" and reports the mesh disconnected."""
    status, body = readyz(relay)
    return (
        status == 503
        and body.get("status") == "mesh unavailable"
        and body.get("mesh", {}).get("connected") is False
    )


def has_backlog(relay: RelayProcess) -> bool:
    """True when /readyz reports updates not yet acknowledged by JetStream."""
    _status, body = readyz(relay)
    return body.get("mesh", {}).get("unacknowledged_updates", 0) > 0


def wait_quiet(*relays: RelayProcess, timeout: float = QUIET_TIMEOUT) -> None:
    """Wait until /readyz of every relay returns 200 with no unacknowledged updates."""
    poll_until(
        lambda: all(is_quiet(relay) for relay in relays),
        timeout,
        lambda: "relays not quiet: " + "; ".join(f"{relay.url} {readyz(relay)}" for relay in relays),
    )


def assert_counts_match_metrics(messages: list[StreamMessage], relays: dict[str, RelayProcess]) -> None:
    """Assert that each relay's message count in the stream is what it reports as acknowledged."""
    counts = Counter(message.relay for message in messages)
    assert set(counts) <= set(relays), f"stream messages from unknown relays: {counts}"
    for relay_id, relay in relays.items():
        metrics = fetch_metrics(relay.http_url)
        acknowledged = metrics[PUBLISHED] - metrics[UNACKNOWLEDGED]
        assert counts[relay_id] == acknowledged, (
            f"relay {relay_id} reports {metrics[PUBLISHED]:.0f} published and {metrics[UNACKNOWLEDGED]:.0f} "
            f"unacknowledged updates, but the stream has {counts[relay_id]} messages from it"
        )


def nats_port_of(relay: RelayProcess, ports: Iterable[int]) -> int:
    """Return which of ``ports`` the relay process has an established TCP connection to.

    Reads the process's socket inodes from /proc/PID/fd and their peers from
    /proc/net/tcp (Linux only).
    """
    assert relay.proc is not None
    pid = relay.proc.pid
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    expected_ports = set(ports)
    found = set()
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            remote_port = int(fields[2].split(":")[1], 16)
            established = fields[3] == "01"
            if established and fields[9] in inodes and remote_port in expected_ports:
                found.add(remote_port)
    assert len(found) == 1, f"relay {relay.url} is connected to NATS ports {found}, expected exactly one of {expected_ports}"
    return found.pop()


async def _move_stream_leader(servers: list[str], server_name: str) -> str:
    nc = await nats.connect(servers, connect_timeout=2)
    try:
        js = nc.jetstream()
        request = json.dumps({"placement": {"preferred": server_name}}).encode()
        deadline = time.monotonic() + 20
        while True:
            info = await js.stream_info(STREAM)
            if info.cluster is not None and info.cluster.leader == server_name:
                return server_name
            if time.monotonic() > deadline:
                leader = info.cluster.leader if info.cluster else None
                raise AssertionError(f"stream leader stayed {leader}, expected {server_name}")
            try:
                await nc.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{STREAM}", request, timeout=5)
            except nats.errors.TimeoutError:
                pass
            await asyncio.sleep(0.5)
    finally:
        await nc.close()


def move_stream_leader(servers: list[str], server_name: str) -> None:
    """Make ``server_name`` the stream's leader with a leader step-down that prefers it."""
    asyncio.run(_move_stream_leader(servers, server_name))


# --- tests ---------------------------------------------------------------------


@pytest.mark.slow
def test_relay_sigkill_keeps_acknowledged_updates(mesh: MeshProcesses, editors: Editors) -> None:
    nats_server = mesh.start_nats()
    relay_a = mesh.start_relay("relay-a", [nats_server.url])
    relay_b = mesh.start_relay("relay-b", [nats_server.url])
    editors.connect(CLIENTS_ON_A, relay_a.url)
    editors.connect(CLIENTS_ON_B, relay_b.url)
    editors.connect(["solo"], relay_a.url, SOLO_DOC_NAME)

    edits_sent_at = time.monotonic()
    editors.send("edit", names=[*ALL_CLIENTS, "solo"], edits=300, intervalMs=10, seed=11)
    time.sleep(1.5)
    relay_a.kill()
    # A's clients edit offline for a moment, then move to relay B. The solo
    # client never reconnects, so only the stream has its acknowledged edits.
    time.sleep(0.5)
    for name in CLIENTS_ON_A:
        editors.send("move", name=name, url=relay_b.url)
    for name in CLIENTS_ON_A:
        editors.reply("move", name=name)
    moved_at = time.monotonic()
    edited = editors.reply("edit", timeout=60)
    assert moved_at < edits_sent_at + edited["ms"] / 1000, "the edits ended before A's clients moved to relay B"

    clients = editors.converge(ALL_CLIENTS)
    wait_quiet(relay_b)
    clients.append(editors.fresh(relay_b.url))
    solo_on_b = editors.fresh(relay_b.url, SOLO_DOC_NAME)
    editors.finish()

    stream = read_stream([nats_server.url])
    messages = of_document(stream)
    from_relay = by_relay(messages)
    from_a = from_relay.get("relay-a", [])
    assert len(from_a) >= 20, f"relay A acknowledged only {len(from_a)} updates before SIGKILL; the test needs more"
    assert set(from_relay) <= {"relay-a", "relay-b"}, f"messages from unknown relays: {sorted(map(str, from_relay))}"
    for client in clients:
        assert_contains(client, from_a, f"the {len(from_a)} updates relay A acknowledged")
    stream_doc = doc_from(message.data for message in messages)
    for client in clients:
        assert_matches_stream(client, stream_doc)

    solo_messages = of_document(stream, SOLO_DOC_NAME)
    assert len(solo_messages) >= 20, f"relay A acknowledged only {len(solo_messages)} updates of the solo document"
    solo_relays = {message.relay for message in solo_messages}
    assert solo_relays == {"relay-a"}, f"solo document messages came from {solo_relays}"
    assert_contains(solo_on_b, solo_messages, f"the {len(solo_messages)} solo updates relay A acknowledged")
    assert_matches_stream(solo_on_b, doc_from(message.data for message in solo_messages))

    from_b = [message for message in stream if message.relay == "relay-b"]
    assert_counts_match_metrics(from_b, {"relay-b": relay_b})


@pytest.mark.slow
def test_cluster_node_sigkill_loses_nothing(mesh: MeshProcesses, editors: Editors) -> None:
    cluster = mesh.start_cluster()
    relay_a = mesh.start_relay("relay-a", cluster.urls, "--nats-replicas", "3")
    relay_b = mesh.start_relay("relay-b", cluster.urls, "--nats-replicas", "3")
    editors.connect(CLIENTS_ON_A, relay_a.url)
    editors.connect(CLIENTS_ON_B, relay_b.url)

    info = stream_info(cluster.urls)
    assert info.config.num_replicas == 3

    # Kill the node relay A publishes through, after making it the stream
    # leader. Relay A must then reconnect and the stream must elect a new
    # leader while acknowledgements are in flight.
    port = nats_port_of(relay_a, [node.port for node in cluster.nodes])
    victim = next(node for node in cluster.nodes if node.port == port)
    move_stream_leader(cluster.urls, victim.name)

    edits_sent_at = time.monotonic()
    editors.send("edit", names=ALL_CLIENTS, edits=600, intervalMs=10, seed=23)
    time.sleep(1.5)
    victim.kill()
    time.sleep(3.0)
    victim.start()
    restarted_at = time.monotonic()
    edited = editors.reply("edit", timeout=90)
    assert restarted_at < edits_sent_at + edited["ms"] / 1000, "the edits ended before the NATS node restarted"

    clients = editors.converge(ALL_CLIENTS)
    wait_quiet(relay_a, relay_b)
    clients.append(editors.fresh(relay_a.url))
    clients.append(editors.fresh(relay_b.url))
    editors.finish()

    stream = read_stream(cluster.urls)
    assert_counts_match_metrics(stream, {"relay-a": relay_a, "relay-b": relay_b})
    messages = of_document(stream)
    for relay_id, acknowledged in by_relay(messages).items():
        for client in clients:
            assert_contains(client, acknowledged, f"the {len(acknowledged)} updates relay {relay_id} acknowledged")
    stream_doc = doc_from(message.data for message in messages)
    for client in clients:
        assert_matches_stream(client, stream_doc)
    assert "reconnected to NATS relay=relay-a" in relay_a.log_text()


@pytest.mark.slow
def test_nats_outage_keeps_local_editing(mesh: MeshProcesses, editors: Editors) -> None:
    nats_server = mesh.start_nats()
    relay_a = mesh.start_relay("relay-a", [nats_server.url])
    relay_b = mesh.start_relay("relay-b", [nats_server.url])
    editors.connect(CLIENTS_ON_A, relay_a.url)
    editors.connect(CLIENTS_ON_B, relay_b.url)

    edits_sent_at = time.monotonic()
    editors.send("edit", names=ALL_CLIENTS, edits=700, intervalMs=20, seed=37)
    time.sleep(1.5)
    nats_server.stop()
    stopped_at = time.monotonic()

    for relay in (relay_a, relay_b):
        poll_until(
            lambda: mesh_unavailable(relay) and has_backlog(relay),
            5.0,
            lambda: f"/readyz of {relay.url} during the outage: {readyz(relay)}",
        )

    probes = []
    for round_number in range(3):
        for writer, reader in (("a1", "a2"), ("b2", "b1")):
            probe_id = f"outage-{round_number}-{writer}"
            probes.append(editors.call("probe", id=probe_id, writer=writer, reader=reader))
    for probe in probes:
        assert probe["seen"], f"probe {probe['id']} from {probe['writer']} never reached {probe['reader']}"
        assert probe["ms"] < 1000, f"probe {probe['id']} took {probe['ms']:.0f} ms to reach {probe['reader']}"
    assert time.monotonic() - stopped_at < 10.0, "the outage checks took longer than the outage"

    time.sleep(max(0.0, 10.0 - (time.monotonic() - stopped_at)))
    nats_server.start()
    restarted_at = time.monotonic()
    edited = editors.reply("edit", timeout=90)
    assert restarted_at < edits_sent_at + edited["ms"] / 1000, "the edits ended before NATS started again"

    clients = editors.converge(ALL_CLIENTS)
    wait_quiet(relay_a, relay_b)
    clients.append(editors.fresh(relay_a.url))
    clients.append(editors.fresh(relay_b.url))
    editors.finish()

    stream = read_stream([nats_server.url])
    assert_counts_match_metrics(stream, {"relay-a": relay_a, "relay-b": relay_b})
    messages = of_document(stream)
    stream_doc = doc_from(message.data for message in messages)
    for client in clients:
        assert_matches_stream(client, stream_doc)
    reference = content(client_doc(clients[0]))
    for client in clients[1:]:
        assert content(client_doc(client)) == reference, f"content of {client['name']} differs from {clients[0]['name']}"


@pytest.mark.slow
def test_startup_without_nats_exits_2(mesh: MeshProcesses) -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    relay = mesh.relay("relay-alone", [url])

    started = time.monotonic()
    with pytest.raises(RuntimeError, match="during start-up"):
        relay.start()
    elapsed = time.monotonic() - started

    assert relay.proc is not None
    assert relay.proc.returncode == 2
    assert elapsed < 15.0, f"relay took {elapsed:.1f} s to give up"
    lines = [line for line in relay.log_text().splitlines() if "cannot connect to NATS" in line]
    assert len(lines) == 1, f"expected one line about the failed NATS connection, got {lines}"
    assert url in lines[0]
    assert "Traceback" not in relay.log_text()


async def _write_one_update(relay: RelayProcess) -> None:
    client = await raw_connect(relay.url, DOC_NAME)
    try:
        await client.sync()
        await client.edit_text("stored before the conflicting relay starts")
    finally:
        await client.close()


def test_replicas_conflict_exits_2(mesh: MeshProcesses) -> None:
    nats_server = mesh.start_nats()
    relay_a = mesh.start_relay("relay-a", [nats_server.url])
    asyncio.run(_write_one_update(relay_a))
    wait_quiet(relay_a)
    before = stream_info([nats_server.url])
    assert before.config.num_replicas == 1
    assert before.state.messages == 1

    relay_b = mesh.relay("relay-b", [nats_server.url], "--nats-replicas", "3")
    with pytest.raises(RuntimeError, match="during start-up"):
        relay_b.start()

    assert relay_b.proc is not None
    assert relay_b.proc.returncode == 2
    conflict = [line for line in relay_b.log_text().splitlines() if STREAM in line and "replicas" in line]
    assert len(conflict) == 1, f"expected one line naming {STREAM} and its replicas, got {conflict}"
    assert re.search(r"replicas\D*\b1\b\D*\b3\b", conflict[0]), conflict[0]

    after = stream_info([nats_server.url])
    assert after.config == before.config
    assert after.state.messages == before.state.messages
    assert after.state.last_seq == before.state.last_seq
    assert is_quiet(relay_a), "the relay that created the stream stopped being ready"


@pytest.mark.slow
async def test_outage_opened_room_syncs_promptly(mesh: MeshProcesses) -> None:
    nats_server = mesh.start_nats()
    relay = mesh.start_relay("relay-a", [nats_server.url])
    nats_server.stop()
    await asyncio.to_thread(poll_until, lambda: mesh_unavailable(relay), 5.0, lambda: f"/readyz: {readyz(relay)}")

    client = await raw_connect(relay.url, "opened during the outage")
    try:
        started = time.monotonic()
        await client.sync(timeout=15)
        elapsed = time.monotonic() - started
    finally:
        await client.close()
    assert elapsed < 1.0, f"a document opened while NATS is down answered the sync handshake after {elapsed:.1f} s"


@pytest.mark.slow
async def test_outage_opened_room_converges(mesh: MeshProcesses) -> None:
    nats_server = mesh.start_nats()
    relay_a = mesh.start_relay("relay-a", [nats_server.url])
    relay_b = mesh.start_relay("relay-b", [nats_server.url])
    nats_server.stop()
    for relay in (relay_a, relay_b):
        await asyncio.to_thread(poll_until, lambda: mesh_unavailable(relay), 5.0, lambda: f"/readyz: {readyz(relay)}")

    doc_name = "opened during the outage"
    on_a = await raw_connect(relay_a.url, doc_name)
    on_b = await raw_connect(relay_b.url, doc_name)
    try:
        await on_a.sync(timeout=15)
        await on_b.sync(timeout=15)
        await on_a.edit_text("[A during the outage]")
        await on_b.edit_text("[B during the outage]")

        nats_server.start()
        await asyncio.to_thread(wait_quiet, relay_a, relay_b)
        await on_a.edit_text("[A after the outage]")
        await on_b.edit_text("[B after the outage]")

        fragments = ["[A during the outage]", "[B during the outage]", "[A after the outage]", "[B after the outage]"]

        def both_complete() -> bool:
            return all(fragment in doc_text(client.doc) for client in (on_a, on_b) for fragment in fragments)

        await wait_until(
            both_complete,
            15.0,
            lambda: f"after NATS returned, relay A's client has {doc_text(on_a.doc)!r} "
                    f"and relay B's client has {doc_text(on_b.doc)!r}",
        )
        assert doc_text(on_a.doc) == doc_text(on_b.doc)
    finally:
        await on_a.close()
        await on_b.close()
