"""The one failure policy: what to do with a window whose update raised (pure, no I/O).

The error tree's ``retriable`` flag decides:

* retriable errors (a dependency down or slow, a version conflict) are retried with exponential
  backoff and no attempt limit: the user is not at fault, and readiness reports the outage;
* anything else (the model's output rejected, a 4xx refusal, an unexpected exception) is retried
  with exponential backoff at most ``park_after`` times in total, then the window is parked, so
  one poison user can never stall its partition.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import FencedError, StreamerError


@dataclass(frozen=True, slots=True)
class Retry:
    delay_s: float


@dataclass(frozen=True, slots=True)
class Park:
    reason: str


@dataclass(frozen=True, slots=True)
class Abandon:
    """Not ours any more (the partition moved): forget the window, its new owner applies it."""


Decision = Retry | Park | Abandon


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    base_s: float = 2.0
    max_s: float = 300.0
    park_after: int = 5

    def backoff(self, attempt: int) -> float:
        """Delay after failed attempt number ``attempt`` (1-based): base * 2^(attempt-1), capped."""
        return min(self.max_s, self.base_s * 2 ** max(0, attempt - 1))

    def decide(self, error: BaseException, attempt: int) -> Decision:
        if isinstance(error, FencedError):
            return Abandon()
        retriable = isinstance(error, StreamerError) and error.retriable
        if retriable or attempt < self.park_after:
            return Retry(self.backoff(attempt))
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
