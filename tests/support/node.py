"""Run the Node.js scenario scripts in ``tests/interop`` from pytest.

The scripts drive real Yjs clients (``yjs`` with the ``y-websocket``
provider) against a server that the test started. Each script prints JSON
lines to stdout, and its last line is the result. Progress and diagnostics go
to stderr, which is shown in full when a script fails.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

import pytest

INTEROP_DIR = Path(__file__).resolve().parents[1] / "interop"
NPM_INSTALL_TIMEOUT = 600.0

_node_modules_ready = False


class ScenarioError(RuntimeError):
    """A scenario script failed, timed out or printed no JSON result."""


def node_executable() -> str:
    """Return the path of ``node``, or skip the test when it is not installed."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed: the interop tests need `node` (18 or later) and `npm` on PATH")
    return node


def _install_lock_path() -> Path:
    digest = hashlib.sha256(str(INTEROP_DIR).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"yrelay-interop-npm-{digest}.lock"


def _node_modules_fresh() -> bool:
    # npm writes node_modules/.package-lock.json at the end of every install.
    marker = INTEROP_DIR / "node_modules" / ".package-lock.json"
    lockfile = INTEROP_DIR / "package-lock.json"
    if not marker.is_file():
        return False
    if lockfile.is_file() and marker.stat().st_mtime < lockfile.stat().st_mtime:
        return False
    return True


def ensure_node_modules() -> None:
    """Install the npm packages of ``tests/interop`` once per test session.

    Runs ``npm ci`` (``npm install`` when there is no lockfile) if
    ``node_modules`` is missing or older than ``package-lock.json``. A file
    lock in the temporary folder keeps parallel test runs from installing at
    the same time.
    """
    global _node_modules_ready
    if _node_modules_ready:
        return
    node_executable()
    npm = shutil.which("npm")
    if npm is None:
        raise ScenarioError("`node` is installed but `npm` is not on PATH: install npm to run the interop tests")

    with open(_install_lock_path(), "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            if not _node_modules_fresh():
                _run_npm_install(npm)
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)
    _node_modules_ready = True


def _run_npm_install(npm: str) -> None:
    command = "ci" if (INTEROP_DIR / "package-lock.json").is_file() else "install"
    argv = [npm, command, "--no-audit", "--no-fund"]
    try:
        completed = subprocess.run(
            argv, cwd=INTEROP_DIR, capture_output=True, text=True, timeout=NPM_INSTALL_TIMEOUT,
        )
    except subprocess.TimeoutExpired as error:
        raise ScenarioError(
            f"`npm {command}` in {INTEROP_DIR} timed out after {NPM_INSTALL_TIMEOUT:.0f} s\n"
            f"{_format_output(error.stdout, error.stderr)}"
        ) from None
    if completed.returncode != 0:
        raise ScenarioError(
            f"`npm {command}` in {INTEROP_DIR} failed with exit code {completed.returncode}\n"
            f"{_format_output(completed.stdout, completed.stderr)}"
        )


def _as_text(output: str | bytes | None) -> str:
    if output is None:
        return ""
    if isinstance(output, bytes):
        return output.decode(errors="replace")
    return output


def _format_output(stdout: str | bytes | None, stderr: str | bytes | None) -> str:
    return f"--- stdout ---\n{_as_text(stdout)}\n--- stderr ---\n{_as_text(stderr)}"


def _parse_last_line(description: str, stdout: str, stderr: str) -> dict[str, Any]:
    lines = [line for line in stdout.splitlines() if line.strip()]
    if not lines:
        raise ScenarioError(f"{description} printed nothing to stdout\n{_format_output(stdout, stderr)}")
    try:
        result = json.loads(lines[-1])
    except json.JSONDecodeError as error:
        raise ScenarioError(
            f"{description}: last stdout line is not valid JSON ({error})\n{_format_output(stdout, stderr)}"
        ) from None
    if not isinstance(result, dict):
        raise ScenarioError(f"{description}: last stdout line is not a JSON object\n{_format_output(stdout, stderr)}")
    return result


def _describe(script: str, args: tuple[str, ...]) -> str:
    return " ".join(["node", script, *args])


def run_scenario(script: str, *args: object, timeout: float) -> dict[str, Any]:
    """Run ``node tests/interop/<script> <args>`` and return its JSON result.

    The result is the last non-empty stdout line, parsed as a JSON object.
    Raises ``ScenarioError`` with the whole stdout and stderr when the script
    exits non-zero, runs longer than ``timeout`` seconds (it is then killed)
    or prints no JSON object.
    """
    ensure_node_modules()
    node = node_executable()
    str_args = tuple(str(arg) for arg in args)
    description = _describe(script, str_args)
    started = time.monotonic()
    try:
        completed = subprocess.run(
            [node, str(INTEROP_DIR / script), *str_args],
            cwd=INTEROP_DIR, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as error:
        raise ScenarioError(
            f"{description} timed out after {timeout:.0f} s and was killed\n{_format_output(error.stdout, error.stderr)}"
        ) from None
    elapsed = time.monotonic() - started
    if completed.returncode != 0:
        raise ScenarioError(
            f"{description} exited with code {completed.returncode} after {elapsed:.1f} s\n"
            f"{_format_output(completed.stdout, completed.stderr)}"
        )
    return _parse_last_line(description, completed.stdout, completed.stderr)


class ScenarioProcess:
    """A scenario script running in the background while the test acts.

    Scripts announce steps with JSON lines such as ``{"event": "applied"}``
    that ``wait_for_event`` returns, and print their result as the last line,
    which ``finish`` returns. The script's stdin stays open while this object
    lives, and scripts that start children of their own end those children
    when stdin closes. Use it as a context manager so the process is killed
    if the test fails early.
    """

    def __init__(self, script: str, *args: object) -> None:
        self.script = script
        self.args = tuple(str(arg) for arg in args)
        self.description = _describe(script, self.args)
        self.proc: subprocess.Popen[str] | None = None
        self._stdout_lines: list[str] = []
        self._stderr_lines: list[str] = []
        self._events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._readers: list[threading.Thread] = []

    def start(self) -> ScenarioProcess:
        """Start the script and the threads that collect its output."""
        ensure_node_modules()
        node = node_executable()
        self.proc = subprocess.Popen(
            [node, str(INTEROP_DIR / self.script), *self.args],
            cwd=INTEROP_DIR, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._readers = [
            threading.Thread(target=self._read_stdout, args=(self.proc.stdout,), daemon=True),
            threading.Thread(target=self._read_stderr, args=(self.proc.stderr,), daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        return self

    def _read_stdout(self, stream: IO[str]) -> None:
        for line in stream:
            self._stdout_lines.append(line)
            try:
                message = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(message, dict) and "event" in message:
                self._events.put(message)
        self._events.put(None)

    def _read_stderr(self, stream: IO[str]) -> None:
        for line in stream:
            self._stderr_lines.append(line)

    def output(self) -> str:
        """Return everything the script printed so far, stdout then stderr."""
        return _format_output("".join(self._stdout_lines), "".join(self._stderr_lines))

    def wait_for_event(self, name: str, timeout: float) -> dict[str, Any]:
        """Return the next event line called ``name``; raise if the script exits or times out first."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ScenarioError(f"{self.description}: event {name!r} not seen within {timeout:.0f} s\n{self.output()}")
            try:
                message = self._events.get(timeout=remaining)
            except queue.Empty:
                continue
            if message is None:
                self._events.put(None)
                code = self.proc.wait(timeout=5) if self.proc is not None else None
                raise ScenarioError(
                    f"{self.description} exited with code {code} before event {name!r}\n{self.output()}"
                )
            if message.get("event") == name:
                return message

    def finish(self, timeout: float) -> dict[str, Any]:
        """Close stdin, wait for the script to exit and return its JSON result."""
        assert self.proc is not None, "start() was not called"
        self._close_stdin()
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise ScenarioError(f"{self.description} did not exit within {timeout:.0f} s and was killed\n{self.output()}") from None
        for reader in self._readers:
            reader.join(timeout=5)
        if code != 0:
            raise ScenarioError(f"{self.description} exited with code {code}\n{self.output()}")
        return _parse_last_line(self.description, "".join(self._stdout_lines), "".join(self._stderr_lines))

    def kill(self) -> None:
        """Kill the script if it is still running."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> ScenarioProcess:
        return self.start()

    def _close_stdin(self) -> None:
        if self.proc is None or self.proc.stdin is None or self.proc.stdin.closed:
            return
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass

    def __exit__(self, *exc_info: object) -> None:
        self.kill()
        self._close_stdin()
