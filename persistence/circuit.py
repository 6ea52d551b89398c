"""A circuit breaker: stop calling a backend that keeps failing, for a while.

After ``failure_threshold`` failures in a row the breaker opens, and for
``open_seconds`` every call is refused at once instead of waiting for the
backend's timeout. Then one trial call is let through (half-open): success
closes the breaker, failure opens it again. The clock is injected so tests
need not sleep.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

LOGGER = logging.getLogger("yrelay.persistence.circuit")


class CircuitBreaker:
    """Failure counting and the open/half-open/closed state of one backend."""

    def __init__(
        self,
        name: str,
        failure_threshold: int = 3,
        open_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.failure_threshold = failure_threshold
        self.open_seconds = open_seconds
        self.clock = clock
        self.failures = 0
        self.refused = 0
        self._consecutive = 0
        self._opened_at: float | None = None

    @property
    def is_open(self) -> bool:
        """True while calls are refused."""
        return self._opened_at is not None and self.clock() - self._opened_at < self.open_seconds

    def allow(self) -> bool:
        """Return whether a call may go to the backend now, counting refusals."""
        if self.is_open:
            self.refused += 1
            return False
        return True

    def record_success(self) -> None:
        """Note a successful call; closes the breaker."""
        if self._opened_at is not None:
            LOGGER.info("%s answers again; circuit closed", self.name)
        self._consecutive = 0
        self._opened_at = None

    def record_failure(self, error: BaseException) -> None:
        """Note a failed call; opens the breaker after too many in a row."""
        self.failures += 1
        self._consecutive += 1
        if self._consecutive >= self.failure_threshold:
            if self._opened_at is None:
                LOGGER.warning(
                    "%s failed %d times in a row (%r); not calling it for %.0f s",
                    self.name, self._consecutive, error, self.open_seconds,
                )
            self._opened_at = self.clock()
