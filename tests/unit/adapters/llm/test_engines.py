"""Engine dialects: identification from /v1/models, sampling field names, token counting per
engine, the self-check, load-aware routing, prompt stickiness and user affinity.

Pure functions of :mod:`streamer.adapters.llm.engines` directly; the client over
``httpx.MockTransport`` that answers like each engine (the recorded bodies of real servers are in
``test_recorded_replies.py``).
"""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from streamer.adapters.llm.client import OpenAICompatSummaryModel
from streamer.adapters.llm.engines import (
    Sampling,
    ServerLoad,
    detect_engine,
    model_problems,
    parse_load,
    parse_prometheus,
    served_context,
    served_models,
    slots_load,
    token_count,
)
from streamer.domain.prompt import build_update_prompt
from streamer.domain.triples import Triple
from streamer.ports import UpdateRequest

pytestmark = pytest.mark.unit

MODEL = "org/model"
A = "http://a:8000/v1"
B = "http://b:8000/v1"
C = "http://c:8000/v1"
REPLY = "<think>\nthinks\n</think>\n\nLikes trails."


def card(engine: str, *, name: str = MODEL, context: int = 32768) -> dict[str, object]:
    if engine == "llamacpp":
        return {"object": "list", "models": [{"name": name}],
                "data": [{"id": f"/models/{name}.gguf", "aliases": [name], "object": "model",
                          "owned_by": "llamacpp", "meta": {"n_ctx": context, "n_ctx_train": 8192}}]}
    return {"object": "list", "data": [{"id": name, "object": "model", "owned_by": engine,
                                        "root": name, "max_model_len": context}]}


def request(previous: str = "prev", user: str | None = None) -> UpdateRequest:
    triples = (Triple("q", "chosen", "rejected", "e1"),)
    return UpdateRequest(build_update_prompt(previous, triples), previous, triples, user_id=user)


def chat_ok(_: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"model": MODEL, "choices": [
        {"index": 0, "message": {"role": "assistant", "content": REPLY}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5}})


class Server:
    """One fake engine per host: answers /v1/models, /metrics, /slots, /tokenize, chat."""

    def __init__(self, engines: dict[str, str], *, context: int = 32768,
                 name: str = MODEL) -> None:
        self.engines = engines
        self.context = context
        self.name = name
        self.queue: dict[str, float] = {}
        self.requests: list[httpx.Request] = []
        self.chat: Callable[[httpx.Request], httpx.Response] = chat_ok

    def __call__(self, req: httpx.Request) -> httpx.Response:
        self.requests.append(req)
        engine = self.engines[req.url.host]
        path = req.url.path
        if path == "/v1/models":
            return httpx.Response(200, json=card(engine, name=self.name, context=self.context))
        if path == "/metrics":
            q = self.queue.get(req.url.host, 0.0)
            text = {"vllm": f'vllm:num_requests_running{{model_name="m"}} {q}\n'
                            f'vllm:num_requests_waiting{{model_name="m"}} 0\n'
                            f'vllm:kv_cache_usage_perc{{model_name="m"}} 0.1\n',
                    "sglang": f"sglang:num_running_reqs {q}\nsglang:num_queue_reqs 0\n",
                    "llamacpp": f"llamacpp:requests_processing {q}\n"
                                f"llamacpp:requests_deferred 0\n"}.get(engine)
            return httpx.Response(200, text=text) if text else httpx.Response(404)
        if path == "/tokenize":
            body = json.loads(req.content)
            if engine == "llamacpp":
                return httpx.Response(200, json={"tokens": list(range(len(body.get("content", ""))))}
                                      if "content" in body else {"tokens": []})
            if engine == "sglang" and "messages" in body:
                return httpx.Response(400, json={"error": "prompt required"})
            return httpx.Response(200, json={"count": 42, "max_model_len": self.context})
        if path == "/apply-template":
            if engine != "llamacpp":
                return httpx.Response(404)
            return httpx.Response(200, json={"prompt": "<|im_start|>user\nping<|im_end|>\n"})
        if path == "/v1/chat/completions":
            return self.chat(req)
        return httpx.Response(404)

    def chats(self) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.path == "/v1/chat/completions"]

    def paths(self, host: str) -> list[str]:
        return [r.url.path for r in self.requests if r.url.host == host]


