"""The OpenAI-compatible pool client, driven through ``httpx.MockTransport`` (no sockets).

The client's own ``transport=`` keyword is the injection point.  Backoffs are zeroed, health
probing is off unless a test asks for it, the breaker clock is fake: nothing really sleeps
except the one asyncio-timeout test (50 ms).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import httpx
import pytest

from streamer.adapters.llm.client import OpenAICompatSummaryModel
from streamer.domain.output import parse_summary
from streamer.domain.prompt import SYSTEM_PROMPT, build_update_prompt
from streamer.domain.triples import Triple
from streamer.errors import ModelRequestError, ModelUnavailableError, TransientError
from streamer.ports import ModelReply, UpdateRequest
from streamer.settings import ModelSettings

pytestmark = pytest.mark.unit

MODEL = "test-org/test-model"
A = "http://vllm-a:8000/v1"
B = "http://vllm-b:8000/v1"
C = "http://vllm-c:8000/v1"
HOST = {"vllm-a": A, "vllm-b": B, "vllm-c": C}
REPLY_TEXT = "<think>\nThe user picks trail shoes.\n</think>\n\nPrefers trail running gear."

Handler = Callable[[httpx.Request], httpx.Response]


def update_request(previous: str | None = None) -> UpdateRequest:
    triples = (Triple("running shoes", "trail shoe", "road shoe", "e1"),)
    return UpdateRequest(build_update_prompt(previous, triples), previous, triples)


def completion(content: str | None = REPLY_TEXT, **extra: object) -> dict[str, object]:
    body: dict[str, object] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 321, "completion_tokens": 54, "total_tokens": 375},
    }
    body.update(extra)
    return body


def ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json=completion())


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Recorder:
    """Wraps a handler and keeps every request it saw (in order)."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.handler(request)

    def chat_urls(self) -> list[str]:
        """Base URLs of the chat-completion calls, in order."""
        return [HOST[r.url.host] for r in self.requests if r.url.path == "/v1/chat/completions"]

    def paths(self) -> list[str]:
        return [r.url.path for r in self.requests]


def failing_first(n: int, failure: Callable[[httpx.Request], httpx.Response]) -> Handler:
    """The first ``n`` calls get ``failure(request)`` (a response, or it raises), then ``ok``."""
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return failure(request) if calls <= n else ok(request)

    return handler


@pytest.fixture
async def make_model():
    """``make_model(handler, urls, **kw)``: a pool over MockTransport, closed after the test."""
    models: list[OpenAICompatSummaryModel] = []

    def factory(handler, urls=(A,), **kw) -> OpenAICompatSummaryModel:
        kw.setdefault("health_interval_s", None)
        kw.setdefault("backoff_base_s", 0.0)
        kw.setdefault("backoff_max_s", 0.0)
        kw.setdefault("timeout_s", 5.0)
        # engine identification and load reads have their own tests (test_engines.py)
        kw.setdefault("dialect", "openai")
        kw.setdefault("routing", "outstanding")
        model = OpenAICompatSummaryModel(list(urls), model=MODEL,
                                         transport=httpx.MockTransport(handler), **kw)
        models.append(model)
        return model

    yield factory
    for model in models:
        await model.aclose()


def status(model: OpenAICompatSummaryModel, url: str):
    [s] = [e for e in model.endpoints if e.base_url == url]
    return s


# --------------------------------------------------------------------------- request shape


async def test_request_url_headers_and_exact_body(make_model):
    rec = Recorder(ok)
    model = make_model(rec, api_key="sk-secret")
    req = update_request("Likes hiking.")

    await model.generate(req)

    [sent] = rec.requests
    assert sent.method == "POST"
    assert str(sent.url) == "http://vllm-a:8000/v1/chat/completions"
    assert sent.headers["authorization"] == "Bearer sk-secret"
    assert sent.headers["content-type"] == "application/json"
    body = json.loads(sent.content)
    assert body == {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": req.prompt.user},
        ],
        "n": 1,
        "temperature": 0.6,
        "top_p": 0.95,
        "top_k": 20,
        "min_p": 0.0,
        "repetition_penalty": 1.0,
        "max_tokens": 4096,
        "chat_template_kwargs": {"enable_thinking": True},
    }
    assert "Likes hiking." in body["messages"][1]["content"]
    assert body == model.request_body(req)


