"""Validate and parse the model's reply: ``<think>...</think>`` then the summary."""

from __future__ import annotations

THINK_CLOSE = "</think>"


class OutputRejected(ValueError):
    """The reply cannot become a summary; ``code`` is a stable reason for metrics and events."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


def parse_summary(text: str, *, max_chars: int = 8000, finish_reason: str | None = None) -> str:
    """Return the summary of a reply, or raise :class:`OutputRejected`.

    The summary is the text after the last ``</think>``, stripped (as the reference code does),
    but a reply is accepted only when it has exactly one ``</think>``, a non-empty summary of at
    most ``max_chars`` characters, and did not stop on the token limit.
    """
    if finish_reason == "length":
        raise OutputRejected("truncated", "generation hit max_tokens before finishing")
    count = text.count(THINK_CLOSE)
    if count == 0:
        raise OutputRejected("no_think_close", "reply has no </think>; reasoning never ended")
    if count > 1:
        raise OutputRejected("multiple_think_close", f"reply has {count} </think> markers")
    summary = text.strip().split(THINK_CLOSE)[-1].strip()
    if not summary:
        raise OutputRejected("empty_summary", "nothing after </think>")
    if "<think>" in summary:
        raise OutputRejected("think_in_summary", "a <think> tag follows </think>")
    if len(summary) > max_chars:
        raise OutputRejected("summary_too_long", f"{len(summary)} chars > limit {max_chars}")
    return summary