@pytest.fixture
async def pool():
    made: list[OpenAICompatSummaryModel] = []

    def factory(server: Server, urls=(A,), **kw) -> OpenAICompatSummaryModel:
        kw.setdefault("health_interval_s", None)
        kw.setdefault("backoff_base_s", 0.0)
        kw.setdefault("backoff_max_s", 0.0)
        kw.setdefault("routing", "outstanding")
        model = OpenAICompatSummaryModel(list(urls), model=MODEL,
                                         transport=httpx.MockTransport(server), **kw)
        made.append(model)
        return model

    yield factory
    for model in made:
        await model.aclose()


# --------------------------------------------------------------------------- pure functions


@pytest.mark.parametrize("engine", ["vllm", "sglang", "llamacpp"])
def test_engine_is_read_from_owned_by(engine):
    assert detect_engine(card(engine)) == engine


def test_unknown_or_broken_models_answer_is_generic_openai():
    assert detect_engine({"data": [{"id": "x", "owned_by": "openai"}]}) == "openai"
    assert detect_engine({"data": "nope"}) == "openai"
    assert detect_engine({}) == "openai"


def test_llamacpp_aliases_are_served_names_and_its_context_is_the_slot_context():
    body = card("llamacpp", context=4096)
    assert served_models(body) == [f"/models/{MODEL}.gguf", MODEL]
    assert served_context(body, MODEL) == 4096
    assert served_context(card("vllm", context=8192), MODEL) == 8192
    assert served_context(card("vllm"), "other") is None


def test_model_problems_say_what_to_change():
    [wrong] = model_problems(card("vllm", name="other"), model=MODEL, context_tokens=16384,
                             base_url=A)
    assert "does not serve 'org/model'" in wrong and "other" in wrong
    assert "STREAMER_MODEL__MODEL" in wrong and "--served-model-name" in wrong
    [small] = model_problems(card("vllm", context=8192), model=MODEL, context_tokens=16384,
                             base_url=A)
    assert "8192" in small and "STREAMER_MODEL__CONTEXT_TOKENS=8192" in small
    assert "--max-model-len 16384" in small
    assert model_problems(card("vllm"), model=MODEL, context_tokens=16384, base_url=A) == []


def test_sampling_field_names_per_engine():
    s = Sampling()
    assert s.fields("vllm") == {"temperature": 0.6, "top_p": 0.95, "top_k": 20, "min_p": 0.0,
                                "repetition_penalty": 1.0, "max_tokens": 4096}
    assert s.fields("sglang") == s.fields("vllm") == s.fields("openai")
    llama = s.fields("llamacpp")
    assert llama["repeat_penalty"] == 1.0 and "repetition_penalty" not in llama
    assert llama["min_p"] == 0.0  # llama.cpp's own default would be 0.05


@pytest.mark.parametrize(("body", "count"), [
    ({"count": 7, "tokens": [1]}, 7), ({"tokens": [1, 2, 3]}, 3), ({"count": 0}, 0),
    ({"tokens": []}, None), ({"count": -1}, None), ({"count": True}, None), ([1, 2], None),
])
def test_token_count_reads_count_or_tokens(body, count):
    assert token_count(body) == count


def test_prometheus_parsing_sums_labels_and_skips_comments():
    text = ('# HELP vllm:num_requests_waiting x\n# TYPE vllm:num_requests_waiting gauge\n'
            'vllm:num_requests_waiting{model_name="a"} 2.0\n'
            'vllm:num_requests_waiting{model_name="b"} 3\n'
            'vllm:num_requests_running{model_name="a",engine="0"} 4\n'
            'vllm:kv_cache_usage_perc{model_name="a"} 0.5\nbad line\nx NaN\n')
    assert parse_prometheus(text)["vllm:num_requests_waiting"] == 5.0
    assert parse_load("vllm", text) == ServerLoad(running=4.0, waiting=5.0, kv_usage=0.5)
    assert parse_load("vllm", "other_metric 1\n") is None
    assert parse_load("openai", text) is None


def test_old_vllm_gpu_cache_gauge_and_llamacpp_metrics_and_slots():
    old = "vllm:num_requests_running 1\nvllm:gpu_cache_usage_perc 0.25\n"
    assert parse_load("vllm", old) == ServerLoad(1.0, 0.0, 0.25)
    llama = "llamacpp:requests_processing 2\nllamacpp:requests_deferred 3\n"
    assert parse_load("llamacpp", llama) == ServerLoad(2.0, 3.0, None)
    slots = [{"id": 0, "is_processing": True}, {"id": 1, "is_processing": False}]
    assert slots_load(slots) == ServerLoad(1.0, 0.0, 0.5)
    assert slots_load({"error": "disabled"}) is None


