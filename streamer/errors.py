"""Exception tree: one root, and a flag saying whether retrying can help."""

from __future__ import annotations

from typing import ClassVar


class StreamerError(Exception):
    """Base class for errors raised by streamer."""

    retriable: ClassVar[bool] = False


class ConfigurationError(StreamerError):
    """Invalid settings or environment; fail fast at start-up."""


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


class VersionConflictError(StreamerError):
    """Another writer stored this version first; reload and try again."""

    retriable = True


class TransientError(StreamerError):
    """A dependency is slow or down: bounded retry, then stop consuming until it is back."""

    retriable = True


class StoreUnavailableError(TransientError):
    """The profile store cannot be reached or timed out."""


class ModelUnavailableError(TransientError):
    """The model pool timed out, is overloaded (429) or failing (5xx)."""


class OutputRejectedError(StreamerError):
    """The model never gave a usable summary for a window (after its in-call attempts).

    Not retriable by itself: the window is retried a bounded number of times, then parked."""

    def __init__(self, reasons: tuple[str, ...], attempts: int, model: str | None = None) -> None:
        super().__init__(f"model output rejected ({', '.join(reasons) or 'no reason'}) "
                         f"after {attempts} attempt(s)")
        self.reasons = reasons
        self.attempts = attempts
        self.model = model


class FencedError(StreamerError):
    """This worker no longer owns the user's partition: it must not store or publish."""


class StoreRegressedError(TransientError):
    """The store's latest version for a user is below one this worker already published
    (acknowledged writes were lost); writing now would reuse a published version number."""
