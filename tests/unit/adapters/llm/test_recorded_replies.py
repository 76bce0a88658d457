"""Real servers' chat replies (``tests/fixtures/replies/``) through the client and the parser.

Each chat-completion fixture's response body is served by ``httpx.MockTransport`` to
:class:`OpenAICompatSummaryModel`, and the reply is parsed as :class:`ProfileUpdater` does
(``parse_summary(reply.text, max_chars=..., finish_reason=..., reasoning=..., thinking=...)``
with the update policy's defaults).  The ``llamacpp-*`` fixtures were recorded from a real
llama.cpp server (``deploy/tools/record_replies.py``); the ``vllm-*`` and ``sglang-*`` ones are
transcribed from those servers' sources (their ``provenance`` says so).  Expected summaries are
derived from each fixture's own body, never written here.
"""

from __future__ import annotations

import json
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest

from streamer.adapters.llm.client import OpenAICompatSummaryModel
from streamer.domain.output import OutputRejected, parse_summary
from streamer.domain.prompt import build_update_prompt
from streamer.domain.triples import Triple
from streamer.ports import ModelReply, UpdateRequest
from streamer.services.updater import UpdatePolicy

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).resolve().parents[3] / "fixtures" / "replies"
BASE_URL = "http://model-server:8000/v1"
CHAT_PATH = "/v1/chat/completions"

# the interactions the fixtures' requests were made from (record_replies.py uses the same)
PREVIOUS = "Likes hiking."
TRIPLES = (
    Triple("running shoes", "trail shoe", "road shoe", "e1"),
    Triple("rain jacket", "packable shell", "heavy parka", "e2"),
)

Expect = tuple[Literal["split", "inline"], None] | tuple[Literal["rejected"], str]
SPLIT: Expect = ("split", None)
INLINE: Expect = ("inline", None)


def rejected(code: str) -> Expect:
    return ("rejected", code)


EXPECTED: dict[str, Expect] = {
    # recorded: llama.cpp server + SmolLM2-135M (a non-reasoning model)
    "llamacpp-chat-stop": rejected("no_think_close"),  # no thinking at all: accepted if optional
    "llamacpp-chat-length": rejected("truncated"),
    "llamacpp-thinking-split": SPLIT,  # reasoning_content, no </think> in content
    "llamacpp-thinking-inline": INLINE,  # request "reasoning_format": "none"
    "llamacpp-thinking-stock-template": INLINE,  # ChatML template: content-only parser
    # transcribed: vLLM and SGLang with Qwen3
    "vllm-0.11.0-reasoning-content": SPLIT,
    "vllm-0.11.1-reasoning-and-alias": SPLIT,
    "vllm-0.16-reasoning-only": SPLIT,
    "vllm-inline-no-parser": INLINE,
    "vllm-qwen3-unclosed-length": rejected("truncated"),
    "vllm-qwen3-unclosed-stop": rejected("empty_summary"),  # content null, all in reasoning
    "vllm-abort": rejected("not_stopped"),
    "sglang-qwen3-reasoning-content": SPLIT,
}
"""Every chat-completion fixture, with what the updater must make of it (thinking required)."""

NO_THINKING_ACCEPTED_WHEN_OPTIONAL = {"llamacpp-chat-stop"}


@cache
def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def all_fixtures() -> list[str]:
    return sorted(p.stem for p in FIXTURES.glob("*.json"))


def chat_fixtures() -> list[str]:
    return [n for n in all_fixtures() if load(n)["request"]["path"] == CHAT_PATH]


def message_of(name: str) -> dict[str, Any]:
    return load(name)["response"]["choices"][0]["message"]


def reasoning_field(message: dict[str, Any]) -> str | None:
    """The split-out thinking, read the way the servers document it (newest name first)."""
    for key in ("reasoning", "reasoning_content"):
        if isinstance(message.get(key), str) and message[key].strip():
            return message[key]
    return None


def serving(name: str, seen: list[httpx.Request]):
    """A handler that answers the chat call with the fixture's body and anything else (model
    list, metrics, health...) with 404, which the client reads as "no such route"."""
    fixture = load(name)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.method == "POST" and request.url.path == CHAT_PATH:
            return httpx.Response(fixture["status"], json=fixture["response"])
        return httpx.Response(404, json={"error": "not found"})

    return handler


async def generate(name: str) -> tuple[ModelReply, list[httpx.Request]]:
    seen: list[httpx.Request] = []
    model = OpenAICompatSummaryModel(
        [BASE_URL], model=load(name)["request"]["body"]["model"],
        transport=httpx.MockTransport(serving(name, seen)), health_interval_s=None,
        backoff_base_s=0.0, backoff_max_s=0.0, timeout_s=5.0, max_retries=0)
    try:
        request = UpdateRequest(build_update_prompt(PREVIOUS, TRIPLES), PREVIOUS, TRIPLES)
        reply = await model.generate(request)
    finally:
        await model.aclose()
    return reply, seen


def summarize(reply: ModelReply, policy: UpdatePolicy) -> str:
    """What ``ProfileUpdater._generate`` does with a reply."""
    return parse_summary(
        reply.text,
        max_chars=policy.max_summary_chars,
        finish_reason=reply.finish_reason,
        reasoning=reply.reasoning,
        thinking=policy.reasoning,
    )


