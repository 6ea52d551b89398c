"""CircuitBreaker with an injected clock."""

from __future__ import annotations

from persistence.circuit import CircuitBreaker


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_threshold_and_refuses() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("backend", failure_threshold=3, open_seconds=10, clock=clock)
    for _ in range(2):
        breaker.record_failure(OSError("down"))
        assert breaker.allow()
    breaker.record_failure(OSError("down"))
    assert not breaker.allow()
    assert breaker.refused == 1


def test_half_open_after_timeout_then_closes_on_success() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("backend", failure_threshold=1, open_seconds=10, clock=clock)
    breaker.record_failure(OSError("down"))
    clock.now = 9.9
    assert not breaker.allow()
    clock.now = 10.0
    assert breaker.allow()
    breaker.record_success()
    breaker.record_failure(OSError("again"))
    assert not breaker.allow(), "one failure after closing opens it again with threshold 1"


def test_failed_trial_reopens_for_full_period() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("backend", failure_threshold=2, open_seconds=5, clock=clock)
    breaker.record_failure(OSError("down"))
    breaker.record_failure(OSError("down"))
    clock.now = 5.0
    assert breaker.allow()
    breaker.record_failure(OSError("still down"))
    clock.now = 9.9
    assert not breaker.allow()
