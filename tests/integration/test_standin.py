"""Integration tests of the model stand-in over real HTTP (httpx against ``running_standin``)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from streamer.devtools.standin import (
    DEFAULT_MODEL,
    REPLY_SHAPES,
    FaultConfig,
    MalformedKind,
    ReplyShape,
    StandinConfig,
    count_tokens,
    running_standin,
)
from streamer.domain.baseline import BASELINE_HEADER
from streamer.domain.prompt import build_update_prompt
from streamer.domain.triples import Triple

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]

MOVIES_QUERY = "Please recommend some movies to me."


def update_messages(
    past: str | None = None, triples: Sequence[tuple[str, str, str]] | None = None
) -> list[dict[str, str]]:
    """The AlignXplore+ streaming messages, from the product's own (byte-exact) prompt builder."""
    if triples is None:
        triples = scifi_triples(3)
    rows = [Triple(q, c, r, f"e{i}") for i, (q, c, r) in enumerate(triples)]
    return build_update_prompt(past, rows).messages()


def scifi_triples(n: int) -> list[tuple[str, str, str]]:
    return [
        (
            MOVIES_QUERY,
            f"Title: Orbit Station {i} (1999), Genres: Sci-Fi|Thriller",
            f"Title: Harbor Lights {i} (2004), Genres: Drama|Romance",
        )
        for i in range(n)
    ]


def chat_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": DEFAULT_MODEL,
        "messages": update_messages(),
        "max_tokens": 4096,
        "temperature": 0.6,
        "top_p": 0.95,
        "top_k": 20,
        "n": 1,
        "seed": 42,
    }
    body.update(overrides)
    return body


async def chat(client: httpx.AsyncClient, **overrides: Any) -> httpx.Response:
    return await client.post("/v1/chat/completions", json=chat_body(**overrides))


def client_for(base_url: str, timeout_s: float = 20.0) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base_url, timeout=timeout_s)


def content_of(response: httpx.Response) -> str:
    return response.json()["choices"][0]["message"]["content"]


async def test_health_and_models_list() -> None:
    async with running_standin(StandinConfig()) as url, client_for(url) as client:
        assert url.startswith("http://127.0.0.1:")
        assert (await client.get("/health")).status_code == 200
        models = (await client.get("/v1/models")).json()
    assert models["object"] == "list"
    assert [m["id"] for m in models["data"]] == ["VanillaH1/AlignXplore-Plus"]
    assert models["data"][0]["max_model_len"] == 16384


async def test_model_id_is_configurable() -> None:
    async with running_standin(StandinConfig(model="local/other")) as url, client_for(url) as c:
        models = (await c.get("/v1/models")).json()
        ok = await chat(c, model="local/other")
    assert [m["id"] for m in models["data"]] == ["local/other"]
    assert ok.status_code == 200 and ok.json()["model"] == "local/other"