# --------------------------------------------------------------------------- the fixtures


def test_every_chat_fixture_has_an_expectation():
    assert sorted(EXPECTED) == chat_fixtures()


@pytest.mark.parametrize("name", all_fixtures())
def test_fixture_shape_and_provenance(name):
    fixture = load(name)
    assert set(fixture) == {"provenance", "request", "status", "response"}
    assert fixture["status"] == 200
    assert fixture["request"]["method"] in ("GET", "POST")
    assert fixture["request"]["path"].startswith("/")
    provenance = fixture["provenance"]
    if name.startswith("llamacpp-"):
        assert provenance.startswith("recorded from xllamacpp ")
        assert "deploy/tools/record_replies.py" in provenance
    else:  # no GPU here: vLLM and SGLang replies cannot be recorded, only transcribed
        assert provenance.startswith("transcribed from ") and "not recorded" in provenance


@pytest.mark.parametrize("name", chat_fixtures())
def test_chat_fixture_requests_are_the_production_prompt(name):
    body = load(name)["request"]["body"]
    assert body["messages"] == build_update_prompt(PREVIOUS, TRIPLES).messages()
    assert body["chat_template_kwargs"] == {"enable_thinking": True}


# --------------------------------------------------------------------------- client + parser


@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_reply_is_read_and_parsed_as_the_updater_does(name):
    reply, seen = await generate(name)
    response = load(name)["response"]
    message = message_of(name)
    content = message["content"]

    assert [r.url.path for r in seen if r.method == "POST"] == [CHAT_PATH]
    assert reply.text == (content or "")
    assert reply.finish_reason == response["choices"][0]["finish_reason"]
    assert reply.reasoning == reasoning_field(message)
    assert reply.model == response["model"]
    assert reply.prompt_tokens == response["usage"]["prompt_tokens"]
    assert reply.completion_tokens == response["usage"]["completion_tokens"]

    kind, code = EXPECTED[name]
    policy = UpdatePolicy()
    if kind == "rejected":
        with pytest.raises(OutputRejected) as caught:
            summarize(reply, policy)
        assert caught.value.code == code
        return
    if kind == "split":
        assert reply.reasoning is not None and "</think>" not in content
        expected = content.strip()
    else:
        assert reply.reasoning is None and content.count("</think>") == 1
        expected = content.split("</think>", 1)[1].strip()
    assert expected  # a fixture with an empty summary would prove nothing
    assert summarize(reply, policy) == expected
    # a reply with thinking parses the same when thinking is optional
    assert summarize(reply, replace(policy, reasoning="optional")) == expected


@pytest.mark.parametrize("name", sorted(NO_THINKING_ACCEPTED_WHEN_OPTIONAL))
async def test_reply_without_thinking_is_the_summary_when_thinking_is_optional(name):
    reply, _ = await generate(name)
    assert reply.reasoning is None and "<think>" not in reply.text
    assert summarize(reply, replace(UpdatePolicy(), reasoning="optional")) == reply.text.strip()


ALWAYS_REJECTED = sorted(n for n, (kind, _) in EXPECTED.items()
                         if kind == "rejected" and n not in NO_THINKING_ACCEPTED_WHEN_OPTIONAL)


@pytest.mark.parametrize("name", ALWAYS_REJECTED)
async def test_a_rejected_reply_stays_rejected_when_thinking_is_optional(name):
    reply, _ = await generate(name)
    with pytest.raises(OutputRejected) as caught:
        summarize(reply, replace(UpdatePolicy(), reasoning="optional"))
    assert caught.value.code == EXPECTED[name][1]


async def test_llamacpp_split_and_inline_are_one_generation_with_one_summary():
    """Recorded from one server, one request differing only in ``reasoning_format``."""
    split_body = load("llamacpp-thinking-split")["request"]["body"]
    inline_body = load("llamacpp-thinking-inline")["request"]["body"]
    assert {**split_body, "reasoning_format": "none"} == inline_body
    assert split_body["reasoning_format"] == "deepseek"
    split_reply, _ = await generate("llamacpp-thinking-split")
    inline_reply, _ = await generate("llamacpp-thinking-inline")
    assert split_reply.completion_tokens == inline_reply.completion_tokens
    assert split_reply.reasoning is not None
    assert split_reply.reasoning.strip() in inline_reply.text.split("</think>")[0]
    policy = UpdatePolicy()
    assert summarize(split_reply, policy) == summarize(inline_reply, policy)


@pytest.mark.parametrize("name", ["vllm-0.11.1-reasoning-and-alias"])
def test_vllm_alias_carries_the_same_thinking_twice(name):
    message = message_of(name)
    assert message["reasoning"] == message["reasoning_content"]


def test_llamacpp_tokenize_of_messages_gives_no_tokens():
    """llama.cpp's /tokenize reads only ``content``: messages need /apply-template first."""
    assert load("llamacpp-tokenize-messages")["response"] == {"tokens": []}
    prompt = load("llamacpp-apply-template")["response"]["prompt"]
    assert prompt.endswith("<|im_start|>assistant\n")
    assert load("llamacpp-tokenize-content")["response"]["tokens"]
