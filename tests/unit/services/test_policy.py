"""The one error policy: `decide` reads the error tree's `retriable` flag, per scope."""

import ast
from pathlib import Path

import pytest

from streamer.errors import (
    BrokerUnavailableError,
    ConfigurationError,
    FencedError,
    InvalidEventError,
    ModelRequestError,
    ModelUnavailableError,
    OutputRejectedError,
    PermanentError,
    PublishRejectedError,
    StoreRegressedError,
    StoreUnavailableError,
    StreamerError,
    TopicMismatchError,
    TransientError,
    VersionConflictError,
)
from streamer.services.policy import (
    Abandon,
    DeadLetter,
    Park,
    Raise,
    Retry,
    RetryPolicy,
    Scope,
    decide,
    error_type,
)

pytestmark = pytest.mark.unit

P = RetryPolicy(base_s=1.0, max_s=10.0, park_after=3)
TRANSIENT = [StoreUnavailableError("x"), ModelUnavailableError("x"), VersionConflictError("x"),
             BrokerUnavailableError("x"), StoreRegressedError("x")]
PERMANENT = [ModelRequestError("400"), OutputRejectedError(("x",), 3), PublishRejectedError("x")]


def window(exc, attempt):
    return decide(exc, scope=Scope.WINDOW, attempt=attempt, policy=P)


def test_backoff_is_exponential_and_capped():
    assert [P.backoff(a) for a in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_policy_defaults_are_the_settings_defaults():
    from streamer.settings import WindowSettings

    w = WindowSettings()
    assert RetryPolicy() == RetryPolicy.from_settings(w)


@pytest.mark.parametrize("exc", TRANSIENT)
def test_retriable_errors_are_retried_without_limit_in_every_scope(exc):
    assert window(exc, 1000) == Retry(10.0, transient=True)
    assert isinstance(decide(exc, scope=Scope.WRITE, attempt=50, policy=P), Retry)


@pytest.mark.parametrize("exc", [*PERMANENT, RuntimeError("bug"), KeyError("k"),
                                 InvalidEventError("validation_error", "stored event invalid")])
def test_other_window_failures_are_parked_after_bounded_attempts(exc):
    decisions = [window(exc, a) for a in (1, 2, 3)]
    assert [type(d) for d in decisions] == [Retry, Retry, Park]
    assert not decisions[0].transient  # the input is at fault, not a dependency


def test_invalid_records_are_dead_lettered_and_other_decode_errors_raise():
    assert decide(InvalidEventError("invalid_json", "x"), scope=Scope.RECORD) == \
        DeadLetter("invalid_json")
    assert decide(RecursionError(), scope=Scope.RECORD) == Raise()


def test_intake_writes_retry_unknown_errors_and_stop_on_permanent_ones():
    assert isinstance(decide(OSError("driver"), scope=Scope.WRITE, policy=P), Retry)
    assert decide(PublishRejectedError("too large"), scope=Scope.WRITE, policy=P) == Raise()


def test_configuration_errors_raise_except_inside_a_window():
    exc = TopicMismatchError(["topic t has 2 partitions, expected 8"])
    assert decide(exc, scope=Scope.WRITE) == Raise()
    assert decide(exc, scope=Scope.RECORD) == Raise()
    assert window(exc, 99) == Retry(10.0, transient=True)  # readiness fails; nobody is parked


def test_fenced_is_abandoned_and_error_types_are_stable():
    assert isinstance(window(FencedError("moved"), 1), Abandon)
    assert isinstance(decide(FencedError("moved"), scope=Scope.WRITE), Abandon)
    assert window(OutputRejectedError(("no_think_close",), 3), 3) == Park("output_rejected")
    assert error_type(ModelRequestError("x")) == "model_request"
    assert error_type(KeyError("k")) == "key"


def test_the_tree_matches_its_docstring():
    import streamer.errors as errors

    for cls in (ConfigurationError, PermanentError, FencedError, TransientError):
        assert cls.__bases__ == (StreamerError,)
    assert all(issubclass(type(e), TransientError) and e.retriable for e in TRANSIENT)
    assert not any(e.retriable for e in PERMANENT)
    drawn = errors.__doc__ or ""
    classes = [n for n, v in vars(errors).items()
               if isinstance(v, type) and issubclass(v, StreamerError)]
    assert all(name in drawn for name in classes), "draw every error class in the docstring"


def test_only_the_policy_reads_retriable():
    root = Path(__file__).resolve().parents[3] / "streamer"
    readers = []
    for path in root.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "retriable" \
                    and isinstance(node.ctx, ast.Load):
                readers.append(str(path.relative_to(root)))
    # the Kafka adapter translates aiokafka's own flag into the tree; only the policy reads ours
    assert sorted(set(readers)) == ["adapters/kafka/producer.py", "services/policy.py"], readers