async def test_default_api_key_is_bearer_empty(make_model):
    rec = Recorder(ok)
    model = make_model(rec)
    await model.generate(update_request())
    assert rec.requests[0].headers["authorization"] == "Bearer EMPTY"


async def test_explicit_sampling_is_sent_as_given(make_model):
    rec = Recorder(ok)
    sampling = {"temperature": 0.0, "top_p": 1.0, "top_k": -1, "max_tokens": 64}
    model = make_model(rec, sampling=sampling)
    await model.generate(update_request())
    body = json.loads(rec.requests[0].content)
    assert {k: body[k] for k in sampling} == sampling
    assert body["model"] == MODEL and body["n"] == 1


async def test_from_settings_carries_model_key_sampling_and_pool_knobs():
    settings = ModelSettings(base_urls=[A, B], model="served/name", api_key="sk-from-settings",
                             timeout_s=42.0, max_retries=4, temperature=0.3, top_p=0.8, top_k=7,
                             max_tokens=123, max_concurrency_per_endpoint=3,
                             breaker_failures=2, breaker_reset_s=4.0, min_p=0.1,
                             repetition_penalty=1.2, dialect="llamacpp", routing="outstanding",
                             affinity="user", load_interval_s=3.0, context_tokens=9000)
    model = OpenAICompatSummaryModel.from_settings(settings)
    try:
        req = update_request()
        assert model.request_body(req, model.engine_of(model._endpoints[0])) == {
            "model": "served/name", "messages": req.prompt.messages(), "n": 1,
            "temperature": 0.3, "top_p": 0.8, "top_k": 7, "max_tokens": 123, "min_p": 0.1,
            "repeat_penalty": 1.2, "chat_template_kwargs": {"enable_thinking": True},
        }
        assert (model.dialect, model.routing, model.affinity, model.load_interval_s,
                model.context_tokens) == ("llamacpp", "outstanding", "user", 3.0, 9000)
        assert (model.timeout_s, model.max_retries, model.max_concurrency_per_endpoint) == (
            42.0, 4, 3)
        assert model._client.headers["authorization"] == "Bearer sk-from-settings"
        assert [e.base_url for e in model.endpoints] == [A, B]
        assert model.capacity == 6
    finally:
        await model.aclose()


async def test_trailing_slash_of_base_url_is_dropped(make_model):
    rec = Recorder(ok)
    model = make_model(rec, urls=[A + "/"])
    await model.generate(update_request())
    assert rec.requests[0].url.path == "/v1/chat/completions"


async def test_dns_entry_sends_to_resolved_ip_with_original_host_header(make_model):
    async def resolver(host: str, port: int) -> list[str]:
        assert (host, port) == ("vllm.ns.svc", 8000)
        return ["10.0.0.7"]

    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return ok(request)

    model = make_model(handler, urls=["dns+http://vllm.ns.svc:8000/v1"], resolver=resolver)
    await model.generate(update_request())
    [sent] = seen
    assert str(sent.url) == "http://10.0.0.7:8000/v1/chat/completions"
    assert sent.headers["host"] == "vllm.ns.svc:8000"
    assert sent.headers["authorization"] == "Bearer EMPTY"


# --------------------------------------------------------------------------- reply parsing


async def test_good_reply_is_parsed(make_model):
    model = make_model(lambda r: httpx.Response(200, json=completion(
        model="served-as", usage={"prompt_tokens": 1200, "completion_tokens": 345})))
    reply = await model.generate(update_request())
    assert isinstance(reply, ModelReply)
    assert reply.text == REPLY_TEXT  # the think block is kept verbatim for the output parser
    assert parse_summary(reply.text, finish_reason=reply.finish_reason) == (
        "Prefers trail running gear.")
    assert (reply.model, reply.prompt_tokens, reply.completion_tokens, reply.finish_reason) == (
        "served-as", 1200, 345, "stop")
    assert reply.latency_ms >= 0
    [s] = model.endpoints
    assert (s.requests, s.failures, s.consecutive_failures, s.outstanding) == (1, 0, 0, 0)


async def test_reply_optional_fields_default(make_model):
    body = {"choices": [{"message": {"content": None}}]}
    model = make_model(lambda r: httpx.Response(200, json=body))
    reply = await model.generate(update_request())
    assert reply == ModelReply(text="", model=MODEL, prompt_tokens=0, completion_tokens=0,
                               finish_reason=None, latency_ms=reply.latency_ms)


