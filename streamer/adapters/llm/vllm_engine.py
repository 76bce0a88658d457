"""In-process vLLM engine for offline backfill (needs a GPU and the ``gpu`` extra).

Requests are gathered into micro-batches and run through one ``LLM.chat`` call in a worker
thread, so a backfill keeps the GPU busy with continuous batching instead of one prompt at a
time.  Sampling and context follow the AlignXplore+ reference (temperature 0.6, top_p 0.95,
top_k 20, max_tokens 4096, max_model_len 16384, thinking on).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from ...errors import ConfigurationError
from ...ports import ModelReply, UpdateRequest

log = logging.getLogger(__name__)


@dataclass
class _Pending:
    request: UpdateRequest
    future: asyncio.Future[ModelReply]


class VllmEngineSummaryModel:
    """A :class:`~streamer.ports.SummaryModel` backed by ``vllm.LLM`` in this process."""

    def __init__(
        self,
        model: str = "VanillaH1/AlignXplore-Plus",
        *,
        max_model_len: int = 16384,
        tensor_parallel_size: int = 1,
        temperature: float = 0.6,
        top_p: float = 0.95,
        top_k: int = 20,
        max_tokens: int = 4096,
        max_batch: int = 256,
        batch_wait_s: float = 0.05,
        llm: Any = None,
    ) -> None:
        try:
            import vllm
        except ImportError as exc:  # pragma: no cover - depends on the gpu extra
            raise ConfigurationError(
                "the in-process engine needs the gpu extra: pip install 'prefstream[gpu]'"
            ) from exc
        self.name = model
        self._llm = llm or vllm.LLM(
            model=model,
            max_model_len=max_model_len,
            tensor_parallel_size=tensor_parallel_size,
            enable_prefix_caching=True,
        )
        self._params = vllm.SamplingParams(
            n=1, temperature=temperature, top_p=top_p, top_k=top_k, max_tokens=max_tokens
        )
        self.max_batch = max_batch
        self.batch_wait_s = batch_wait_s
        self._queue: list[_Pending] = []
        self._flusher: asyncio.Task[None] | None = None
        self.batches: list[int] = []  # sizes, for progress reporting and tests

    async def generate(self, request: UpdateRequest) -> ModelReply:
        loop = asyncio.get_running_loop()
        pending = _Pending(request, loop.create_future())
        self._queue.append(pending)
        if len(self._queue) >= self.max_batch:
            await self._flush()
        elif self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_later())
        return await pending.future

    async def _flush_later(self) -> None:
        await asyncio.sleep(self.batch_wait_s)
        await self._flush()

    async def _flush(self) -> None:
        batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
        if not batch:
            return
        self.batches.append(len(batch))
        conversations = [p.request.prompt.messages() for p in batch]
        started = time.perf_counter()
        try:
            outputs = await asyncio.to_thread(
                self._llm.chat, conversations, self._params, use_tqdm=False
            )
        except Exception as exc:
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        latency_ms = (time.perf_counter() - started) * 1000
        for p, out in zip(batch, outputs, strict=True):
            completion = out.outputs[0]
            p.future.set_result(
                ModelReply(
                    text=completion.text,
                    model=self.name,
                    prompt_tokens=len(out.prompt_token_ids or ()),
                    completion_tokens=len(completion.token_ids or ()),
                    finish_reason=completion.finish_reason,
                    latency_ms=latency_ms,
                )
            )

    async def aclose(self) -> None:
        await self._flush()
