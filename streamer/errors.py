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