# --------------------------------------------------------------------------- identification


@pytest.mark.parametrize(("engine", "field"), [
    ("vllm", "repetition_penalty"), ("sglang", "repetition_penalty"),
    ("llamacpp", "repeat_penalty")])
async def test_first_request_identifies_the_engine_and_uses_its_field_names(pool, engine, field):
    server = Server({"a": engine})
    model = pool(server)
    assert (await model.generate(request())).text == REPLY
    assert server.paths("a") == ["/v1/models", "/v1/chat/completions"]
    body = json.loads(server.chats()[0].content)
    assert body[field] == 1.0 and body["min_p"] == 0.0 and body["top_k"] == 20
    await model.generate(request("other"))
    assert server.paths("a").count("/v1/models") == 1  # identified once
    assert model.endpoints[0].engine == engine


async def test_fixed_dialect_skips_identification(pool):
    server = Server({"a": "vllm"})
    model = pool(server, dialect="llamacpp")
    await model.generate(request())
    assert server.paths("a") == ["/v1/chat/completions"]
    assert "repeat_penalty" in json.loads(server.chats()[0].content)


async def test_endpoint_serving_another_model_is_not_used(pool, caplog):
    server = Server({"a": "vllm", "b": "vllm"})
    bad = Server({"a": "vllm"}, name="someone/else")

    def handler(req: httpx.Request) -> httpx.Response:
        return bad(req) if req.url.host == "a" else server(req)

    model = OpenAICompatSummaryModel([A, B], model=MODEL, transport=httpx.MockTransport(handler),
                                     health_interval_s=None, backoff_base_s=0.0,
                                     backoff_max_s=0.0, routing="outstanding")
    try:
        for i in range(4):
            assert (await model.generate(request(f"p{i}"))).text == REPLY
        assert not bad.chats() and len(server.chats()) == 4
        [a] = [e for e in model.endpoints if e.base_url == A]
        assert a.problem is not None and "someone/else" in a.problem
        assert "does not serve" in caplog.text
    finally:
        await model.aclose()


async def test_unreachable_models_route_leaves_endpoint_unidentified_but_usable(pool):
    server = Server({"a": "vllm"})

    def handler(req: httpx.Request) -> httpx.Response:
        if req.url.path == "/v1/models":
            raise httpx.ConnectError("refused", request=req)
        return server(req)

    model = OpenAICompatSummaryModel([A], model=MODEL, transport=httpx.MockTransport(handler),
                                     health_interval_s=None, routing="outstanding")
    try:
        assert (await model.generate(request())).text == REPLY
        assert model.endpoints[0].engine is None  # asked again next time
        assert "repetition_penalty" in json.loads(server.chats()[0].content)
    finally:
        await model.aclose()


# --------------------------------------------------------------------------- self-check


async def test_self_check_reports_engine_context_sampling_tokenize_and_load(pool):
    server = Server({"a": "vllm", "b": "llamacpp", "c": "sglang"})
    model = pool(server, urls=[A, B, C], context_tokens=16384)
    reports = {r.base_url: r for r in await model.self_check()}
    a, b, c = reports[A], reports[B], reports[C]
    assert all(r.ok for r in reports.values())
    assert (a.engine, a.tokenize, a.load, a.sampling, a.context) == (
        "vllm", "messages", "metrics", "ok", 32768)
    assert (b.engine, b.tokenize, b.load) == ("llamacpp", "template", "metrics")
    assert (c.engine, c.tokenize, c.load) == ("sglang", "none", "metrics")
    probe = json.loads([r for r in server.chats() if r.url.host == "b"][0].content)
    assert probe["max_tokens"] == 1 and probe["repeat_penalty"] == 1.0


async def test_self_check_flags_a_small_context(pool):
    model = pool(Server({"a": "vllm"}, context=8192), context_tokens=16384)
    [report] = await model.self_check()
    assert not report.ok and "STREAMER_MODEL__CONTEXT_TOKENS=8192" in report.problems[0]
    assert model.endpoints[0].problem is not None