async def test_length_finish_reason_is_passed_through(make_model):
    body = completion(content="<think>\nstill thinking")
    body["choices"][0]["finish_reason"] = "length"  # type: ignore[index]
    model = make_model(lambda r: httpx.Response(200, json=body))
    reply = await model.generate(update_request())
    assert reply.finish_reason == "length" and reply.text == "<think>\nstill thinking"


MALFORMED = {
    "non_json": lambda r: httpx.Response(200, text="<html>502 from a proxy</html>"),
    "empty_body": lambda r: httpx.Response(200),
    "json_list": lambda r: httpx.Response(200, json=[1, 2]),
    "no_choices": lambda r: httpx.Response(200, json={"model": MODEL}),
    "empty_choices": lambda r: httpx.Response(200, json={"choices": []}),
    "choice_without_message": lambda r: httpx.Response(200, json={"choices": [{}]}),
    "message_without_content": lambda r: httpx.Response(200, json={"choices": [{"message": {}}]}),
    "content_not_text": lambda r: httpx.Response(
        200, json={"choices": [{"message": {"content": [{"type": "text"}]}}]}),
}


@pytest.mark.parametrize("usage", [None, {}, {"prompt_tokens": None, "completion_tokens": None},
                                   {"prompt_tokens": "many", "completion_tokens": True}])
async def test_missing_or_null_usage_does_not_fail_a_good_reply(make_model, usage):
    body = completion()
    body["usage"] = usage  # type: ignore[index]
    model = make_model(lambda r: httpx.Response(200, json=body))
    reply = await model.generate(update_request())
    assert (reply.text, reply.prompt_tokens, reply.completion_tokens) == (REPLY_TEXT, 0, 0)


# the same answer as each engine returns it: thinking inline, or split out by its parser
SPLIT = {
    "vllm<=0.11.0 / llama.cpp / sglang": {"reasoning_content": "thinking"},
    "vllm 0.11.1+ (alias kept)": {"reasoning": "thinking", "reasoning_content": "thinking"},
    "vllm 0.16+": {"reasoning": "thinking"},
}


@pytest.mark.parametrize("fields", SPLIT.values(), ids=SPLIT.keys())
async def test_thinking_split_out_by_the_server_is_found(make_model, fields):
    body = completion(content="\n\nPrefers trail running gear.")
    body["choices"][0]["message"].update(fields)  # type: ignore[index]
    model = make_model(lambda r: httpx.Response(200, json=body))
    reply = await model.generate(update_request())
    assert reply.reasoning == "thinking"
    assert parse_summary(reply.text, finish_reason=reply.finish_reason,
                         reasoning=reply.reasoning) == "Prefers trail running gear."


async def test_inline_thinking_leaves_reasoning_empty(make_model):
    body = completion()
    body["choices"][0]["message"]["reasoning_content"] = None  # type: ignore[index]
    model = make_model(lambda r: httpx.Response(200, json=body))
    reply = await model.generate(update_request())
    assert reply.reasoning is None and reply.text == REPLY_TEXT


@pytest.mark.parametrize("reply", MALFORMED.values(), ids=MALFORMED.keys())
async def test_malformed_reply_is_transient_and_counts_as_failure(make_model, reply):
    rec = Recorder(reply)
    model = make_model(rec, max_retries=0)
    with pytest.raises(ModelUnavailableError) as info:
        await model.generate(update_request())
    assert not isinstance(info.value, ModelRequestError)
    assert info.value.retriable
    cause = info.value.__cause__
    assert isinstance(cause, ModelUnavailableError)
    assert "malformed response from http://vllm-a:8000/v1" in str(cause)
    assert len(rec.requests) == 1
    [s] = model.endpoints
    assert (s.failures, s.consecutive_failures, s.outstanding) == (1, 1, 0)


async def test_malformed_reply_is_retried_on_another_endpoint(make_model):
    rec = Recorder(failing_first(1, MALFORMED["non_json"]))
    model = make_model(rec, urls=[A, B], max_retries=1)
    reply = await model.generate(update_request())
    assert reply.text == REPLY_TEXT
    first, second = rec.chat_urls()
    assert first != second
    assert status(model, first).failures == 1 and status(model, second).failures == 0


# --------------------------------------------------------------------------- status codes


