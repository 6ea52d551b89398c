"""Locations of test inputs that live outside the repository."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def traces_dir() -> Path:
    """Return the folder of recorded editing traces.

    ``YRELAY_TRACES_DIR`` overrides the default, which is
    ``shared/data/traces`` in the folder that contains the repository.
    """
    override = os.environ.get("YRELAY_TRACES_DIR")
    if override:
        return Path(override)
    return REPO_ROOT / ".." / "shared" / "data" / "traces"


def trace_file(relative: str) -> Path:
    """Return the path of one trace file, or end the test when it is missing.

    A developer without the traces gets a skip with the reason; in CI
    (``CI`` set), where the traces are always present, a missing file is a
    failure, so a broken path cannot pass silently.
    """
    import pytest

    path = traces_dir() / relative
    if path.is_file():
        return path
    message = f"editing trace not found at {path}; set YRELAY_TRACES_DIR to the traces folder"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)
