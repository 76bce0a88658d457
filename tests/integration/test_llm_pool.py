"""The vLLM pool client against several real stand-in servers over HTTP.

No tight timing assertions: latencies only make requests overlap; the checks are on counts,
orderings and server-side statistics.
"""

from __future__ import annotations

import asyncio
import socket
from contextlib import AsyncExitStack, asynccontextmanager

import httpx
import pytest
from aiohttp import web

from streamer.adapters.llm.client import OpenAICompatSummaryModel
from streamer.devtools.standin.server import FaultConfig, StandinConfig, count_chat_tokens, running_standin
from streamer.errors import ModelRequestError, ModelUnavailableError
from streamer.settings import ModelSettings
from tests.integration.test_llm_client import request

MODEL = "VanillaH1/AlignXplore-Plus"
CHAT = "/v1/chat/completions"


def pool(urls, **kw) -> OpenAICompatSummaryModel:
    kw.setdefault("timeout_s", 10.0)
    kw.setdefault("max_retries", 2)
    kw.setdefault("health_interval_s", None)
    kw.setdefault("backoff_base_s", 0.01)
    kw.setdefault("backoff_max_s", 0.05)
    return OpenAICompatSummaryModel(urls, model=MODEL, **kw)


@asynccontextmanager
async def standins(n, config=None):
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(running_standin(config or StandinConfig(seed=i)))
               for i in range(n)]


async def set_faults(base, **faults):
    async with httpx.AsyncClient() as c:
        r = await c.post(f"{base}/admin/faults", json=FaultConfig(**faults).model_dump())
        r.raise_for_status()


async def stats(base):
    async with httpx.AsyncClient() as c:
        return (await c.get(f"{base}/admin/stats")).json()


async def chats(base) -> int:
    return (await stats(base))["by_endpoint"].get(CHAT, 0)


def status_of(model, base):
    [status] = [e for e in model.endpoints if e.base_url == f"{base}/v1"]
    return status


async def eventually(predicate, timeout_s=10.0, what="condition"):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@asynccontextmanager
async def running_app(app: web.Application, host="127.0.0.1", port=0):
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        yield f"http://{host}:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def broken_server(chat_body: str) -> web.Application:
    """A server that is healthy but answers chat requests 200 with ``chat_body`` (no tokenize)."""

    async def chat(request: web.Request) -> web.Response:
        return web.Response(status=200, text=chat_body, content_type="application/json")

    async def health(request: web.Request) -> web.Response:
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post(CHAT, chat)
    app.router.add_get("/health", health)
    return app


# --------------------------------------------------------------------------- settings


async def test_from_settings_carries_the_pool_settings():
    s = ModelSettings(base_urls=["http://a:8000/v1", "dns+http://vllm-headless.ns.svc:8000/v1"],
                      max_concurrency_per_endpoint=3, health_interval_s=1.5, breaker_failures=4,
                      breaker_reset_s=7.0, dns_refresh_s=11.0)
    m = OpenAICompatSummaryModel.from_settings(s)
    assert (m.max_concurrency_per_endpoint, m.health_interval_s, m.breaker_failures,
            m.breaker_reset_s, m.dns_refresh_s) == (3, 1.5, 4, 7.0, 11.0)
    # the static endpoint is known at once, the DNS one only after resolution
    assert [e.base_url for e in m.endpoints] == ["http://a:8000/v1"]
    assert m.capacity == 3 and m.in_flight == 0 and not m.saturated
    await m.aclose()
    d = ModelSettings()
    assert (d.max_concurrency_per_endpoint, d.health_interval_s, d.breaker_failures,
            d.breaker_reset_s, d.dns_refresh_s) == (8, 5.0, 5, 10.0, 30.0)


# --------------------------------------------------------------------------- balancing


async def test_balancing_spreads_concurrent_and_sequential_load():
    async with standins(3, StandinConfig(ttft_ms=50)) as bases:
        model = pool([f"{b}/v1" for b in bases], max_concurrency_per_endpoint=8)
        try:
            replies = await asyncio.gather(*(model.generate(request()) for _ in range(24)))
            assert all("</think>" in r.text for r in replies)
            concurrent = [await chats(b) for b in bases]
            for _ in range(9):
                await model.generate(request())
            sequential = [await chats(b) - c for b, c in zip(bases, concurrent, strict=True)]
        finally:
            await model.aclose()
    assert sum(concurrent) == 24 and min(concurrent) >= 4, concurrent
    assert sum(sequential) == 9 and min(sequential) >= 1, sequential  # ties rotate


