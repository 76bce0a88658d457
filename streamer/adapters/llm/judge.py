"""Judges (:class:`~streamer.ports.Judge`): the paper's judge through an OpenAI-compatible pool,
and the labelled CPU baseline judge.  Both answer :class:`~streamer.domain.judge.JudgeItem`
questions, for the live quality score and for ``streamer eval``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...domain.baseline_judge import BASELINE_JUDGE_NAME, baseline_p_a
from ...domain.judge import JudgeItem, Verdict, letter_p_a, parse_selection
from .engines import Sampling

JUDGE_SAMPLING = Sampling(temperature=0.6, top_p=0.95, top_k=20, min_p=0.0,
                          repetition_penalty=1.0, max_tokens=16)
"""The reference judge call (paper §6, §7.1): reference sampling, ``max_tokens`` 16."""
JUDGE_LOGPROBS = {"logprobs": True, "top_logprobs": 1}  # the generated tokens' own, as the reference




class PoolJudge:
    """The judge over a pool client (:class:`~.client.OpenAICompatSummaryModel`): non-thinking
    mode, ``max_tokens`` 16, logprobs for the probability of the correct letter.  Its calls go
    through the pool's routing, retries and breakers like the updates."""

    def __init__(self, pool: Any, *, extra_body: Mapping[str, Any] | None = None) -> None:
        self.pool = pool
        self.name = pool.model
        self.extra = {**(extra_body or {}), **JUDGE_LOGPROBS}

    async def judge(self, item: JudgeItem) -> Verdict:
        reply = await self.pool.chat(item.messages(), sampling=JUDGE_SAMPLING, extra=self.extra,
                                     thinking=False, sticky=False)  # keep the LRU for updates
        return Verdict(selection=parse_selection(reply.text),
                       p_a=letter_p_a(reply.top_logprobs or None),
                       prompt_tokens=reply.prompt_tokens,
                       completion_tokens=reply.completion_tokens)

    async def aclose(self) -> None:
        await self.pool.aclose()


class BaselineJudge:
    """The CPU baseline judge: term overlap between the summary and each item, NOT a language
    model (labelled so in every score it writes).  A tie (nothing in the summary about either
    item, e.g. the no-summary baseline) picks Item A: with the A/B order random, that is a
    coin flip."""

    name = BASELINE_JUDGE_NAME

    async def judge(self, item: JudgeItem) -> Verdict:
        a, b = (item.chosen, item.rejected) if item.chosen_is_a else (item.rejected, item.chosen)
        p_a = baseline_p_a(item.summary, a, b)
        return Verdict(selection="Item A" if p_a >= 0.5 else "Item B", p_a=p_a)

    async def aclose(self) -> None:
        return None