async def test_self_check_turns_a_refused_sampling_field_into_a_clear_problem(pool):
    server = Server({"a": "openai"})
    server.chat = lambda req: httpx.Response(400, json={
        "error": {"message": "Unrecognized request argument supplied: min_p", "param": "min_p"}})
    model = pool(server)
    [report] = await model.self_check()
    assert report.sampling == "rejected" and not report.ok
    assert "min_p" in report.problems[0] and "STREAMER_MODEL__DIALECT" in report.problems[0]


async def test_self_check_of_an_unreachable_endpoint_says_so(pool):
    def handler(req: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=req)

    model = OpenAICompatSummaryModel([A], model=MODEL, transport=httpx.MockTransport(handler),
                                     health_interval_s=None)
    try:
        [report] = await model.self_check()
        assert not report.reachable and "cannot reach" in report.error
        assert model.endpoints[0].problem is None  # not a configuration problem
    finally:
        await model.aclose()


# --------------------------------------------------------------------------- token counting


async def test_llamacpp_counts_through_apply_template_then_tokenize(pool):
    server = Server({"a": "llamacpp"})
    model = pool(server)
    n = await model.count_tokens([{"role": "user", "content": "ping"}])
    assert n == len("<|im_start|>user\nping<|im_end|>\n")
    assert server.paths("a") == ["/v1/models", "/apply-template", "/tokenize"]
    tokenize = json.loads(server.requests[-1].content)
    assert tokenize["content"].startswith("<|im_start|>") and tokenize["add_special"] is True


async def test_sglang_is_never_asked_to_count(pool):
    server = Server({"a": "sglang"})
    model = pool(server)
    assert await model.count_tokens([{"role": "user", "content": "ping"}]) is None
    assert await model.count_tokens([{"role": "user", "content": "ping"}]) is None
    assert server.paths("a") == ["/v1/models"]


# --------------------------------------------------------------------------- routing


async def test_load_routing_avoids_the_server_with_the_longer_queue(pool):
    server = Server({"a": "vllm", "b": "vllm"})
    server.queue = {"a": 6.0, "b": 1.0}  # other clients keep a busy
    model = pool(server, urls=[A, B], routing="load", dialect="vllm")
    for e in model._endpoints:
        await model._read_load(e)
    for i in range(4):
        await model.generate(request(f"p{i}"))
    assert [r.url.host for r in server.chats()] == ["b"] * 4
    assert [e.server_queue for e in model.endpoints] == [6.0, 1.0]


async def test_load_routing_weighs_the_queue_by_observed_speed(pool):
    server = Server({"a": "vllm", "b": "vllm"})
    server.queue = {"a": 3.0, "b": 1.0}  # a: the longer queue, on a 4x faster server
    model = pool(server, urls=[A, B], routing="load", dialect="vllm")
    for e in model._endpoints:
        await model._read_load(e)
    a, b = model._endpoints
    a.s_per_token, b.s_per_token = 0.01, 0.04
    await model.generate(request("p"))
    assert server.chats()[-1].url.host == "a"  # 3 x 0.01 < 1 x 0.04
    a.s_per_token, b.s_per_token = 0.01, 0.015  # (the call above updated a's speed)
    await model.generate(request("q"))
    assert server.chats()[-1].url.host == "b"  # 3 x 0.01 > 1 x 0.015


def test_observed_speed_is_an_ewma_per_generated_token(pool):
    model = pool(Server({"a": "vllm"}), routing="load")
    e = model._endpoints[0]
    model._observe(e, 2.0, 100)
    assert e.s_per_token == pytest.approx(0.02)
    model._observe(e, 1.0, 100)
    assert e.s_per_token == pytest.approx(0.7 * 0.02 + 0.3 * 0.01)
    model._observe(e, 0.5, 0)  # no tokens counted: per request
    assert e.s_per_token > 0.01


async def test_outstanding_routing_ignores_the_server_queue(pool):
    server = Server({"a": "vllm", "b": "vllm"})
    server.queue = {"a": 6.0, "b": 1.0}
    model = pool(server, urls=[A, B], routing="outstanding", dialect="vllm")
    for e in model._endpoints:
        await model._read_load(e)
    for i in range(4):
        await model.generate(request(f"p{i}"))
    assert sorted(r.url.host for r in server.chats()) == ["a", "a", "b", "b"]


