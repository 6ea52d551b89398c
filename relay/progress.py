"""A one-line progress bar on a terminal, or a few plain lines elsewhere."""

from __future__ import annotations

import time
from typing import TextIO

_WIDTH = 30
_PLAIN_EVERY_SECONDS = 5.0


class Progress:
    """Counts finished items and redraws the bar at most ten times a second."""

    def __init__(self, label: str, total: int, out: TextIO) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self.out = out
        self.interactive = out.isatty()
        self._started = time.monotonic()
        self._drawn_at = 0.0
        self._drawn_done = -1

    def advance(self) -> None:
        """Record one finished item."""
        self.done += 1
        now = time.monotonic()
        interval = 0.1 if self.interactive else _PLAIN_EVERY_SECONDS
        if now - self._drawn_at >= interval:
            self._draw(now)

    def finish(self) -> None:
        """Draw the final state and end the line."""
        if self._drawn_done != self.done:
            self._draw(time.monotonic())
        if self.interactive:
            self.out.write("\n")
        self.out.flush()

    def _draw(self, now: float) -> None:
        self._drawn_at = now
        self._drawn_done = self.done
        fraction = self.done / self.total if self.total else 1.0
        elapsed = now - self._started
        if self.interactive:
            filled = int(fraction * _WIDTH)
            bar = "#" * filled + "-" * (_WIDTH - filled)
            self.out.write(f"\r{self.label} [{bar}] {self.done}/{self.total} documents, {elapsed:.1f} s")
        else:
            self.out.write(f"{self.label}: {self.done}/{self.total} documents, {elapsed:.1f} s\n")
        self.out.flush()