async def test_per_endpoint_cap_is_never_exceeded_and_saturation_is_visible():
    cap = 3
    async with standins(2, StandinConfig(ttft_ms=150)) as bases:
        model = pool([f"{b}/v1" for b in bases], max_concurrency_per_endpoint=cap)
        seen = {"max_in_flight": 0, "saturated": False, "waiting": 0}

        async def watch():
            while True:
                seen["max_in_flight"] = max(seen["max_in_flight"], model.in_flight)
                seen["saturated"] |= model.saturated
                seen["waiting"] = max(seen["waiting"], model.waiting)
                assert all(e.outstanding <= cap for e in model.endpoints)
                await asyncio.sleep(0.005)

        watcher = asyncio.create_task(watch())
        try:
            replies = await asyncio.gather(*(model.generate(request()) for _ in range(20)))
        finally:
            watcher.cancel()
            await model.aclose()
        with pytest.raises(asyncio.CancelledError):
            await watcher  # (an AssertionError inside would surface here instead)
        server = [await stats(b) for b in bases]
    assert len(replies) == 20
    assert all(s["max_in_flight"] <= cap for s in server), server
    assert max(s["max_in_flight"] for s in server) == cap  # the cap was reached, not avoided
    assert sum(s["by_endpoint"][CHAT] for s in server) == 20  # nobody failed or retried
    assert seen["max_in_flight"] <= 2 * cap and seen["saturated"] and seen["waiting"] >= 1
    assert model.capacity == 2 * cap


async def test_saturation_makes_generate_wait_rather_than_fail():
    async with running_standin(StandinConfig(ttft_ms=200)) as base:
        model = pool([f"{base}/v1"], max_concurrency_per_endpoint=2, max_retries=0)
        try:
            replies = await asyncio.gather(*(model.generate(request()) for _ in range(7)))
        finally:
            await model.aclose()
        server = await stats(base)
    assert len(replies) == 7
    assert server["by_endpoint"][CHAT] == 7 and server["max_in_flight"] <= 2
    assert server["max_queued"] == 0  # the client waited, not the server


async def test_waiting_for_a_slot_is_bounded_by_the_timeout():
    # one slot, 1 s per call, 2.5 s timeout: the first calls get the slot in time, the last
    # ones cannot (the calls would need 5 s in a row)
    async with running_standin(StandinConfig(ttft_ms=1000)) as base:
        model = pool([f"{base}/v1"], max_concurrency_per_endpoint=1, max_retries=0, timeout_s=2.5)
        try:
            results = await asyncio.gather(*(model.generate(request()) for _ in range(5)),
                                           return_exceptions=True)
        finally:
            await model.aclose()
        server = await stats(base)
    errors = [r for r in results if isinstance(r, Exception)]
    assert not isinstance(results[0], Exception)
    assert errors and all(isinstance(e, ModelUnavailableError) for e in errors)
    assert all("saturated" in str(e) for e in errors), errors
    assert server["max_in_flight"] == 1


# --------------------------------------------------------------------------- faults


@pytest.mark.parametrize("status", [429, 503])
async def test_rejecting_server_is_avoided_and_its_breaker_opens(status):
    async with standins(3) as bases:
        bad, *good = bases
        await set_faults(bad, error_rate=1.0, error_status=status)
        model = pool([f"{b}/v1" for b in bases], breaker_failures=2, breaker_reset_s=60)
        try:
            replies = await asyncio.gather(*(model.generate(request()) for _ in range(12)))
            assert len(replies) == 12
            assert status_of(model, bad).breaker == "open"
            assert model.capacity == 2 * model.max_concurrency_per_endpoint
            hits_on_bad = await chats(bad)
            for _ in range(6):
                await model.generate(request())
            assert await chats(bad) == hits_on_bad  # an open breaker gets no traffic
        finally:
            await model.aclose()
        bad_stats = await stats(bad)
        ok = [await chats(b) for b in good]
    assert bad_stats["by_status"].get(str(status), 0) == hits_on_bad >= 2
    assert sum(ok) == 18


