"""The AlignXplore+ model stand-in: a vLLM-compatible HTTP server for tests and benchmarks.

It answers with the deterministic *baseline* summarizer, never with the real model. See
:mod:`streamer.devtools.standin.server` for the protocol and the latency and fault knobs.
"""

from .server import (
    DEFAULT_MODEL,
    REPLY_SHAPES,
    STANDIN_KEY,
    FaultConfig,
    MalformedKind,
    ReplyShape,
    Standin,
    StandinConfig,
    build_app,
    count_chat_tokens,
    count_tokens,
    parse_update_prompt,
    render_chat,
    running_standin,
    tokenize,
)

__all__ = [
    "DEFAULT_MODEL",
    "REPLY_SHAPES",
    "STANDIN_KEY",
    "FaultConfig",
    "MalformedKind",
    "ReplyShape",
    "Standin",
    "StandinConfig",
    "build_app",
    "count_chat_tokens",
    "count_tokens",
    "parse_update_prompt",
    "render_chat",
    "running_standin",
    "tokenize",
]