@pytest.mark.parametrize("code", [429, 503, 500, 502, 504, 408, 409, 425])
async def test_transient_status_is_retried_elsewhere_then_unavailable(make_model, code):
    rec = Recorder(lambda r: httpx.Response(code, json={"error": "busy"}))
    model = make_model(rec, urls=[A, B], max_retries=2)
    with pytest.raises(ModelUnavailableError) as info:
        await model.generate(update_request())
    assert "all 3 attempts failed" in str(info.value)
    assert f"answered {code}" in str(info.value.__cause__)
    urls = rec.chat_urls()
    assert len(urls) == 3
    assert set(urls[:2]) == {A, B}  # the retry goes to the endpoint not tried yet
    assert status(model, A).failures + status(model, B).failures == 3


@pytest.mark.parametrize("code", [429, 503])
async def test_transient_status_then_success_on_the_other_endpoint(make_model, code):
    rec = Recorder(failing_first(1, lambda r: httpx.Response(code)))
    model = make_model(rec, urls=[A, B], max_retries=2)
    reply = await model.generate(update_request())
    assert reply.text == REPLY_TEXT
    first, second = rec.chat_urls()
    assert first != second
    assert status(model, first).consecutive_failures == 1
    assert status(model, second).consecutive_failures == 0


async def test_max_retries_zero_means_one_attempt(make_model):
    rec = Recorder(lambda r: httpx.Response(503))
    model = make_model(rec, urls=[A, B], max_retries=0)
    with pytest.raises(ModelUnavailableError, match="all 1 attempts failed"):
        await model.generate(update_request())
    assert len(rec.requests) == 1


@pytest.mark.parametrize("code", [400, 401, 403, 404, 413, 422])
async def test_permanent_4xx_is_request_error_without_retry(make_model, code):
    text = '{"object":"error","message":"prompt is longer than the maximum context length"}'
    rec = Recorder(lambda r: httpx.Response(code, text=text))
    model = make_model(rec, urls=[A, B], max_retries=2)
    with pytest.raises(ModelRequestError) as info:
        await model.generate(update_request())
    assert not isinstance(info.value, TransientError) and not info.value.retriable
    assert f"({code})" in str(info.value) and "maximum context length" in str(info.value)
    assert len(rec.requests) == 1
    s = status(model, rec.chat_urls()[0])
    # the server answered: not a failure of the endpoint
    assert (s.failures, s.consecutive_failures, s.breaker, s.outstanding) == (0, 0, "closed", 0)


async def test_request_error_body_is_truncated(make_model):
    model = make_model(lambda r: httpx.Response(400, text="x" * 5000))
    with pytest.raises(ModelRequestError) as info:
        await model.generate(update_request())
    assert str(info.value).count("x") == 300


# --------------------------------------------------------------------------- transport errors


def read_timeout(request: httpx.Request) -> httpx.Response:
    raise httpx.ReadTimeout("timed out reading", request=request)


