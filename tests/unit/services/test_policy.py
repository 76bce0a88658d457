"""The one failure policy: the error tree's `retriable` flag decides retry or park."""

import pytest

from streamer.errors import (
    FencedError,
    ModelRequestError,
    ModelUnavailableError,
    OutputRejectedError,
    StoreUnavailableError,
    VersionConflictError,
)
from streamer.services.policy import Abandon, Park, Retry, RetryPolicy, error_type

pytestmark = pytest.mark.unit

P = RetryPolicy(base_s=1.0, max_s=10.0, park_after=3)


def test_backoff_is_exponential_and_capped():
    assert [P.backoff(a) for a in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


@pytest.mark.parametrize("exc", [StoreUnavailableError("x"), ModelUnavailableError("x"),
                                 VersionConflictError("x")])
def test_retriable_errors_are_retried_without_limit(exc):
    assert isinstance(P.decide(exc, 1000), Retry)


@pytest.mark.parametrize("exc", [ModelRequestError("400"), OutputRejectedError(("x",), 3),
                                 RuntimeError("bug"), KeyError("k")])
def test_everything_else_is_parked_after_bounded_attempts(exc):
    assert [type(P.decide(exc, a)) for a in (1, 2, 3)] == [Retry, Retry, Park]


def test_fenced_is_abandoned_and_error_types_are_stable():
    assert isinstance(P.decide(FencedError("moved"), 1), Abandon)
    assert P.decide(OutputRejectedError(("no_think_close",), 3), 3) == Park("output_rejected")
    assert error_type(ModelRequestError("x")) == "model_request"
    assert error_type(KeyError("k")) == "key"
