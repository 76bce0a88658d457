"""The one error policy: what to do when something raised (pure, no I/O).

:func:`decide` is the only reader of the error tree's ``retriable`` flag
(:mod:`streamer.errors`).  It answers for three scopes:

========  ==========================================  =======================================
scope     what failed                                 decisions
========  ==========================================  =======================================
RECORD    decoding and validating one input record    invalid record: **dead-letter**; any
                                                      other error: **raise** (a bug)
WRITE     intake's pending-buffer or dead-letter      retriable or unknown: **retry** (intake
          write (the batch is not committed yet)      pauses; skipping would lose a record);
                                                      permanent: **raise** (the worker stops,
                                                      input is re-read on restart)
WINDOW    one update of a user's window               retriable or a configuration error:
                                                      **retry** without limit, reported as a
                                                      failing dependency (readiness fails; an
                                                      outage is not the user's fault); other:
                                                      **retry** up to ``park_after`` attempts,
                                                      then **park**
========  ==========================================  =======================================

In the RECORD and WRITE scopes a :class:`~streamer.errors.ConfigurationError` is **raised**; in
every scope a :class:`~streamer.errors.FencedError` (the partition moved) **abandons** the work:
its new owner does it.  Backoff is exponential: ``base_s * 2^(attempt-1)``, capped at ``max_s``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ..errors import ConfigurationError, FencedError, InvalidEventError, StreamerError
from ..settings import WindowSettings, default_of


class Scope(enum.Enum):
    RECORD = "record"
    WRITE = "write"
    WINDOW = "window"


@dataclass(frozen=True, slots=True)
class Retry:
    delay_s: float
    transient: bool = True  # a dependency is failing (readiness reports it), not the input


@dataclass(frozen=True, slots=True)
class Park:
    reason: str


@dataclass(frozen=True, slots=True)
class DeadLetter:
    code: str


@dataclass(frozen=True, slots=True)
class Raise:
    """Stop: a configuration error or a bug; the caller re-raises the error."""


@dataclass(frozen=True, slots=True)
class Abandon:
    """Not ours any more (the partition moved): forget the work, its new owner does it."""


Decision = Retry | Park | DeadLetter | Raise | Abandon


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Backoff and the park threshold (``STREAMER_WINDOW__RETRY_BACKOFF_S`` and friends)."""

    base_s: float = default_of(WindowSettings, "retry_backoff_s")
    max_s: float = default_of(WindowSettings, "retry_backoff_max_s")
    park_after: int = default_of(WindowSettings, "park_after_attempts")

    @classmethod
    def from_settings(cls, window: WindowSettings) -> RetryPolicy:
        return cls(base_s=window.retry_backoff_s, max_s=window.retry_backoff_max_s,
                   park_after=window.park_after_attempts)

    def backoff(self, attempt: int) -> float:
        """Delay after failed attempt number ``attempt`` (1-based): base * 2^(attempt-1), capped."""
        return min(self.max_s, self.base_s * 2 ** max(0, attempt - 1))


def decide(error: BaseException, *, scope: Scope, attempt: int = 1,
           policy: RetryPolicy = RetryPolicy()) -> Decision:
    """What to do after ``error`` on failed attempt number ``attempt`` (see the module table)."""
    if isinstance(error, FencedError):
        return Abandon()
    if isinstance(error, ConfigurationError):
        # a window cannot stop the worker from a background task: it fails readiness instead
        return Retry(policy.backoff(attempt), transient=True) if scope is Scope.WINDOW else Raise()
    if scope is Scope.RECORD:
        return DeadLetter(error.code) if isinstance(error, InvalidEventError) else Raise()
    known = isinstance(error, StreamerError)
    if known and error.retriable:  # type: ignore[union-attr]
        return Retry(policy.backoff(attempt), transient=True)
    if scope is Scope.WRITE:
        # an unknown exception may be a driver's transient error we do not map: retry (and
        # report), never skip; a known permanent one will not heal: stop
        return Raise() if known else Retry(policy.backoff(attempt), transient=True)
    if attempt < policy.park_after:
        return Retry(policy.backoff(attempt), transient=False)
    return Park(error_type(error))


def error_type(error: BaseException) -> str:
    """Stable snake_case name of an error class, e.g. ``OutputRejectedError`` -> ``output_rejected``."""
    name = type(error).__name__.removesuffix("Error") or type(error).__name__
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i:
            out.append("_")
        out.append(ch.lower())
    return "".join(out)