async def test_server_without_load_signal_is_not_asked_again(pool):
    server = Server({"a": "openai"})
    model = pool(server, routing="load")
    await model.generate(request())
    for e in model._endpoints:
        await model._read_load(e)
        await model._read_load(e)
    assert "/metrics" not in server.paths("a")  # generic servers: not even asked


async def test_identical_prompt_returns_to_the_endpoint_that_served_it(pool):
    server = Server({"a": "vllm", "b": "vllm", "c": "vllm"})
    model = pool(server, urls=[A, B, C], dialect="vllm")
    same = request("same previous summary")
    for i in range(3):
        await model.generate(same)
        await model.generate(request(f"other {i}"))
    hosts = [r.url.host for r in server.chats()]
    assert len({hosts[0], hosts[2], hosts[4]}) == 1  # the repeated prompt stuck


async def test_identical_prompt_leaves_an_endpoint_that_failed_it(pool):
    server = Server({"a": "vllm", "b": "vllm"})
    calls = {"a": 0}

    def chat(req: httpx.Request) -> httpx.Response:
        if req.url.host == "a" and calls["a"] >= 1:
            return httpx.Response(503)
        calls["a"] += req.url.host == "a"
        return chat_ok(req)

    server.chat = chat
    model = pool(server, urls=[A, B], dialect="vllm", max_retries=1)
    same = request("same")
    await model.generate(same)
    first = server.chats()[0].url.host
    await model.generate(same)
    hosts = [r.url.host for r in server.chats()]
    if first == "a":  # it failed on a the second time, then b served it, and keeps it
        assert hosts == ["a", "a", "b"]
        await model.generate(same)
        assert server.chats()[-1].url.host == "b"
    else:
        assert hosts == ["b", "b"]


async def test_user_affinity_keeps_a_user_on_one_endpoint_and_spreads_users(pool):
    server = Server({"a": "vllm", "b": "vllm", "c": "vllm"})
    model = pool(server, urls=[A, B, C], dialect="vllm", affinity="user")
    by_user: dict[str, set[str]] = {}
    for u in range(30):
        for i in range(3):
            await model.generate(request(f"{u}-{i}", user=f"user-{u}"))
            by_user.setdefault(f"user-{u}", set()).add(server.chats()[-1].url.host)
    assert all(len(hosts) == 1 for hosts in by_user.values())
    assert len({next(iter(h)) for h in by_user.values()}) == 3  # users spread over endpoints


async def test_user_affinity_yields_when_the_users_endpoint_fails(pool):
    server = Server({"a": "vllm", "b": "vllm"})
    model = pool(server, urls=[A, B], dialect="vllm", affinity="user", max_retries=1)
    await model.generate(request("x", user="u1"))
    home = server.chats()[-1].url.host
    server.chat = lambda req: httpx.Response(503) if req.url.host == home else chat_ok(req)
    assert (await model.generate(request("y", user="u1"))).text == REPLY
    assert [r.url.host for r in server.chats()[-2:]] == [home, "b" if home == "a" else "a"]


async def test_a_misconfigured_endpoint_is_checked_again_and_used_once_fixed(pool):
    class Clock:
        now = 100.0

        def __call__(self) -> float:
            return self.now

    clock = Clock()
    good = Server({"a": "vllm", "b": "vllm"})
    wrong = Server({"a": "vllm"}, name="someone/else")
    current = {"a": wrong}

    def handler(req: httpx.Request) -> httpx.Response:
        return current.get(req.url.host, good)(req)

    model = OpenAICompatSummaryModel([A, B], model=MODEL, transport=httpx.MockTransport(handler),
                                     health_interval_s=None, routing="outstanding", clock=clock)
    try:
        await model.generate(request("p0"))
        [a] = [e for e in model.endpoints if e.base_url == A]
        assert a.problem is not None
        current.clear()  # the server at a is redeployed with the right model name
        clock.now += 10
        await model.generate(request("p1"))
        assert [e for e in model.endpoints if e.base_url == A][0].problem is not None  # not yet
        clock.now += 30
        for i in range(4):
            await model.generate(request(f"q{i}"))
        assert [e for e in model.endpoints if e.base_url == A][0].problem is None
        assert any(r.url.host == "a" for r in good.chats())
    finally:
        await model.aclose()