async def test_chat_completion_answers_an_update_prompt_in_model_format() -> None:
    async with running_standin(StandinConfig()) as url, client_for(url) as client:
        response = await chat(client)
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert isinstance(body["created"], int)
    assert body["model"] == DEFAULT_MODEL
    choice = body["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["role"] == "assistant"
    content = choice["message"]["content"]
    assert content.startswith("<think>\n")
    assert content.count("<think>") == 1 and content.count("</think>") == 1
    reasoning, tail = content.split("</think>")
    assert "read 3 interaction triples" in reasoning
    assert tail.startswith("\n\n")
    summary = tail.strip()
    assert summary.startswith(BASELINE_HEADER)
    assert "sci-fi" in summary and "romance" in summary
    usage = body["usage"]
    assert usage["completion_tokens"] == count_tokens(content)
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["prompt_tokens"] > count_tokens(update_messages(None, scifi_triples(3))[1]["content"])


async def test_past_summary_from_the_prompt_is_combined_with_new_triples() -> None:
    async with running_standin(StandinConfig()) as url, client_for(url) as client:
        first = content_of(await chat(client)).split("</think>")[-1].strip()
        second_reply = await chat(client, messages=update_messages(first, scifi_triples(2)))
    second = content_of(second_reply)
    assert "The past preference summary was provided." in second
    assert "read 2 interaction triples" in second
    assert "Built from 5 interactions so far." in second


async def test_empty_history_keeps_the_past_summary() -> None:
    past = "Enjoys slow cinema and Nordic noir."
    async with running_standin(StandinConfig()) as url, client_for(url) as client:
        response = await chat(client, messages=update_messages(past, []))
    content = content_of(response)
    assert "read 0 interaction triples" in content
    assert content.split("</think>")[-1].strip() == past


async def test_unrecognised_prompt_gets_a_generic_well_formed_answer() -> None:
    async with running_standin(StandinConfig()) as url, client_for(url) as client:
        response = await chat(client, messages=[{"role": "user", "content": "Hello there"}])
    content = content_of(response)
    assert response.status_code == 200
    assert content.count("</think>") == 1
    assert content.split("</think>")[-1].strip()


async def test_tokenize_prompt_and_messages_match_chat_usage() -> None:
    messages = update_messages()
    async with running_standin(StandinConfig()) as url, client_for(url) as client:
        by_prompt = (
            await client.post("/tokenize", json={"model": DEFAULT_MODEL, "prompt": "Hello world"})
        ).json()
        by_messages = (
            await client.post(
                "/tokenize",
                json={
                    "model": DEFAULT_MODEL,
                    "messages": messages,
                    "add_generation_prompt": True,
                },
            )
        ).json()
        usage = (await chat(client, messages=messages)).json()["usage"]
        unknown = await client.post("/tokenize", json={"model": "nope", "prompt": "x"})
    assert by_prompt["count"] == len(by_prompt["tokens"]) == count_tokens("Hello world") == 2
    assert by_prompt["max_model_len"] == 16384
    assert all(isinstance(t, int) for t in by_messages["tokens"])
    assert by_messages["count"] == usage["prompt_tokens"]
    assert unknown.status_code == 404


async def test_unknown_model_is_a_404_with_openai_error_json() -> None:
    async with running_standin(StandinConfig()) as url, client_for(url) as client:
        response = await chat(client, model="someone/else")
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["type"] == "NotFoundError"
    assert error["code"] == 404
    assert "someone/else" in error["message"]


async def test_prompt_plus_max_tokens_over_context_is_a_400() -> None:
    config = StandinConfig(max_model_len=1024)
    async with running_standin(config) as url, client_for(url) as client:
        too_long = await chat(client, max_tokens=1000)
        fits = await chat(client, max_tokens=200)
        huge_prompt = await chat(
            client, max_tokens=None, messages=update_messages(None, scifi_triples(60))
        )
    assert too_long.status_code == 400
    error = too_long.json()["error"]
    assert error["type"] == "BadRequestError" and error["code"] == 400
    assert "maximum context length is 1024 tokens" in error["message"]
    assert fits.status_code == 200
    assert huge_prompt.status_code == 400


async def test_small_max_tokens_truncates_with_finish_reason_length() -> None:
    async with running_standin(StandinConfig()) as url, client_for(url) as client:
        response = await chat(client, max_tokens=8)
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "length"
    assert response.json()["usage"]["completion_tokens"] <= 8
    assert "</think>" not in choice["message"]["content"]


@pytest.mark.parametrize(
    "kind", ["no_think_close", "double_think_close", "empty_summary", "truncated"]
)
async def test_each_malformed_kind(kind: MalformedKind) -> None:
    config = StandinConfig(faults=FaultConfig(malformed_rate=1.0, malformed_kind=kind))
    async with running_standin(config) as url, client_for(url) as client:
        response = await chat(client)
    assert response.status_code == 200
    choice = response.json()["choices"][0]
    content = choice["message"]["content"]
    closes = content.count("</think>")
    if kind == "no_think_close":
        assert closes == 0 and choice["finish_reason"] == "stop"
    elif kind == "double_think_close":
        assert closes == 2
    elif kind == "empty_summary":
        assert closes == 1 and content.split("</think>")[-1].strip() == ""
    else:
        assert closes == 0 and choice["finish_reason"] == "length"
        assert content.startswith("<think>\n")


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_error_rate_one_answers_the_configured_status(status: int) -> None:
    async with running_standin(StandinConfig()) as url, client_for(url) as client:
        set_reply = await client.post(
            "/admin/faults", json={"error_rate": 1.0, "error_status": status}
        )
        current = (await client.get("/admin/faults")).json()
        failed = await chat(client)
        await client.post("/admin/faults", json={})
        healed = await chat(client)
    assert set_reply.status_code == 200
    assert current["error_rate"] == 1.0 and current["error_status"] == status
    assert failed.status_code == status
    assert failed.json()["error"]["code"] == status
    assert healed.status_code == 200


async def test_fail_next_fails_exactly_the_next_requests() -> None:
    config = StandinConfig(faults=FaultConfig(fail_next=2, error_status=500))
    async with running_standin(config) as url, client_for(url) as client:
        statuses = [(await chat(client)).status_code for _ in range(3)]
        remaining = (await client.get("/admin/faults")).json()["fail_next"]
        await client.post("/admin/faults", json={"fail_next": 1, "error_status": 429})
        statuses += [(await chat(client)).status_code for _ in range(2)]
    assert statuses == [500, 500, 200, 429, 200]
    assert remaining == 0


async def test_invalid_fault_config_is_rejected() -> None:
    async with running_standin(StandinConfig()) as url, client_for(url) as client:
        bad = await client.post("/admin/faults", json={"error_rate": 2, "error_status": 418})
        unknown = await client.post("/admin/faults", json={"eror_rate": 0.5})
        current = (await client.get("/admin/faults")).json()
    assert bad.status_code == 400 and "error" in bad.json()
    assert unknown.status_code == 400
    assert current["error_rate"] == 0.0


async def test_seeded_error_pattern_is_reproducible() -> None:
    async def pattern() -> list[int]:
        config = StandinConfig(seed=7, faults=FaultConfig(error_rate=0.5))
        async with running_standin(config) as url, client_for(url) as client:
            return [(await chat(client)).status_code for _ in range(16)]

    first, second = await pattern(), await pattern()
    assert first == second
    assert set(first) == {200, 503}


async def test_timeout_rate_hangs_then_drops_the_connection() -> None:
    config = StandinConfig(faults=FaultConfig(timeout_rate=1.0, hang_s=0.3))
    async with running_standin(config) as url, client_for(url) as client:
        started = time.monotonic()
        with pytest.raises(httpx.RemoteProtocolError):
            await chat(client)
        elapsed = time.monotonic() - started
        stats = (await client.get("/admin/stats")).json()
    assert elapsed >= 0.25
    assert stats["dropped_connections"] == 1
    assert stats["by_status"] == {"dropped": 1}


async def test_client_giving_up_cancels_the_request_and_shutdown_is_quick() -> None:
    config = StandinConfig(faults=FaultConfig(timeout_rate=1.0, hang_s=60.0))
    started = time.monotonic()
    async with running_standin(config) as url:
        async with client_for(url, timeout_s=0.3) as client:
            with pytest.raises(httpx.ReadTimeout):
                await chat(client)
        async with client_for(url) as client:
            for _ in range(50):
                stats = (await client.get("/admin/stats")).json()
                if stats["by_status"]:
                    break
                await asyncio.sleep(0.05)
    assert stats["by_status"] == {"client_closed": 1}
    assert time.monotonic() - started < 10


async def test_concurrency_limit_is_respected_and_observed_in_stats() -> None:
    config = StandinConfig(max_concurrency=2, ttft_ms=150)
    async with running_standin(config) as url, client_for(url) as client:
        started = time.monotonic()
        responses = await asyncio.gather(*(chat(client) for _ in range(6)))
        elapsed = time.monotonic() - started
        stats = (await client.get("/admin/stats")).json()
    assert [r.status_code for r in responses] == [200] * 6
    assert stats["max_in_flight"] == 2
    assert stats["max_queued"] >= 1
    assert stats["in_flight"] == 0 and stats["queued"] == 0
    assert stats["by_endpoint"]["/v1/chat/completions"] == 6
    assert elapsed >= 0.4  # three waves of 150 ms, with margin


async def test_full_queue_answers_429() -> None:
    config = StandinConfig(max_concurrency=1, max_queue=1, ttft_ms=300)
    async with running_standin(config) as url, client_for(url) as client:
        responses = await asyncio.gather(*(chat(client) for _ in range(4)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) >= 2
    assert 429 in statuses


async def test_latency_grows_with_completion_tokens() -> None:
    config = StandinConfig(ttft_ms=20, per_token_ms=10)
    async with running_standin(config) as url, client_for(url) as client:
        started = time.monotonic()
        short = await chat(client, max_tokens=5)
        short_s = time.monotonic() - started
        started = time.monotonic()
        long = await chat(client)
        long_s = time.monotonic() - started
    short_tokens = short.json()["usage"]["completion_tokens"]
    long_tokens = long.json()["usage"]["completion_tokens"]
    assert long_tokens > short_tokens + 50
    assert long_s > short_s + 0.25


async def test_stats_count_by_status_and_endpoint_and_reset() -> None:
    async with running_standin(StandinConfig()) as url, client_for(url) as client:
        await client.get("/v1/models")
        await chat(client)
        await chat(client, model="missing")
        stats = (await client.get("/admin/stats")).json()
        reset = (await client.post("/admin/reset")).json()
    assert stats["total_requests"] == 3
    assert stats["by_status"] == {"200": 2, "404": 1}
    assert stats["by_endpoint"] == {"/v1/chat/completions": 2, "/v1/models": 1}
    assert reset["total_requests"] == 0 and reset["by_status"] == {}


def test_cli_starts_announces_and_stops_on_sigterm() -> None:
    argv = [sys.executable, "-m", "streamer.devtools.standin", "--host", "127.0.0.1", "--port", "0"]
    argv += ["--model", "cli/model", "--seed", "3", "--ttft-ms", "1", "--max-concurrency", "4"]
    with subprocess.Popen(
        argv,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    ) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            assert line.startswith("stand-in listening on http://127.0.0.1:")
            base_url = line.rsplit(" ", 1)[-1]
            models = httpx.get(f"{base_url}/v1/models", timeout=10).json()
            assert models["data"][0]["id"] == "cli/model"
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=15) == 0
        finally:
            if proc.poll() is None:
                proc.kill()


# --------------------------------------------------------------------------- engine dialects


def message_of(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["message"]


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text -> {sample name with labels: value}; checks every sample has a TYPE."""
    typed = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            base = name.split("{", 1)[0]
            assert base in typed or base.removesuffix("_total") in typed, line
            samples[name] = float(value)
    return samples


def assert_summary_is_the_baseline(text: str) -> None:
    assert "</think>" not in text and "<think>" not in text
    assert text.strip().startswith(BASELINE_HEADER)
    assert "sci-fi" in text


async def assert_not_served(client: httpx.AsyncClient, *paths: str) -> None:
    for path in paths:
        got = await (client.post(path, json={"messages": update_messages()})
                     if path == "/apply-template" else client.get(path))
        assert got.status_code == 404, path


async def test_inline_shape_keeps_the_thinking_in_content_and_serves_vllm_metrics() -> None:
    async with running_standin(StandinConfig(reply_shape="inline")) as url, client_for(url) as c:
        message = message_of(await chat(c))
        metrics = await c.get("/metrics")
        await assert_not_served(c, "/apply-template", "/slots")
    assert message["content"].startswith("<think>\n") and "</think>" in message["content"]
    assert message["reasoning_content"] is None and "reasoning" not in message
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    samples = parse_metrics(metrics.text)
    label = f'{{model_name="{DEFAULT_MODEL}"}}'
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting",
                 "vllm:kv_cache_usage_perc", "vllm:prefix_cache_hits_total"):
        assert samples[name + label] == 0.0, name
    assert samples["vllm:prefix_cache_queries_total" + label] > 0  # the prompt tokens above


async def test_vllm_reasoning_shape_puts_the_thinking_in_reasoning_only() -> None:
    config = StandinConfig(reply_shape="vllm-reasoning", max_model_len=8192)
    async with running_standin(config) as url, client_for(url) as client:
        ok = await chat(client)
        await client.post("/admin/faults", json={"malformed_rate": 1.0,
                                                 "malformed_kind": "no_think_close"})
        unclosed = message_of(await chat(client))
        await client.post("/admin/faults", json={})
        models = (await client.get("/v1/models")).json()
        counted = (await client.post("/tokenize", json={"model": DEFAULT_MODEL,
                                                        "messages": update_messages()})).json()
        wrong = await chat(client, model="someone/else")
        wrong_tokenize = await client.post("/tokenize", json={"model": "x", "prompt": "hi"})
        metrics = parse_metrics((await client.get("/metrics")).text)
        await assert_not_served(client, "/apply-template", "/slots")
    message = message_of(ok)
    assert "reasoning_content" not in message
    assert "read 3 interaction triples" in message["reasoning"]
    assert message["reasoning"].startswith("\n")  # vLLM keeps the text around the tags verbatim
    assert message["content"].startswith("\n\n")
    assert_summary_is_the_baseline(message["content"])
    assert unclosed["content"] is None and BASELINE_HEADER in unclosed["reasoning"]
    card = models["data"][0]
    assert card["owned_by"] == "vllm" and card["max_model_len"] == 8192
    assert set(counted) >= {"count", "max_model_len", "tokens"}
    assert counted["count"] == ok.json()["usage"]["prompt_tokens"]
    assert counted["max_model_len"] == 8192
    assert wrong.status_code == 404 and wrong.json()["error"]["type"] == "NotFoundError"
    assert wrong_tokenize.status_code == 404
    assert f'vllm:num_requests_running{{model_name="{DEFAULT_MODEL}"}}' in metrics


async def test_vllm_legacy_shape_puts_the_thinking_in_reasoning_content() -> None:
    async with running_standin(StandinConfig(reply_shape="vllm-legacy")) as url, \
            client_for(url) as client:
        message = message_of(await chat(client))
        card = (await client.get("/v1/models")).json()["data"][0]
        wrong = await chat(client, model="someone/else")
    assert "reasoning" not in message
    assert "read 3 interaction triples" in message["reasoning_content"]
    assert_summary_is_the_baseline(message["content"])
    assert card["owned_by"] == "vllm" and card["max_model_len"] == 16384
    assert wrong.status_code == 404


async def test_explicit_reasoning_parser_overrides_the_shape_field() -> None:
    config = StandinConfig(reply_shape="vllm-legacy", reasoning_parser="both")
    async with running_standin(config) as url, client_for(url) as client:
        message = message_of(await chat(client))
    assert message["reasoning"] == message["reasoning_content"]
    assert "read 3 interaction triples" in message["reasoning"]
    assert_summary_is_the_baseline(message["content"])


async def test_sglang_shape() -> None:
    async with running_standin(StandinConfig(reply_shape="sglang")) as url, \
            client_for(url) as client:
        split = await chat(client)
        inline = message_of(await chat(client, separate_reasoning=False))
        models = (await client.get("/v1/models")).json()
        by_prompt = await client.post("/tokenize", json={"prompt": "Hello world"})
        by_messages = await client.post("/tokenize", json={"messages": update_messages()})
        wrong = await chat(client, model="someone/else")
        health = await client.get("/health")
        metrics = parse_metrics((await client.get("/metrics")).text)
        await assert_not_served(client, "/apply-template", "/slots")
    message = message_of(split)
    assert "read 3 interaction triples" in message["reasoning_content"]
    assert "reasoning" not in message
    assert_summary_is_the_baseline(message["content"])
    assert inline["content"].startswith("<think>\n") and "</think>" in inline["content"]
    assert inline["reasoning_content"] is None
    card = models["data"][0]
    assert card["owned_by"] == "sglang" and card["root"] == DEFAULT_MODEL
    assert card["max_model_len"] == 16384
    assert by_prompt.status_code == 200
    assert by_prompt.json() == {"tokens": by_prompt.json()["tokens"], "count": 2,
                                "max_model_len": 16384}
    assert len(by_prompt.json()["tokens"]) == count_tokens("Hello world")
    assert by_messages.status_code == 400
    error = by_messages.json()["error"]
    assert error["code"] == 400 and error["param"] == "messages" and error["message"]
    assert wrong.status_code == 404
    assert health.status_code == 200
    label = f'{{model_name="{DEFAULT_MODEL}"}}'
    for name in ("sglang:num_running_reqs", "sglang:num_queue_reqs", "sglang:token_usage"):
        assert metrics[name + label] == 0.0, name
    assert not any(name.startswith("vllm:") for name in metrics)


async def test_llamacpp_shape() -> None:
    config = StandinConfig(reply_shape="llamacpp", max_model_len=4096, max_concurrency=2)
    async with running_standin(config) as url, client_for(url) as client:
        health = await client.get("/health")
        models = (await client.get("/v1/models")).json()
        split = await chat(client, max_tokens=1024)
        inline = message_of(await chat(client, max_tokens=1024, reasoning_format="none"))
        legacy = message_of(await chat(client, max_tokens=1024,
                                       reasoning_format="deepseek-legacy"))
        any_name = await chat(client, max_tokens=1024, model="whatever-the-client-thinks")
        template = await client.post("/apply-template", json={"messages": update_messages()})
        tokens = await client.post("/tokenize", json={"content": template.json()["prompt"]})
        hello = (await client.post("/tokenize", json={"content": "Hello world"})).json()
        pieces = (await client.post("/tokenize", json={"content": "Hello world",
                                                       "with_pieces": True})).json()
        vllm_style = await client.post("/tokenize", json={"messages": update_messages()})
        slots = (await client.get("/slots")).json()
        metrics = parse_metrics((await client.get("/metrics")).text)
    assert health.status_code == 200 and health.json() == {"status": "ok"}

    assert models["object"] == "list" and models["models"][0]["name"] == DEFAULT_MODEL
    card = models["data"][0]
    assert card["id"] == DEFAULT_MODEL and card["aliases"] == [DEFAULT_MODEL]
    assert card["object"] == "model" and card["owned_by"] == "llamacpp"
    assert isinstance(card["created"], int)
    assert card["meta"]["n_ctx"] == 4096
    assert card["meta"]["n_ctx_train"] >= 4096 and card["meta"]["n_vocab"] > 151643
    assert "max_model_len" not in card

    body = split.json()
    message = message_of(split)
    assert "read 3 interaction triples" in message["reasoning_content"]
    assert not message["reasoning_content"].startswith("\n")  # llama.cpp strips it
    assert_summary_is_the_baseline(message["content"])
    assert body["system_fingerprint"].startswith("b")
    timings = body["timings"]
    assert timings["prompt_n"] == body["usage"]["prompt_tokens"]
    assert timings["predicted_n"] == body["usage"]["completion_tokens"]
    assert {"prompt_ms", "predicted_ms", "predicted_per_second"} <= set(timings)
    assert inline["content"].startswith("<think>\n") and "reasoning_content" not in inline
    assert "</think>" in legacy["content"] and legacy["reasoning_content"]
    assert any_name.status_code == 200

    assert template.status_code == 200
    prompt = template.json()["prompt"]
    assert prompt.startswith("<|im_start|>system\n") and prompt.endswith("<|im_start|>assistant\n")
    assert tokens.status_code == 200 and list(tokens.json()) == ["tokens"]
    assert len(tokens.json()["tokens"]) == body["usage"]["prompt_tokens"]
    assert hello == {"tokens": hello["tokens"]} and len(hello["tokens"]) == 2
    assert [p["id"] for p in pieces["tokens"]] == hello["tokens"]
    assert vllm_style.status_code == 200 and vllm_style.json() == {"tokens": []}

    assert [s["id"] for s in slots] == [0, 1]
    assert all(s["n_ctx"] == 4096 and s["is_processing"] is False for s in slots)
    assert metrics["llamacpp:requests_processing"] == 0
    assert metrics["llamacpp:requests_deferred"] == 0


@pytest.mark.parametrize("shape", REPLY_SHAPES)
async def test_reject_fields_answers_400_naming_the_field(shape: ReplyShape) -> None:
    config = StandinConfig(reply_shape=shape, reject_fields=["min_p", "repetition_penalty"])
    async with running_standin(config) as url, client_for(url) as client:
        rejected = await chat(client, min_p=0.05)
        other = await chat(client, repetition_penalty=1.05, top_k=20)
        accepted = await chat(client, presence_penalty=0.5)
        last = (await client.get("/admin/last")).json()
    assert rejected.status_code == 400
    error = rejected.json()["error"]
    assert error["message"] == "Unrecognized request argument supplied: min_p"
    assert error["param"] == "min_p" and error["code"] == 400
    assert other.status_code == 400 and other.json()["error"]["param"] == "repetition_penalty"
    assert accepted.status_code == 200
    assert last["request"] == chat_body(presence_penalty=0.5)  # the full body, sampling included
    assert last["request"]["top_k"] == 20 and last["request"]["temperature"] == 0.6


@pytest.mark.parametrize(
    ("shape", "field"),
    [("inline", None), ("vllm-reasoning", "reasoning"), ("vllm-legacy", "reasoning_content"),
     ("sglang", "reasoning_content"), ("llamacpp", "reasoning_content")],
)
async def test_enable_thinking_false_gives_an_empty_think_block(
    shape: ReplyShape, field: str | None
) -> None:
    off = {"chat_template_kwargs": {"enable_thinking": False}}
    async with running_standin(StandinConfig(reply_shape=shape)) as url, \
            client_for(url) as client:
        thinking = await chat(client)
        quiet = await chat(client, **off)
    message = message_of(quiet)
    if field is None:
        assert message["content"].startswith("<think>\n\n</think>\n\n")
        assert_summary_is_the_baseline(message["content"].split("</think>", 1)[1])
    else:
        if shape == "llamacpp":  # llama.cpp leaves an empty reasoning_content out
            assert field not in message
        else:
            assert message[field] == ""
        assert_summary_is_the_baseline(message["content"])
    # the template prefills the empty block, so the prompt is a few tokens longer
    assert quiet.json()["usage"]["prompt_tokens"] > thinking.json()["usage"]["prompt_tokens"]


async def test_tokenize_honours_enable_thinking_like_the_chat_usage() -> None:
    off = {"chat_template_kwargs": {"enable_thinking": False}}
    async with running_standin(StandinConfig()) as url, client_for(url) as client:
        usage = (await chat(client, **off)).json()["usage"]
        counted = (await client.post("/tokenize",
                                     json={"messages": update_messages(), **off})).json()
    assert counted["count"] == usage["prompt_tokens"]


@pytest.mark.parametrize(
    ("shape", "running", "waiting", "usage"),
    [
        ("inline", "vllm:num_requests_running", "vllm:num_requests_waiting",
         "vllm:kv_cache_usage_perc"),
        ("vllm-reasoning", "vllm:num_requests_running", "vllm:num_requests_waiting",
         "vllm:kv_cache_usage_perc"),
        ("sglang", "sglang:num_running_reqs", "sglang:num_queue_reqs", "sglang:token_usage"),
        ("llamacpp", "llamacpp:requests_processing", "llamacpp:requests_deferred", None),
    ],
)
async def test_metrics_follow_the_concurrency_limiter(
    shape: ReplyShape, running: str, waiting: str, usage: str | None
) -> None:
    """Two requests on one slot: one generating, one queued, then neither once both clients
    give up (polled until the state is reached; nothing depends on timing)."""
    label = "" if shape == "llamacpp" else f'{{model_name="{DEFAULT_MODEL}"}}'
    config = StandinConfig(reply_shape=shape, max_concurrency=1, ttft_ms=60_000)

    async def gauges(client: httpx.AsyncClient) -> tuple[float, float]:
        samples = parse_metrics((await client.get("/metrics")).text)
        return samples[running + label], samples[waiting + label]

    async def until(client: httpx.AsyncClient, expected: tuple[float, float]) -> None:
        for _ in range(400):
            if await gauges(client) == expected:
                return
            await asyncio.sleep(0.025)
        raise AssertionError(f"gauges never reached {expected}: {await gauges(client)}")

    async with running_standin(config) as url, client_for(url) as probe:
        async with client_for(url, timeout_s=120) as busy:
            calls = [asyncio.create_task(chat(busy)) for _ in range(2)]
            await until(probe, (1.0, 1.0))
            samples = parse_metrics((await probe.get("/metrics")).text)
            slots = (await probe.get("/slots")).json() if shape == "llamacpp" else None
            for call in calls:
                call.cancel()
            await asyncio.gather(*calls, return_exceptions=True)
        await until(probe, (0.0, 0.0))
    if usage is not None:
        assert samples[usage + label] == 1.0
    if slots is not None:
        assert slots == [{"id": 0, "id_task": -1, "n_ctx": 16384, "speculative": False,
                          "is_processing": True}]


def test_cli_reply_shape_and_reject_fields() -> None:
    argv = [sys.executable, "-m", "streamer.devtools.standin", "--host", "127.0.0.1", "--port", "0",
            "--reply-shape", "llamacpp", "--reject-fields", "min_p, repetition_penalty"]
    with subprocess.Popen(
        argv,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    ) as proc:
        try:
            assert proc.stdout is not None
            base_url = proc.stdout.readline().strip().rsplit(" ", 1)[-1]
            assert httpx.get(f"{base_url}/health", timeout=10).json() == {"status": "ok"}
            rejected = httpx.post(f"{base_url}/v1/chat/completions", timeout=10,
                                  json=chat_body(repetition_penalty=1.1))
            assert rejected.status_code == 400
            assert rejected.json()["error"]["param"] == "repetition_penalty"
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=15) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
