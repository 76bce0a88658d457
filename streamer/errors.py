"""The exception tree: one root, and a ``retriable`` flag read by exactly one function.

::

    StreamerError                          retriable=False
    ├── ConfigurationError                 invalid settings or environment: fail fast
    │   └── TopicMismatchError             an existing topic differs from the settings
    ├── PermanentError                     retrying the same thing gives the same answer
    │   ├── InvalidEventError              an input record: dead-lettered with its ``code``
    │   ├── ModelRequestError              the model server refused the request (4xx)
    │   ├── OutputRejectedError            no usable summary after the in-call attempts
    │   ├── PublishRejectedError           Kafka refused a record (too large, not authorized)
    │   ├── RollbackRefusedError           a rollback that cannot be done (with its ``code``)
    │   └── AsOfTooDeepError               an ``as_of`` read past its bound of versions
    ├── FencedError                        this worker lost the user's partition
    └── TransientError                     retriable=True: a dependency is slow or down
        ├── VersionConflictError           another writer stored this version first
        ├── StoreUnavailableError          Cassandra/SQLite unreachable or timing out
        │   └── StoreRegressedError        the store lost versions this worker published
        ├── ModelUnavailableError          the model pool timed out, 429, 5xx
        └── BrokerUnavailableError         Kafka unreachable or timing out

What happens to an error is decided in one place, :func:`streamer.services.policy.decide`:
retriable errors are retried with backoff (an outage is never the user's fault), invalid records
are dead-lettered, a window failing for any other reason is retried a bounded number of times
and then parked, and configuration errors are raised.  Adapters translate their libraries'
exceptions into this tree (``raise ... from exc``) and never decide themselves.
"""

from __future__ import annotations

from typing import ClassVar


class StreamerError(Exception):
    """Base class for errors raised by streamer."""

    retriable: ClassVar[bool] = False


class ConfigurationError(StreamerError):
    """Invalid settings or environment; fail fast at start-up."""


class TopicMismatchError(ConfigurationError):
    """An existing Kafka topic does not match the settings (e.g. its partition count)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class PermanentError(StreamerError):
    """Retrying will not help."""


class InvalidEventError(PermanentError):
    """An input record cannot be decoded or validated; it goes to the dead-letter topic.

    ``code`` is a stable machine-readable reason (``invalid_json``, ``validation_error``...).
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class ModelRequestError(PermanentError):
    """The model server refused the request itself (e.g. prompt longer than the context)."""


class OutputRejectedError(PermanentError):
    """The model never gave a usable summary for a window (after its in-call attempts).

    The window is retried a bounded number of times, then parked."""

    def __init__(self, reasons: tuple[str, ...], attempts: int, model: str | None = None) -> None:
        super().__init__(f"model output rejected ({', '.join(reasons) or 'no reason'}) "
                         f"after {attempts} attempt(s)")
        self.reasons = reasons
        self.attempts = attempts
        self.model = model


class PublishRejectedError(PermanentError):
    """Kafka refused a record for good (too large, unknown topic, not authorized)."""


class RollbackRefusedError(PermanentError):
    """A rollback was refused; ``code`` says why (``not_found``, ``version_conflict``...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class AsOfTooDeepError(PermanentError):
    """An ``as_of`` read would examine more of a user's versions than allowed
    (``STREAMER_API__AS_OF_MAX_VERSIONS``)."""


class FencedError(StreamerError):
    """This worker no longer owns the user's partition: it must not store or publish."""


class TransientError(StreamerError):
    """A dependency is slow or down: retried with backoff until it is back."""

    retriable = True


class VersionConflictError(TransientError):
    """Another writer stored this version first; reload and try again."""


class StoreUnavailableError(TransientError):
    """The profile store cannot be reached or timed out."""


class StoreRegressedError(StoreUnavailableError):
    """The store's latest version for a user is below one this worker already published
    (acknowledged writes were lost); writing now would reuse a published version number."""


class ModelUnavailableError(TransientError):
    """The model pool timed out, is overloaded (429) or failing (5xx)."""


class BrokerUnavailableError(TransientError):
    """Kafka cannot be reached or a request to it timed out."""