async def test_open_breaker_closes_after_a_successful_trial():
    async with standins(2) as (flaky, good):
        await set_faults(flaky, error_rate=1.0, error_status=503)
        model = pool([f"{flaky}/v1", f"{good}/v1"], breaker_failures=1, breaker_reset_s=0.3)
        try:
            for _ in range(3):
                await model.generate(request())
            assert status_of(model, flaky).breaker == "open"
            await set_faults(flaky)  # the server recovers
            await eventually(lambda: status_of(model, flaky).breaker == "half_open", 5,
                             "half-open")
            before = await chats(flaky)
            for _ in range(6):
                await model.generate(request())
            assert status_of(model, flaky).breaker == "closed"
            assert await chats(flaky) > before
        finally:
            await model.aclose()


async def test_timeouts_are_retried_on_another_endpoint():
    async with standins(2) as (hanging, good):
        await set_faults(hanging, timeout_rate=1.0, hang_s=20)
        model = pool([f"{hanging}/v1", f"{good}/v1"], timeout_s=1.0, breaker_failures=2,
                     breaker_reset_s=60)
        try:
            replies = await asyncio.gather(*(model.generate(request()) for _ in range(6)))
            hung = status_of(model, hanging)
            assert len(replies) == 6
            assert hung.failures >= 1 and hung.breaker == "open"
            assert status_of(model, good).failures == 0
        finally:
            await model.aclose()
        assert await chats(good) == 6


@pytest.mark.parametrize("body", ['{"choices": [', '{"unexpected": true}', "not json"])
async def test_malformed_json_is_transient_and_retried(body):
    async with running_app(broken_server(body)) as broken, running_standin() as good:
        model = pool([f"{broken}/v1", f"{good}/v1"], breaker_failures=2, breaker_reset_s=60)
        alone = pool([f"{broken}/v1"], max_retries=1)
        try:
            for _ in range(4):
                assert "</think>" in (await model.generate(request())).text
            assert status_of(model, broken).failures >= 1
            with pytest.raises(ModelUnavailableError, match="malformed") as err:
                await alone.generate(request())
            assert not isinstance(err.value, ModelRequestError)
        finally:
            await model.aclose()
            await alone.aclose()


async def test_permanent_errors_are_not_retried():
    async with standins(2, StandinConfig(reject_fields=["top_k"])) as bases:
        model = OpenAICompatSummaryModel([f"{b}/v1" for b in bases], model=MODEL,
                                         health_interval_s=None, max_retries=3)
        try:
            with pytest.raises(ModelRequestError):
                await model.generate(request())
            assert all(e.breaker == "closed" and e.failures == 0 for e in model.endpoints)
        finally:
            await model.aclose()
        assert sum([await chats(b) for b in bases]) == 1


async def test_down_endpoint_is_marked_unhealthy_avoided_then_used_again():
    port = free_port()
    dead = f"http://127.0.0.1:{port}"
    async with running_standin() as good:
        model = pool([f"{dead}/v1", f"{good}/v1"], health_interval_s=0.1, breaker_failures=100)
        try:
            await model.start()
            await eventually(lambda: not status_of(model, dead).healthy, 10, "unhealthy")
            assert model.capacity == model.max_concurrency_per_endpoint
            for _ in range(8):
                await model.generate(request())
            assert status_of(model, dead).requests == 0
            assert await chats(good) == 8
            async with running_standin(port=port):  # the endpoint comes back
                await eventually(lambda: status_of(model, dead).healthy, 10, "healthy again")
                replies = await asyncio.gather(*(model.generate(request()) for _ in range(8)))
                assert len(replies) == 8 and status_of(model, dead).requests >= 1
        finally:
            await model.aclose()


async def test_no_usable_endpoint_fails_fast_as_transient():
    model = pool([f"http://127.0.0.1:{free_port()}/v1"], health_interval_s=0.05, timeout_s=30)
    try:
        await model.start()
        await eventually(lambda: not model.endpoints[0].healthy, 10, "unhealthy")
        assert model.saturated and model.capacity == 0
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(ModelUnavailableError, match="no usable model endpoint"):
            await model.generate(request())
        assert loop.time() - started < 15  # not the 30 s timeout
    finally:
        await model.aclose()


# --------------------------------------------------------------------------- DNS


