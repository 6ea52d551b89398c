"""Fixtures for the mesh tests: a NATS JetStream node and relays joined to it.

``nats_server`` starts one nats-server with JetStream on 127.0.0.1 for the
test. ``mesh_relay`` is a factory that starts ``yrelay serve`` processes
joined to that node (or to the URLs a test passes), each with its own data
directory and relay id. Everything a fixture started is stopped when the
test ends, and the log tails of the relays and of NATS are printed when the
test failed.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.nats_server import NatsServer

from .helpers import MeshRelay

LOG_TAIL_LINES = 60

_reports_key = pytest.StashKey[dict[str, pytest.TestReport]]()
_relays_key = pytest.StashKey[list[MeshRelay]]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    item.stash.setdefault(_reports_key, {})[report.when] = report
    return report


def _test_failed(request: pytest.FixtureRequest) -> bool:
    reports = request.node.stash.get(_reports_key, {})
    return any(report.failed for report in reports.values())


def _started_relays(request: pytest.FixtureRequest) -> list[MeshRelay]:
    return request.node.stash.setdefault(_relays_key, [])


def _print_tail(title: str, text: str) -> None:
    tail = "\n".join(text.splitlines()[-LOG_TAIL_LINES:])
    print(f"--- last {LOG_TAIL_LINES} log lines of {title} ---\n{tail}")


StartRelay = Callable[..., MeshRelay]


@pytest.fixture
def nats_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NatsServer]:
    """One nats-server with JetStream for this test, stopped afterwards.

    Tests may ``stop()``, ``kill()`` and ``start()`` it again: it keeps its
    port and its store directory.
    """
    server = NatsServer(tmp_path / "nats" / "store").start()
    yield server
    # ``mesh_relay`` may have requested this fixture after its own set-up,
    # and then this teardown runs first. Relays stop before NATS, so their
    # logs do not fill with reconnect errors.
    for relay in _started_relays(request):
        relay.stop(signal.SIGTERM)
    server.stop()
    if _test_failed(request):
        _print_tail(f"nats-server {server.url}", server.log_text())


@pytest.fixture
def mesh_relay(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StartRelay]:
    """Return a factory that starts relays joined to the mesh.

    ``mesh_relay("ra", "--peer-timeout", "3", nats_urls=None, start=True)``
    returns a ``MeshRelay`` with relay id ``ra`` and its own data directory
    ``tmp_path/ra/data``. Without ``nats_urls`` the relay joins the
    ``nats_server`` fixture's node, which is then started for the test. With
    ``start=False`` the relay is only configured, so the test can start it
    later. Every relay is stopped with SIGTERM when the test ends.
    """
    relays = _started_relays(request)

    def make(relay_id: str, *extra_args: str, nats_urls: list[str] | None = None, start: bool = True) -> MeshRelay:
        if any(relay.relay_id == relay_id for relay in relays):
            raise ValueError(f"relay id {relay_id!r} is already used in this test")
        if nats_urls is None:
            nats_urls = [request.getfixturevalue("nats_server").url]
        data_dir = tmp_path / relay_id / "data"
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        relay = MeshRelay(data_dir, relay_id, nats_urls, list(extra_args))
        relays.append(relay)
        return relay.start() if start else relay

    yield make

    failed = _test_failed(request)
    for relay in relays:
        relay.stop(signal.SIGTERM)
        if failed:
            _print_tail(f"relay {relay.relay_id} at {relay.url}", relay.log_text())
