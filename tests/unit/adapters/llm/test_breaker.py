import pytest

from streamer.adapters.llm.breaker import BreakerState, CircuitBreaker

pytestmark = pytest.mark.unit


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make(failures=3, reset_s=10.0):
    clock = FakeClock()
    return CircuitBreaker(failures, reset_s, clock=clock), clock


def test_starts_closed_and_lets_requests_through():
    b, _ = make()
    assert b.state is BreakerState.CLOSED
    assert all(b.acquire() for _ in range(100))


def test_opens_after_n_consecutive_failures_only():
    b, _ = make(failures=3)
    b.record_failure()
    b.record_failure()
    b.record_success()  # resets the streak
    b.record_failure()
    b.record_failure()
    assert b.state is BreakerState.CLOSED and b.consecutive_failures == 2
    b.record_failure()
    assert b.state is BreakerState.OPEN and b.times_opened == 1
    assert not b.acquire() and not b.can_acquire()


def test_open_turns_half_open_after_reset_and_lets_exactly_one_trial():
    b, clock = make(failures=1, reset_s=10.0)
    b.record_failure()
    clock.advance(9.9)
    assert b.state is BreakerState.OPEN and b.retry_in() == pytest.approx(0.1)
    clock.advance(0.1)
    assert b.state is BreakerState.HALF_OPEN and b.retry_in() == 0.0
    assert b.can_acquire()
    assert b.acquire()  # the trial
    assert b.trial_in_flight
    assert not b.acquire() and not b.can_acquire()  # only one at a time


def test_trial_success_closes():
    b, clock = make(failures=2)
    b.record_failure()
    b.record_failure()
    clock.advance(10)
    assert b.acquire()
    b.record_success()
    assert b.state is BreakerState.CLOSED and b.consecutive_failures == 0
    b.record_failure()
    assert b.state is BreakerState.CLOSED  # a fresh streak is needed to open again


def test_trial_failure_reopens_for_a_full_reset_period():
    b, clock = make(failures=2, reset_s=10.0)
    b.record_failure()
    b.record_failure()
    clock.advance(15)
    assert b.acquire()
    b.record_failure()
    assert b.state is BreakerState.OPEN and b.times_opened == 2
    clock.advance(9)
    assert b.state is BreakerState.OPEN and not b.acquire()
    clock.advance(1)
    assert b.state is BreakerState.HALF_OPEN and b.acquire()


def test_results_while_open_are_ignored():
    b, clock = make(failures=1)
    b.record_failure()
    opened_at = clock.now
    clock.advance(5)
    b.record_success()  # a request sent before the breaker opened
    b.record_failure()
    assert b.state is BreakerState.OPEN
    assert b.retry_in() == pytest.approx(opened_at + 10 - clock.now)  # not extended


def test_cancelled_trial_lets_another_trial_go():
    b, clock = make(failures=1)
    b.record_failure()
    clock.advance(10)
    assert b.acquire() and not b.acquire()
    b.cancel_trial()
    assert b.state is BreakerState.HALF_OPEN and b.acquire()


def test_cancel_trial_is_a_no_op_when_closed():
    b, _ = make(failures=2)
    b.record_failure()
    b.cancel_trial()
    assert b.state is BreakerState.CLOSED and b.consecutive_failures == 1


def test_zero_reset_goes_straight_to_half_open():
    b, _ = make(failures=1, reset_s=0)
    b.record_failure()
    assert b.state is BreakerState.HALF_OPEN


def test_invalid_arguments():
    with pytest.raises(ValueError):
        CircuitBreaker(0, 1.0)
    with pytest.raises(ValueError):
        CircuitBreaker(1, -1.0)