def connect_error(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


async def test_httpx_read_timeout_is_unavailable(make_model):
    rec = Recorder(read_timeout)
    model = make_model(rec, max_retries=0, timeout_s=7.0)
    with pytest.raises(ModelUnavailableError) as info:
        await model.generate(update_request())
    cause = info.value.__cause__
    assert isinstance(cause, ModelUnavailableError)
    assert "timeout after 7s calling http://vllm-a:8000/v1" in str(cause)
    assert isinstance(cause.__cause__, httpx.ReadTimeout)
    [s] = model.endpoints
    assert (s.failures, s.outstanding) == (1, 0)


async def test_read_timeout_is_retried_on_another_endpoint(make_model):
    rec = Recorder(failing_first(1, read_timeout))
    model = make_model(rec, urls=[A, B], max_retries=1)
    reply = await model.generate(update_request())
    assert reply.text == REPLY_TEXT
    first, second = rec.chat_urls()
    assert first != second


async def test_call_bounded_by_timeout_s_even_if_transport_hangs(make_model):
    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(30)
        return ok(request)

    model = make_model(hang, max_retries=0, timeout_s=0.05)
    started = time.monotonic()
    with pytest.raises(ModelUnavailableError) as info:
        await model.generate(update_request())
    assert time.monotonic() - started < 2.0
    assert "timeout after 0.05s" in str(info.value.__cause__)
    assert isinstance(info.value.__cause__.__cause__, TimeoutError)
    assert model.in_flight == 0


async def test_connect_error_is_unavailable(make_model):
    model = make_model(connect_error, max_retries=0)
    with pytest.raises(ModelUnavailableError) as info:
        await model.generate(update_request())
    assert "cannot reach http://vllm-a:8000/v1" in str(info.value.__cause__)
    assert isinstance(info.value.__cause__.__cause__, httpx.ConnectError)


# --------------------------------------------------------------------------- balancing


class Gate:
    """An async handler that holds every request until the test releases it."""

    def __init__(self) -> None:
        self.arrived: asyncio.Queue[tuple[str, asyncio.Event]] = asyncio.Queue()
        self.concurrent = 0
        self.max_concurrent = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        release = asyncio.Event()
        self.concurrent += 1
        self.max_concurrent = max(self.max_concurrent, self.concurrent)
        try:
            await self.arrived.put((HOST[request.url.host], release))
            await release.wait()
        finally:
            self.concurrent -= 1
        return ok(request)

    async def next(self) -> tuple[str, asyncio.Event]:
        return await asyncio.wait_for(self.arrived.get(), 1.0)


async def test_attempt_goes_to_least_outstanding_endpoint(make_model):
    gate = Gate()
    model = make_model(gate, urls=[A, B, C])
    tasks, held = [], []
    for _ in range(3):
        tasks.append(asyncio.create_task(model.generate(update_request())))
        held.append(await gate.next())
    hosts = [h for h, _ in held]
    assert sorted(hosts) == [A, B, C]  # one each: never two on one while another is idle
    assert model.in_flight == 3

    # free the second one: the next call must go there (the only endpoint with 0 outstanding),
    # whatever the tie-break rotation would pick
    held[1][1].set()
    await tasks[1]
    assert {e.base_url: e.outstanding for e in model.endpoints} == {
        hosts[0]: 1, hosts[1]: 0, hosts[2]: 1}
    tasks.append(asyncio.create_task(model.generate(update_request())))
    host4, release4 = await gate.next()
    assert host4 == hosts[1]

    for _, release in [*held, (host4, release4)]:
        release.set()
    await asyncio.gather(*tasks)
    assert model.in_flight == 0


async def test_retry_prefers_an_untried_endpoint_over_a_less_busy_one(make_model):
    """A retry avoids the endpoint that just failed even when it has fewer requests out."""
    hold = asyncio.Event()
    arrived: asyncio.Queue[str] = asyncio.Queue()
    failed = False

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal failed
        url = HOST[request.url.host]
        user = json.loads(request.content)["messages"][1]["content"]
        if "HOLD" in user:
            await arrived.put(url)
            await hold.wait()
        elif not failed:
            failed = True
            await arrived.put(url)
            return httpx.Response(503)
        else:
            await arrived.put(url)
        return ok(request)

    model = make_model(handler, urls=[A, B], max_retries=1)
    held = asyncio.create_task(model.generate(update_request("HOLD")))
    busy = await asyncio.wait_for(arrived.get(), 1.0)
    reply = await model.generate(update_request("retry me"))
    failed_on = arrived.get_nowait()
    retried_on = arrived.get_nowait()
    assert failed_on != busy  # least outstanding first...
    assert retried_on == busy  # ...but the retry goes to the endpoint not tried yet
    assert reply.text == REPLY_TEXT
    hold.set()
    await held


async def test_ties_rotate_over_endpoints(make_model):
    rec = Recorder(ok)
    model = make_model(rec, urls=[A, B, C])
    for i in range(6):  # distinct prompts: an identical one would stick to its endpoint
        await model.generate(update_request(f"summary {i}"))
    urls = rec.chat_urls()
    assert sorted(urls[:3]) == [A, B, C] and sorted(urls[3:]) == [A, B, C]
    assert [e.requests for e in model.endpoints] == [2, 2, 2]


async def test_per_endpoint_cap_makes_calls_wait_for_a_slot(make_model):
    gate = Gate()
    model = make_model(gate, max_concurrency_per_endpoint=1)
    assert not model.saturated  # not started yet
    first = asyncio.create_task(model.generate(update_request()))
    _, release1 = await gate.next()
    second = asyncio.create_task(model.generate(update_request()))
    for _ in range(20):
        if model.waiting:
            break
        await asyncio.sleep(0)
    assert model.waiting == 1 and model.saturated
    assert (model.in_flight, model.capacity) == (1, 1)
    assert gate.arrived.empty()

    release1.set()
    _, release2 = await gate.next()
    release2.set()
    await asyncio.gather(first, second)
    assert gate.max_concurrent == 1
    assert model.waiting == 0 and not model.saturated


# --------------------------------------------------------------------------- circuit breaker


async def test_breaker_opens_after_consecutive_failures_and_recovers(make_model):
    clock = FakeClock()
    failing = True

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503) if failing else ok(request)

    rec = Recorder(handler)
    model = make_model(rec, max_retries=0, breaker_failures=3, breaker_reset_s=10.0,
                       clock=clock)
    for n in (1, 2):
        with pytest.raises(ModelUnavailableError):
            await model.generate(update_request())
        assert model.endpoints[0].breaker == "closed"
        assert model.endpoints[0].consecutive_failures == n
    with pytest.raises(ModelUnavailableError):
        await model.generate(update_request())
    assert model.endpoints[0].breaker == "open"
    assert model.capacity == 0 and model.saturated

    # open: fails fast, nothing is sent
    with pytest.raises(ModelUnavailableError) as info:
        await model.generate(update_request())
    assert "breaker open" in str(info.value)
    assert len(rec.requests) == 3

    # after reset_s one trial goes; its success closes the breaker
    clock.advance(10.0)
    assert model.endpoints[0].breaker == "half_open"
    failing = False
    reply = await model.generate(update_request())
    assert reply.text == REPLY_TEXT
    assert len(rec.requests) == 4
    assert model.endpoints[0].breaker == "closed"
    assert model.endpoints[0].consecutive_failures == 0


