"""A per-endpoint circuit breaker (pure logic, injectable clock).

States:

- ``closed``: requests flow; ``failure_threshold`` consecutive transient failures open it.
- ``open``: no requests for ``reset_s`` seconds; results of requests still in flight are ignored.
- ``half_open``: after ``reset_s`` one trial request is let through; its success closes the
  breaker, its failure opens it again for another ``reset_s``.

The caller asks :meth:`CircuitBreaker.acquire` right before sending a request and reports the
outcome with :meth:`record_success` / :meth:`record_failure`, or :meth:`cancel_trial` when a
half-open trial ended without an outcome (cancelled), so that another trial may go.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Closed -> open after N consecutive failures; open -> half-open after ``reset_s``."""

    def __init__(
        self,
        failure_threshold: int,
        reset_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be >= 1")
        if reset_s < 0:
            raise ValueError("reset_s must be >= 0")
        self.failure_threshold = failure_threshold
        self.reset_s = reset_s
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_in_flight = False
        self.times_opened = 0
        """How many times the breaker went to ``open`` (metrics)."""

    # ---- observation

    @property
    def state(self) -> BreakerState:
        """The current state (``open`` turns ``half_open`` once ``reset_s`` has passed)."""
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self.reset_s:
            self._state = BreakerState.HALF_OPEN
            self._trial_in_flight = False
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    @property
    def trial_in_flight(self) -> bool:
        """Whether the one half-open trial request is out."""
        return self.state is BreakerState.HALF_OPEN and self._trial_in_flight

    def can_acquire(self) -> bool:
        """Whether :meth:`acquire` would let a request through now (no side effect)."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        return state is BreakerState.HALF_OPEN and not self._trial_in_flight

    def retry_in(self) -> float:
        """Seconds until an open breaker turns half-open (0 when not open)."""
        if self.state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self.reset_s - self._clock())

    # ---- transitions

    def acquire(self) -> bool:
        """Let a request through? In half-open, only one trial at a time is allowed."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and not self._trial_in_flight:
            self._trial_in_flight = True
            return True
        return False

    def record_success(self) -> None:
        state = self.state
        if state is BreakerState.OPEN:
            return  # a request sent before the breaker opened: ignored
        self._close()

    def record_failure(self) -> None:
        state = self.state
        if state is BreakerState.OPEN:
            return
        if state is BreakerState.HALF_OPEN:
            self._open()
            return
        self._failures += 1
        if self._failures >= self.failure_threshold:
            self._open()

    def cancel_trial(self) -> None:
        """The half-open trial ended without an outcome: let another trial go."""
        if self.state is BreakerState.HALF_OPEN:
            self._trial_in_flight = False

    def _open(self) -> None:
        self._state = BreakerState.OPEN
        self._opened_at = self._clock()
        self._trial_in_flight = False
        self.times_opened += 1

    def _close(self) -> None:
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._trial_in_flight = False

    def __repr__(self) -> str:
        return (f"CircuitBreaker(state={self.state.value}, failures={self._failures}/"
                f"{self.failure_threshold}, reset_s={self.reset_s})")
