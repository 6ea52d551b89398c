"""Start a MongoDB-wire-compatible server on 127.0.0.1 for a test.

mongod is used where it is installed; otherwise FerretDB on its SQLite
backend, from ``.cache/bin/ferretdb`` (built by
scripts/install-test-servers.sh), ``YRELAY_FERRETDB`` or PATH. Tests skip
with the reason when neither exists.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from .relay_process import free_port
from .settings import REPO_ROOT

STARTUP_TIMEOUT = 30.0


def _ferretdb_binary() -> str | None:
    override = os.environ.get("YRELAY_FERRETDB")
    if override:
        return override
    built = REPO_ROOT / ".cache" / "bin" / "ferretdb"
    if built.exists():
        return str(built)
    return shutil.which("ferretdb")


class MongoServer:
    """One mongod or FerretDB process with its data in ``data_dir``."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.log_path = self.data_dir.parent / f"mongo-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.kind = ""

    @property
    def url(self) -> str:
        """Connection string for this server."""
        return f"mongodb://127.0.0.1:{self.port}/"

    def _command(self) -> list[str]:
        mongod = shutil.which("mongod")
        if mongod:
            self.kind = "mongod"
            return [mongod, "--bind_ip", "127.0.0.1", "--port", str(self.port), "--dbpath", str(self.data_dir)]
        ferretdb = _ferretdb_binary()
        if ferretdb is None:
            pytest.skip("no MongoDB-compatible server: install mongod, or run scripts/install-test-servers.sh")
        self.kind = "ferretdb"
        return [
            ferretdb,
            "--handler=sqlite",
            f"--sqlite-url=file:{self.data_dir}/",
            f"--listen-addr=127.0.0.1:{self.port}",
            "--telemetry=disable",
            f"--state-dir={self.data_dir}",
            "--log-level=warn",
            # The debug HTTP listener defaults to port 8088 for every instance.
            "--debug-addr=-",
        ]

    def start(self) -> MongoServer:
        """Start the server and wait until it accepts connections."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = self._command()
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited with {self.proc.returncode}:\n{self.log_path.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.kind} did not listen on {self.port} in {STARTUP_TIMEOUT} s")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the server and wait for it to exit."""
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