async def test_failed_half_open_trial_reopens_at_once(make_model):
    clock = FakeClock()
    rec = Recorder(lambda r: httpx.Response(503))
    model = make_model(rec, max_retries=0, breaker_failures=2, breaker_reset_s=5.0, clock=clock)
    for _ in range(2):
        with pytest.raises(ModelUnavailableError):
            await model.generate(update_request())
    assert model.endpoints[0].breaker == "open"
    clock.advance(5.0)
    with pytest.raises(ModelUnavailableError):
        await model.generate(update_request())  # the trial
    assert len(rec.requests) == 3
    assert model.endpoints[0].breaker == "open"
    with pytest.raises(ModelUnavailableError, match="breaker open"):
        await model.generate(update_request())
    assert len(rec.requests) == 3


async def test_open_endpoint_is_skipped_while_others_serve(make_model):
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503) if HOST[request.url.host] == A else ok(request)

    rec = Recorder(handler)
    model = make_model(rec, urls=[A, B], max_retries=1, breaker_failures=1,
                       breaker_reset_s=60.0, clock=FakeClock())
    for i in range(6):
        assert (await model.generate(update_request(f"summary {i}"))).text == REPLY_TEXT
    assert rec.chat_urls().count(A) == 1
    assert status(model, A).breaker == "open" and status(model, B).breaker == "closed"
    assert model.capacity == model.max_concurrency_per_endpoint


async def test_only_consecutive_transient_failures_open_the_breaker(make_model):
    answers = iter([httpx.Response(503), httpx.Response(400), httpx.Response(503)])
    model = make_model(lambda r: next(answers), max_retries=0, breaker_failures=2)
    with pytest.raises(ModelUnavailableError):
        await model.generate(update_request())
    with pytest.raises(ModelRequestError):
        await model.generate(update_request())
    with pytest.raises(ModelUnavailableError):
        await model.generate(update_request())
    [s] = model.endpoints
    assert (s.breaker, s.consecutive_failures, s.failures) == ("closed", 1, 2)


async def test_timeouts_count_toward_the_breaker(make_model):
    model = make_model(read_timeout, max_retries=0, breaker_failures=2, clock=FakeClock())
    for _ in range(2):
        with pytest.raises(ModelUnavailableError):
            await model.generate(update_request())
    assert model.endpoints[0].breaker == "open"


# --------------------------------------------------------------------------- health


async def test_health_probe_marks_endpoints_and_generate_skips_unhealthy(make_model):
    health = {A: 503, B: 404}  # 404: no /health route, counts as healthy

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/health":
            return httpx.Response(health[HOST[request.url.host]])
        return ok(request)

    rec = Recorder(handler)
    model = make_model(rec, urls=[A, B])
    await model.check_health()
    probes = [r for r in rec.requests if r.url.path == "/health"]
    assert sorted(str(r.url) for r in probes) == ["http://vllm-a:8000/health",
                                                  "http://vllm-b:8000/health"]
    assert all(r.method == "GET" for r in probes)
    assert (status(model, A).healthy, status(model, B).healthy) == (False, True)
    for _ in range(3):
        await model.generate(update_request())
    assert rec.chat_urls() == [B, B, B]

    health[A] = 200
    await model.check_health()
    assert status(model, A).healthy