async def test_dns_entry_resolves_localhost_to_its_addresses():
    async with running_standin() as base:
        port = int(base.rsplit(":", 1)[1])
        entry = f"dns+http://localhost:{port}/v1"
        model = pool([entry], max_retries=3, health_interval_s=0.1)
        try:
            await model.start()
            urls = {e.base_url for e in model.endpoints}
            assert f"http://127.0.0.1:{port}/v1" in urls
            assert urls <= {f"http://127.0.0.1:{port}/v1", f"http://[::1]:{port}/v1"}
            assert all(e.source == entry for e in model.endpoints)
            for _ in range(4):  # ::1 (if any) is not served: retried on 127.0.0.1
                assert "</think>" in (await model.generate(request())).text
        finally:
            await model.aclose()
        assert await chats(base) >= 4


async def test_dns_entries_are_refreshed_added_and_drained_with_a_fake_resolver():
    answers = {"svc.test": ["10.0.0.1", "10.0.0.2"]}
    calls = []

    async def resolver(host, port):
        calls.append((host, port))
        answer = answers[host]
        if isinstance(answer, Exception):
            raise answer
        return answer

    model = pool(["dns+http://svc.test:8000/v1", "http://static:9000/v1"], resolver=resolver,
                 dns_refresh_s=3600)
    try:
        assert [e.base_url for e in model.endpoints] == ["http://static:9000/v1"]
        await model.start()
        assert calls == [("svc.test", 8000)]
        assert sorted(e.base_url for e in model.endpoints) == [
            "http://10.0.0.1:8000/v1", "http://10.0.0.2:8000/v1", "http://static:9000/v1"]
        assert model.capacity == 3 * model.max_concurrency_per_endpoint

        answers["svc.test"] = ["10.0.0.2", "fd00::3"]
        await model.refresh_dns()
        assert sorted(e.base_url for e in model.endpoints) == [
            "http://10.0.0.2:8000/v1", "http://[fd00::3]:8000/v1", "http://static:9000/v1"]

        answers["svc.test"] = OSError("SERVFAIL")  # a failed resolution keeps what is known
        await model.refresh_dns()
        assert len(model.endpoints) == 3
        answers["svc.test"] = []
        await model.refresh_dns()
        assert len(model.endpoints) == 3
    finally:
        await model.aclose()


async def test_dns_refresh_drains_a_vanished_endpoint_after_its_requests_finish():
    async with running_standin(StandinConfig(ttft_ms=600)) as first:
        port = int(first.rsplit(":", 1)[1])
        # all of 127.0.0.0/8 is loopback on Linux
        second_cm = running_standin(StandinConfig(ttft_ms=0), host="127.0.0.2", port=port)
        second = await second_cm.__aenter__()
        try:
            answers = ["127.0.0.1"]

            async def resolver(host, port):
                return list(answers)

            model = pool([f"dns+http://pool.test:{port}/v1"], resolver=resolver, dns_refresh_s=0.1)
            try:
                slow = asyncio.create_task(model.generate(request()))
                await eventually(lambda: model.in_flight == 1, 5, "request in flight")
                answers[:] = ["127.0.0.2"]  # the first pod goes away, a new one comes
                await eventually(lambda: any(e.draining for e in model.endpoints), 5, "draining")
                states = {e.base_url: e for e in model.endpoints}
                assert states[f"{first}/v1"].draining and states[f"{first}/v1"].outstanding == 1
                for _ in range(3):  # new requests go to the new pod only
                    await model.generate(request())
                assert (await slow).text  # the drained pod finishes its request
                assert [e.base_url for e in model.endpoints] == [f"{second}/v1"]
            finally:
                await model.aclose()
            assert await chats(first) == 1 and await chats(second) == 3
        finally:
            await second_cm.__aexit__(None, None, None)


# --------------------------------------------------------------------------- tokens


async def test_count_tokens_uses_tokenize_and_is_none_when_unsupported():
    messages = request().prompt.messages()
    expected = count_chat_tokens(messages)
    async with running_app(broken_server("{}")) as plain, running_standin() as vllm:
        both = pool([f"{plain}/v1", f"{vllm}/v1"])
        none = pool([f"{plain}/v1"])
        try:
            assert await both.count_tokens(messages) == expected > 300
            assert await both.count_tokens(messages) == expected
            assert await none.count_tokens(messages) is None
            assert await none.count_tokens(messages) is None  # remembered: no request sent
        finally:
            await both.aclose()
            await none.aclose()
        assert (await stats(vllm))["by_endpoint"].get("/tokenize") == 2
