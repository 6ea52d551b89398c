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
