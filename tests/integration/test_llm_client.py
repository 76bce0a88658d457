"""The OpenAI-compatible pool client over real HTTP against stand-in servers."""

import itertools

import httpx
import pytest

from streamer.adapters.llm.client import OpenAICompatSummaryModel
from streamer.adapters.memory.publish import CollectingPublisher
from streamer.adapters.memory.store import InMemoryProfileStore
from streamer.devtools.standin.server import FaultConfig, StandinConfig, running_standin
from streamer.domain.prompt import build_update_prompt
from streamer.domain.triples import Triple
from streamer.errors import ModelRequestError, ModelUnavailableError
from streamer.ports import UpdateRequest
from streamer.services.updater import Outcome, ProfileUpdater, UpdatePolicy
from tests.factories import pairwise

_SEQ = itertools.count()


def request(n=2, previous=None):
    """A fresh prompt each call (an identical prompt sticks to the endpoint that served it)."""
    previous = previous if previous is not None else f"Liked film #{next(_SEQ)}."
    triples = tuple(
        Triple("Please recommend some movies to me.", f"Title: Star Voyage {i}, Genres: Sci-Fi",
               f"Title: Love Story {i}, Genres: Romance", f"e{i}")
        for i in range(n)
    )
    return UpdateRequest(build_update_prompt(previous, triples), previous, triples)


async def set_faults(base, **faults):
    async with httpx.AsyncClient() as c:
        (await c.post(f"{base}/admin/faults", json=FaultConfig(**faults).model_dump())).raise_for_status()


async def stats(base):
    async with httpx.AsyncClient() as c:
        return (await c.get(f"{base}/admin/stats")).json()


async def test_reply_has_model_shape_and_usage():
    async with running_standin(StandinConfig()) as base:
        model = OpenAICompatSummaryModel([f"{base}/v1"], model="VanillaH1/AlignXplore-Plus")
        try:
            reply = await model.generate(request())
        finally:
            await model.aclose()
    assert reply.text.count("</think>") == 1 and reply.text.split("</think>")[-1].strip()
    assert reply.prompt_tokens > 300 and reply.completion_tokens > 0
    assert reply.finish_reason == "stop" and reply.model == "VanillaH1/AlignXplore-Plus"


async def test_request_carries_reference_sampling_and_exact_messages():
    sent = request()
    async with running_standin(StandinConfig()) as base:
        model = OpenAICompatSummaryModel([f"{base}/v1"], model="VanillaH1/AlignXplore-Plus")
        await model.generate(sent)
        await model.aclose()
        async with httpx.AsyncClient() as c:
            body = (await c.get(f"{base}/admin/last")).json()["request"]
    assert body["temperature"] == 0.6 and body["top_p"] == 0.95 and body["top_k"] == 20
    assert body["min_p"] == 0.0 and body["repetition_penalty"] == 1.0  # vLLM's names
    assert body["max_tokens"] == 4096 and body["n"] == 1
    assert body["messages"] == sent.prompt.messages()
    assert body["chat_template_kwargs"] == {"enable_thinking": True}  # asked for, not assumed


async def test_failed_endpoint_is_retried_on_the_other_one():
    async with running_standin(StandinConfig(seed=1)) as bad, running_standin() as good:
        await set_faults(bad, error_rate=1.0, error_status=503)
        model = OpenAICompatSummaryModel([f"{bad}/v1", f"{good}/v1"], model="VanillaH1/AlignXplore-Plus",
                                         max_retries=2)
        try:
            for _ in range(4):
                reply = await model.generate(request())
                assert "</think>" in reply.text
        finally:
            await model.aclose()
        assert (await stats(good))["by_status"].get("200", 0) >= 4


async def test_all_endpoints_down_is_a_transient_error():
    async with running_standin() as base:
        await set_faults(base, error_rate=1.0, error_status=429)
        model = OpenAICompatSummaryModel([f"{base}/v1"], model="VanillaH1/AlignXplore-Plus",
                                         max_retries=1)
        with pytest.raises(ModelUnavailableError):
            await model.generate(request())
        await model.aclose()
    dead = OpenAICompatSummaryModel(["http://127.0.0.1:1/v1"], model="x", max_retries=0)
    # the request or the health probe that runs beside it finds the port closed first
    with pytest.raises(ModelUnavailableError, match="cannot reach|unhealthy"):
        await dead.generate(request())
    await dead.aclose()


async def test_unknown_model_takes_the_endpoint_out_of_use_with_what_to_change():
    async with running_standin() as base:
        model = OpenAICompatSummaryModel([f"{base}/v1"], model="no-such-model", max_retries=0)
        with pytest.raises(ModelUnavailableError, match="does not serve 'no-such-model'.*"
                                                        "STREAMER_MODEL__MODEL"):
            await model.generate(request())
        await model.aclose()
        async with httpx.AsyncClient() as c:
            stats = (await c.get(f"{base}/admin/stats")).json()
        assert stats["by_endpoint"].get("/v1/chat/completions", 0) == 0  # never sent


async def test_refused_request_is_a_permanent_error():
    async with running_standin(StandinConfig(reject_fields=["min_p"])) as base:
        model = OpenAICompatSummaryModel([f"{base}/v1"], model="VanillaH1/AlignXplore-Plus")
        with pytest.raises(ModelRequestError, match="min_p"):
            await model.generate(request())
        await model.aclose()


async def test_updater_retries_malformed_replies_then_stores_a_good_one():
    async with running_standin(StandinConfig()) as base:
        await set_faults(base, malformed_rate=1.0, malformed_kind="no_think_close")
        model = OpenAICompatSummaryModel([f"{base}/v1"], model="VanillaH1/AlignXplore-Plus")
        store, pub = InMemoryProfileStore(), CollectingPublisher()
        updater = ProfileUpdater(store, model, pub, UpdatePolicy(output_backoff_s=0))
        bad = await updater.apply("u1", [pairwise("e1", domain="movies")])
        assert bad.outcome is Outcome.REJECTED_OUTPUT and await store.history("u1") == []
        await set_faults(base)
        good = await updater.apply("u1", [pairwise("e1", domain="movies")])
        await model.aclose()
    assert good.outcome is Outcome.UPDATED and "</think>" not in good.record.summary
    assert pub.events[0].usage.prompt_tokens > 0


@pytest.mark.parametrize("parser", ["none", "reasoning_content", "reasoning", "both"])
async def test_updater_finds_the_summary_wherever_the_server_puts_the_thinking(parser):
    """Over real HTTP, the stand-in splitting the thinking out as vLLM's and llama.cpp's
    reasoning parsers do: the same kind of summary is stored in every case."""
    async with running_standin(StandinConfig(reasoning_parser=parser)) as base:
        model = OpenAICompatSummaryModel([f"{base}/v1"], model="VanillaH1/AlignXplore-Plus")
        store, pub = InMemoryProfileStore(), CollectingPublisher()
        updater = ProfileUpdater(store, model, pub, UpdatePolicy(output_backoff_s=0))
        result = await updater.apply("u1", [pairwise("e1", domain="movies")])
        async with httpx.AsyncClient() as client:
            last = (await client.get(f"{base}/admin/last")).json()
        await model.aclose()
    message = last["response"]["choices"][0]["message"]
    assert ("</think>" in (message["content"] or "")) == (parser == "none")
    assert result.outcome is Outcome.UPDATED, result.rejections
    assert result.record.summary and "</think>" not in result.record.summary
