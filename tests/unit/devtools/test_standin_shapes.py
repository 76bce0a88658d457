"""The stand-in's engine dialects as pure logic: configuration, CLI flags, where the thinking
goes (precedence), and the chat template's thinking switch. The HTTP side is in
tests/integration/test_standin.py."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from streamer.devtools.standin import REPLY_SHAPES, Standin, StandinConfig, render_chat
from streamer.devtools.standin.__main__ import build_parser, config_from_args

pytestmark = pytest.mark.unit

REPLY = "<think>\nweighing the triples\n</think>\n\nThe summary."


def message_for(config: StandinConfig, body: dict | None = None, content: str = REPLY,
                thinking_enabled: bool = True) -> dict:
    standin = Standin(config)
    return standin._message(content, standin._placement(body or {}), thinking_enabled)


def test_defaults_keep_todays_behaviour() -> None:
    config = StandinConfig()
    assert config.reply_shape == "inline" and config.reject_fields == []
    assert message_for(config) == {"role": "assistant", "content": REPLY,
                                   "reasoning_content": None, "tool_calls": []}


def test_unknown_shape_is_rejected() -> None:
    with pytest.raises(ValidationError):
        StandinConfig(reply_shape="tgi")


def test_cli_flags_build_the_config() -> None:
    args = build_parser().parse_args(
        ["--reply-shape", "sglang", "--reject-fields", "min_p, repetition_penalty,,"])
    config = config_from_args(args)
    assert config.reply_shape == "sglang"
    assert config.reject_fields == ["min_p", "repetition_penalty"]
    assert config_from_args(build_parser().parse_args([])).reject_fields == []


def test_cli_lists_every_shape_and_refuses_others(capsys: pytest.CaptureFixture[str]) -> None:
    help_text = " ".join(build_parser().format_help().split())
    for shape in REPLY_SHAPES:
        assert shape in help_text
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--reply-shape", "tgi"])
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("shape", "field", "thinking", "content"),
    [
        ("vllm-reasoning", "reasoning", "\nweighing the triples\n", "\n\nThe summary."),
        ("vllm-legacy", "reasoning_content", "\nweighing the triples\n", "\n\nThe summary."),
        ("sglang", "reasoning_content", "\nweighing the triples\n", "\n\nThe summary."),
        ("llamacpp", "reasoning_content", "weighing the triples", "The summary."),
    ],
)
def test_each_shape_puts_the_thinking_in_its_field(
    shape: str, field: str, thinking: str, content: str
) -> None:
    message = message_for(StandinConfig(reply_shape=shape))
    assert message[field] == thinking and message["content"] == content
    assert not {"reasoning", "reasoning_content"} - {field} & set(message)


@pytest.mark.parametrize("shape", ["vllm-reasoning", "vllm-legacy", "sglang", "llamacpp"])
def test_a_never_closed_think_is_all_reasoning_and_no_content(shape: str) -> None:
    message = message_for(StandinConfig(reply_shape=shape), content="<think>\nstill thinking")
    assert message["content"] is None
    assert "still thinking" in message["reasoning" if shape == "vllm-reasoning"
                                       else "reasoning_content"]


def test_the_request_switch_wins_then_the_explicit_parser_then_the_shape() -> None:
    sglang = StandinConfig(reply_shape="sglang", reasoning_parser="reasoning")
    assert message_for(sglang, {"separate_reasoning": False})["content"] == REPLY
    assert "reasoning" in message_for(sglang) and "reasoning_content" not in message_for(sglang)
    llama = StandinConfig(reply_shape="llamacpp", reasoning_parser="both")
    assert message_for(llama, {"reasoning_format": "none"}) == {"role": "assistant",
                                                                "content": REPLY}
    both = message_for(llama)
    assert both["reasoning"] == both["reasoning_content"] == "weighing the triples"
    legacy = message_for(StandinConfig(reply_shape="llamacpp"),
                         {"reasoning_format": "deepseek-legacy"})
    assert legacy["content"] == REPLY and legacy["reasoning_content"] == "weighing the triples"


def test_request_switches_belong_to_their_engine() -> None:
    vllm = StandinConfig(reply_shape="vllm-reasoning")
    assert message_for(vllm, {"separate_reasoning": False, "reasoning_format": "none"})[
        "content"] == "\n\nThe summary."


def test_enable_thinking_false_prefills_the_empty_block_in_the_template() -> None:
    messages = [{"role": "user", "content": "hi"}]
    assert render_chat(messages) == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert render_chat(messages, enable_thinking=False).endswith(
        "<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert render_chat(messages, False, enable_thinking=False) == "<|im_start|>user\nhi<|im_end|>\n"


def test_thinking_disabled_gives_an_empty_reasoning_field() -> None:
    empty = "<think>\n\n</think>\n\nThe summary."
    vllm = message_for(StandinConfig(reply_shape="vllm-reasoning"), content=empty,
                       thinking_enabled=False)
    assert vllm["reasoning"] == "" and vllm["content"] == "\n\nThe summary."
    llama = message_for(StandinConfig(reply_shape="llamacpp"), content=empty,
                        thinking_enabled=False)
    assert llama == {"role": "assistant", "content": "The summary."}
