"""The CPU baseline engine as a :class:`~streamer.ports.SummaryModel`.

It is NOT AlignXplore+: it turns chosen-vs-rejected statistics of genres, topics and words into
a readable preference profile, so the demo runs on a laptop.  Its replies have the model's
shape (``<think>...</think>`` then the summary) so they go through exactly the same parsing as
real model output.
"""

from __future__ import annotations

import time

from ...domain.baseline import BASELINE_MODEL_NAME, BaselineSummarizer
from ...ports import ModelReply, UpdateRequest


class BaselineSummaryModel:
    """Deterministic, in-process, clearly labelled baseline."""

    name = BASELINE_MODEL_NAME

    def __init__(self) -> None:
        self._summarizer = BaselineSummarizer()

    async def generate(self, request: UpdateRequest) -> ModelReply:
        started = time.perf_counter()
        summary = self._summarizer.summarize(request.previous_summary, request.triples)
        reasoning = (
            f"baseline (not a language model): genre, topic and word statistics over "
            f"{len(request.triples)} triples"
        )
        text = f"<think>\n{reasoning}\n</think>\n\n{summary}"
        return ModelReply(
            text=text,
            model=BASELINE_MODEL_NAME,
            finish_reason="stop",
            latency_ms=(time.perf_counter() - started) * 1000,
        )

    async def aclose(self) -> None:
        return None
