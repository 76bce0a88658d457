"""Validate and parse the model's reply: ``<think>...</think>`` then the summary."""

from __future__ import annotations

from typing import Literal

THINK_CLOSE = "</think>"


class OutputRejected(ValueError):
    """The reply cannot become a summary; ``code`` is a stable reason for metrics and events."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


def parse_summary(
    text: str,
    *,
    max_chars: int = 8000,
    finish_reason: str | None = "stop",
    reasoning: str | None = None,
    thinking: Literal["required", "optional"] = "required",
) -> str:
    """Return the summary of a reply, or raise :class:`OutputRejected`.

    A reply is accepted only when generation stopped by itself (``finish_reason == "stop"``; a
    truncated or aborted reply never becomes a summary) and its summary is non-empty and at most
    ``max_chars`` characters.  Where the summary is depends on the server:

    * thinking inline (vLLM without a reasoning parser): ``text`` must hold exactly one
      ``</think>``, and the summary is what follows it, stripped (as the reference code does);
    * thinking split out (``reasoning``: vLLM's ``--reasoning-parser qwen3``, SGLang, llama.cpp):
      the summary is ``text`` itself, which must carry no think tag (one leading ``</think>``
      left by a parser is tolerated);
    * no thinking at all: rejected (``no_think_close``) unless ``thinking="optional"``
      (``STREAMER_MODEL__REASONING``, for a non-reasoning summarizer); then ``text`` is the
      summary.
    """
    if finish_reason == "length":
        raise OutputRejected("truncated", "generation hit max_tokens before finishing")
    if finish_reason != "stop":
        raise OutputRejected("not_stopped", f"generation ended with finish_reason={finish_reason!r}")
    count = text.count(THINK_CLOSE)
    if reasoning is not None and reasoning.strip():
        body = text.strip()
        if count == 1 and body.startswith(THINK_CLOSE):
            body = body[len(THINK_CLOSE):]
        elif count:
            raise OutputRejected("multiple_think_close",
                                 "a </think> in the content of a reply whose thinking was split out")
        return _checked(body.strip(), max_chars)
    if count == 0:
        if thinking == "optional" and "<think>" not in text:
            return _checked(text.strip(), max_chars)
        raise OutputRejected("no_think_close", "reply has no </think>; reasoning never ended")
    if count > 1:
        raise OutputRejected("multiple_think_close", f"reply has {count} </think> markers")
    return _checked(text.strip().split(THINK_CLOSE)[-1].strip(), max_chars)


def _checked(summary: str, max_chars: int) -> str:
    if not summary:
        raise OutputRejected("empty_summary", "nothing after </think>")
    if "<think>" in summary:
        raise OutputRejected("think_in_summary", "a <think> tag follows </think>")
    if len(summary) > max_chars:
        raise OutputRejected("summary_too_long", f"{len(summary)} chars > limit {max_chars}")
    return summary
