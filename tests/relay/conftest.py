"""Shared fixtures for the relay tests: real ``yrelay serve`` processes on 127.0.0.1."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.relay_process import RelayProcess


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[Callable[..., RelayProcess]]:
    """Return a factory that starts a relay with its own data directory under ``tmp_path``.

    Call it as ``relay("--awareness-timeout", "2")``. Every relay it started is
    stopped with SIGTERM when the test ends, and killed if that takes over 30 s.
    """
    started: list[RelayProcess] = []

    def start(*extra_args: str) -> RelayProcess:
        data_dir = tmp_path / f"relay-{len(started)}" / "data"
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        process = RelayProcess(data_dir, list(extra_args))
        started.append(process)
        return process.start()

    yield start

    for process in started:
        process.stop(signal.SIGTERM)
