"""The in-process vLLM adapter's own logic, with a stand-in `vllm` module (no GPU here)."""

import asyncio
import sys
import types
from types import SimpleNamespace

import pytest

from streamer.domain.prompt import build_update_prompt
from streamer.domain.triples import Triple
from streamer.ports import UpdateRequest


class FakeLLM:
    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.calls = []

    def chat(self, conversations, params, use_tqdm=False):
        self.calls.append((conversations, params))
        return [
            SimpleNamespace(
                prompt_token_ids=[0] * 7,
                outputs=[SimpleNamespace(text=f"<think>x</think>\n\nS{i}", token_ids=[1, 2],
                                         finish_reason="stop")],
            )
            for i, _ in enumerate(conversations)
        ]


@pytest.fixture
def fake_vllm(monkeypatch):
    mod = types.ModuleType("vllm")
    mod.LLM = FakeLLM
    mod.SamplingParams = lambda **kw: SimpleNamespace(**kw)
    monkeypatch.setitem(sys.modules, "vllm", mod)
    return mod


def req(i):
    t = (Triple("q", f"c{i}", "r", f"e{i}"),)
    return UpdateRequest(build_update_prompt(None, t), None, t)


async def test_reference_settings_and_micro_batching(fake_vllm):
    from streamer.adapters.llm.vllm_engine import VllmEngineSummaryModel

    model = VllmEngineSummaryModel(max_batch=4, batch_wait_s=0.01)
    assert model._llm.kwargs == {"model": "VanillaH1/AlignXplore-Plus", "max_model_len": 16384,
                                 "tensor_parallel_size": 1, "enable_prefix_caching": True}
    params = model._params
    assert (params.temperature, params.top_p, params.top_k, params.max_tokens, params.n) == (
        0.6, 0.95, 20, 4096, 1)
    replies = await asyncio.gather(*(model.generate(req(i)) for i in range(10)))
    assert [r.text.split("\n\n")[-1] for r in replies][:4] == ["S0", "S1", "S2", "S3"]
    assert sum(model.batches) == 10 and max(model.batches) <= 4 and len(model.batches) <= 4
    conversations, _ = model._llm.calls[0]
    assert conversations[0] == req(0).prompt.messages()  # the exact trained messages
    assert replies[0].prompt_tokens == 7 and replies[0].completion_tokens == 2
    await model.aclose()


@pytest.mark.gpu
async def test_real_engine_on_gpu_produces_a_parsable_summary():
    """Run with `pytest --run-gpu` on a GPU machine with `pip install -e '.[gpu]'`."""
    from streamer.adapters.llm.vllm_engine import VllmEngineSummaryModel
    from streamer.domain.output import parse_summary

    model = VllmEngineSummaryModel()
    reply = await model.generate(req(0))
    assert parse_summary(reply.text, finish_reason=reply.finish_reason)
