"""Fixtures for the interop tests: a server for real Yjs clients to talk to.

By default each test starts ``yrelay serve`` through ``RelayProcess``. To
check the scenario scripts themselves against the reference implementation,
set ``YRELAY_INTEROP_REFERENCE_SERVER`` to the ``src/server.js`` of an
installed ``@y/websocket-server`` package. Tests that need persistence or
yrelay options are then skipped, because that server keeps documents in
memory only.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.node import ensure_node_modules, node_executable
from tests.support.relay_process import RelayProcess, free_port

REFERENCE_SERVER_ENV = "YRELAY_INTEROP_REFERENCE_SERVER"
STARTUP_TIMEOUT = 30.0
LOG_TAIL_LINES = 80

# y-protocols 1.0.7 (awareness.js, outdatedTimeout): a server built on its
# Awareness class drops remote states that were not renewed for 30 s.
REFERENCE_AWARENESS_TIMEOUT = 30.0



@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    item.stash.setdefault(_reports_key, {})[report.when] = report
    return report


_reports_key = pytest.StashKey[dict[str, pytest.TestReport]]()


class ReferenceServer:
    """``@y/websocket-server`` run with node on 127.0.0.1, for checking the scripts.

    It has the parts of the ``RelayProcess`` interface that the scenarios use.
    """

    def __init__(self, server_script: Path, log_path: Path) -> None:
        self.server_script = server_script
        self.log_path = log_path
        self.port = free_port()
        self.awareness_timeout = REFERENCE_AWARENESS_TIMEOUT
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """WebSocket base URL, without a trailing slash."""
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> ReferenceServer:
        """Start the server and wait until it accepts TCP connections."""
        env = dict(os.environ, HOST="127.0.0.1", PORT=str(self.port))
        with open(self.log_path, "ab") as log_file:
            self.proc = subprocess.Popen(
                [node_executable(), str(self.server_script)], stdout=log_file, stderr=subprocess.STDOUT, env=env,
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"reference server exited with {self.proc.returncode}:\n{self.log_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"reference server did not accept connections in {STARTUP_TIMEOUT} s:\n{self.log_text()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send ``sig``, wait for the process to exit and return its exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        return code

    def kill(self) -> int:
        """Stop the process with SIGKILL."""
        return self.stop(signal.SIGKILL)

    def restart(self, sig: int = signal.SIGTERM) -> ReferenceServer:
        """Stop with ``sig`` and start again on the same port."""
        self.stop(sig)
        return self.start()

    def log_text(self) -> str:
        """Return everything the server has written so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


Server = RelayProcess | ReferenceServer
StartServer = Callable[..., Server]


@pytest.fixture
def start_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StartServer]:
    """Return a function that starts a server for this test and stops it afterwards.

    ``start(awareness_timeout=None, needs_persistence=False)`` starts yrelay
    (with ``--awareness-timeout`` when given) and returns its ``RelayProcess``,
    which then has an ``awareness_timeout`` attribute in seconds. With the
    reference server selected, tests that pass ``needs_persistence=True`` are
    skipped.
    """
    ensure_node_modules()
    servers: list[Server] = []
    reference_script = os.environ.get(REFERENCE_SERVER_ENV)

    def start(*, awareness_timeout: float | None = None, needs_persistence: bool = False) -> Server:
        server: Server
        if reference_script:
            if needs_persistence:
                pytest.skip("needs yrelay: the reference server keeps documents in memory only")
            server = ReferenceServer(Path(reference_script), tmp_path / f"reference-{len(servers)}.log")
        else:
            extra_args = []
            if awareness_timeout is not None:
                extra_args += ["--awareness-timeout", str(awareness_timeout)]
            server = RelayProcess(tmp_path / f"data-{len(servers)}", extra_args)
            server.awareness_timeout = awareness_timeout if awareness_timeout is not None else 30.0
        servers.append(server)
        return server.start()

    yield start

    reports = request.node.stash.get(_reports_key, {})
    failed = any(report.failed for report in reports.values())
    for server in servers:
        server.stop()
        if failed:
            tail = "\n".join(server.log_text().splitlines()[-LOG_TAIL_LINES:])
            print(f"--- last {LOG_TAIL_LINES} log lines of the server at {server.url} ---\n{tail}")
