"""Start, stop and restart a real ``yrelay serve`` process for a test.

Tests talk to the relay over real sockets on 127.0.0.1. Each relay gets its
own free port and data directory, and its output goes to a log file that the
test can read (``RelayProcess.log_text``) to check log lines.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

STARTUP_TIMEOUT = 30.0


SERVER_ENV = "YRELAY_TEST_SERVER"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RelayProcess:
    """One ``yrelay serve`` child process bound to 127.0.0.1.

    ``extra_args`` are appended to the command line, for example
    ``["--unload-grace", "0.5"]``. The same data directory survives
    ``restart()``, so tests can check what was persisted.
    """

    def __init__(self, data_dir: Path, extra_args: list[str] | None = None, port: int | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.extra_args = list(extra_args or [])
        self.port = port or free_port()
        self.log_path = self.data_dir.parent / f"relay-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_file = None

    @property
    def url(self) -> str:
        """WebSocket base URL, without a trailing slash."""
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        """HTTP base URL, without a trailing slash."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> RelayProcess:
        """Start the process and wait until ``/healthz`` answers 200."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable, "-m", "relay", "serve",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--data-dir", str(self.data_dir),
            *self.extra_args,
        ]
        # YRELAY_TEST_SERVER=native runs the suite against the relay's own server.
        server = os.environ.get(SERVER_ENV)
        if server and "--server" not in self.extra_args:
            command += ["--server", server]
        self._log_file = open(self.log_path, "ab")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(command, stdout=self._log_file, stderr=subprocess.STDOUT, env=env)
        self._wait_healthy()
        return self

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"relay exited with {self.proc.returncode} during start-up:\n{self.log_text()}")
            try:
                with urllib.request.urlopen(f"{self.http_url}/healthz", timeout=1) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"relay did not become healthy in {STARTUP_TIMEOUT} s:\n{self.log_text()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send ``sig`` and wait for the process to exit; return its exit code."""
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
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return code

    def kill(self) -> int:
        """Stop the process with SIGKILL, as a crash would."""
        return self.stop(signal.SIGKILL)

    def restart(self, sig: int = signal.SIGTERM) -> RelayProcess:
        """Stop with ``sig`` and start again on the same port and data directory."""
        self.stop(sig)
        return self.start()

    def is_running(self) -> bool:
        """True while the child process has not exited."""
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        """Everything the process has written so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def rss_bytes(self) -> int:
        """Resident set size of the process, read from /proc."""
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("VmRSS not found")