async def test_all_unhealthy_fails_without_sending(make_model):
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/health":
            raise httpx.ConnectError("refused", request=request)
        return ok(request)

    rec = Recorder(handler)
    model = make_model(rec, urls=[A, B], max_retries=1)
    await model.check_health()
    with pytest.raises(ModelUnavailableError) as info:
        await model.generate(update_request())
    assert "unhealthy" in str(info.value)
    assert rec.chat_urls() == []


# --------------------------------------------------------------------------- /tokenize

MESSAGES = [{"role": "system", "content": "sys"}, {"role": "user", "content": "hello"}]


def tokenize_answer(answer: Callable[[httpx.Request], httpx.Response]) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/tokenize", request.url
        return answer(request)

    return handler


async def test_count_tokens_posts_to_root_tokenize(make_model):
    rec = Recorder(tokenize_answer(lambda r: httpx.Response(
        200, json={"count": 57, "max_model_len": 16384, "tokens": [1] * 57})))
    model = make_model(rec, api_key="sk-secret")
    assert await model.count_tokens(MESSAGES) == 57
    [sent] = rec.requests
    assert sent.method == "POST"
    assert str(sent.url) == "http://vllm-a:8000/tokenize"  # the server root, not /v1
    assert sent.headers["authorization"] == "Bearer sk-secret"
    assert json.loads(sent.content) == {"model": MODEL, "messages": MESSAGES,
                                        "chat_template_kwargs": {"enable_thinking": True},
                                        "add_generation_prompt": True}
    # a count is not a model call
    [s] = model.endpoints
    assert (s.requests, s.outstanding, s.consecutive_failures) == (0, 0, 0)


@pytest.mark.parametrize("code", [404, 405, 501])
async def test_count_tokens_without_tokenize_route_is_none_and_remembered(make_model, code):
    rec = Recorder(tokenize_answer(lambda r: httpx.Response(code)))
    model = make_model(rec)
    assert await model.count_tokens(MESSAGES) is None
    assert await model.count_tokens(MESSAGES) is None
    assert len(rec.requests) == 1  # not asked again
    assert model.endpoints[0].consecutive_failures == 0


async def test_count_tokens_falls_over_to_an_endpoint_that_has_tokenize(make_model):
    def answer(request: httpx.Request) -> httpx.Response:
        if HOST[request.url.host] == A:
            return httpx.Response(404, json={"detail": "Not Found"})
        return httpx.Response(200, json={"count": 9})

    rec = Recorder(tokenize_answer(answer))
    model = make_model(rec, urls=[A, B])
    assert await model.count_tokens(MESSAGES) == 9
    assert await model.count_tokens(MESSAGES) == 9
    assert [HOST[r.url.host] for r in rec.requests] == [A, B, B]


PASSING_FAILURES = {
    "server_error": lambda r: httpx.Response(500),
    "rate_limited": lambda r: httpx.Response(429),
    "timeout": read_timeout,
    "connect_error": connect_error,
    "non_json": lambda r: httpx.Response(200, text="nope"),
}
NO_COUNT = {
    "json_list": lambda r: httpx.Response(200, json=[3]),
    "empty_tokens": lambda r: httpx.Response(200, json={"tokens": []}),  # llama.cpp, messages
    "negative": lambda r: httpx.Response(200, json={"count": -1}),
    "bool": lambda r: httpx.Response(200, json={"count": True}),
    "string": lambda r: httpx.Response(200, json={"count": "12"}),
    "float": lambda r: httpx.Response(200, json={"count": 1.5}),
    "bad_request": lambda r: httpx.Response(400, json={"error": "messages not supported"}),
    "unprocessable": lambda r: httpx.Response(422),
}


@pytest.mark.parametrize("answer", PASSING_FAILURES.values(), ids=PASSING_FAILURES.keys())
async def test_count_tokens_passing_failure_is_none_but_not_remembered(make_model, answer):
    rec = Recorder(tokenize_answer(answer))
    model = make_model(rec)
    assert await model.count_tokens(MESSAGES) is None
    assert await model.count_tokens(MESSAGES) is None
    assert len(rec.requests) == 2  # a passing failure: the route is asked again next time


@pytest.mark.parametrize("answer", NO_COUNT.values(), ids=NO_COUNT.keys())
async def test_count_tokens_answer_without_a_count_is_remembered(make_model, answer):
    rec = Recorder(tokenize_answer(answer))
    model = make_model(rec)
    assert await model.count_tokens(MESSAGES) is None
    assert await model.count_tokens(MESSAGES) is None
    assert len(rec.requests) == 1  # this server cannot count: never asked again


async def test_count_tokens_reads_a_token_list_without_count(make_model):
    model = make_model(tokenize_answer(lambda r: httpx.Response(200, json={"tokens": [4, 5, 6]})))
    assert await model.count_tokens(MESSAGES) == 3


async def test_count_tokens_zero_is_a_valid_count(make_model):
    model = make_model(tokenize_answer(lambda r: httpx.Response(200, json={"count": 0})))
    assert await model.count_tokens(MESSAGES) == 0


async def test_count_tokens_asks_at_most_max_retries_plus_one_endpoints(make_model):
    rec = Recorder(tokenize_answer(lambda r: httpx.Response(503)))
    model = make_model(rec, urls=[A, B, C], max_retries=1)
    assert await model.count_tokens(MESSAGES) is None
    assert len(rec.requests) == 2


async def test_count_tokens_skips_endpoints_behind_open_breaker(make_model):
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/tokenize":
            return httpx.Response(200, json={"count": 5})
        return httpx.Response(503)

    rec = Recorder(handler)
    model = make_model(rec, max_retries=0, breaker_failures=1, clock=FakeClock())
    with pytest.raises(ModelUnavailableError):
        await model.generate(update_request())
    assert model.endpoints[0].breaker == "open"
    assert await model.count_tokens(MESSAGES) is None
    assert rec.paths() == ["/v1/chat/completions"]


async def test_token_counter_falls_back_to_local_tokenizer_without_tokenize(make_model,
                                                                            monkeypatch):
    """The caller's fallback (streamer.app.build_token_counter): a None from the pool's
    /tokenize hands the prompt to the local tokenizer."""
    from streamer import app
    from streamer.adapters.llm import qwen_tokenizer

    local_calls: list[str] = []

    def local(text: str) -> int:
        local_calls.append(text)
        return 1234

    monkeypatch.setattr(qwen_tokenizer, "load_qwen_counter", lambda *a, **k: local)
    rec = Recorder(tokenize_answer(lambda r: httpx.Response(404)))
    model = make_model(rec)
    count = app.build_token_counter(model)
    assert count is not None
    prompt = update_request().prompt
    assert await count(prompt) == 1234
    assert local_calls == [prompt.chat_text()]
    assert json.loads(rec.requests[0].content)["messages"] == prompt.messages()


# --------------------------------------------------------------------------- life cycle


async def test_closed_client_refuses_calls_without_sending(make_model):
    rec = Recorder(ok)
    model = make_model(rec)
    await model.aclose()
    with pytest.raises(ModelUnavailableError, match="closed"):
        await model.generate(update_request())
    assert rec.requests == []


async def test_aclose_wakes_calls_waiting_for_a_slot(make_model):
    gate = Gate()
    model = make_model(gate, max_concurrency_per_endpoint=1)
    first = asyncio.create_task(model.generate(update_request()))
    _, release = await gate.next()
    second = asyncio.create_task(model.generate(update_request()))
    for _ in range(20):
        if model.waiting:
            break
        await asyncio.sleep(0)
    assert model.waiting == 1
    await model.aclose()
    with pytest.raises(ModelUnavailableError, match="closed"):
        await asyncio.wait_for(second, 1.0)
    release.set()
    await asyncio.gather(first, return_exceptions=True)
    assert gate.arrived.empty()


@pytest.mark.parametrize("kw", [{"base_urls": []}, {"max_concurrency_per_endpoint": 0},
                                {"timeout_s": 0}, {"base_urls": ["dns+ftp://x:1/v1"]}])
def test_constructor_rejects_bad_arguments(kw):
    args = {"base_urls": [A], **kw}
    with pytest.raises(ValueError):
        OpenAICompatSummaryModel(args.pop("base_urls"), model=MODEL, **args)
