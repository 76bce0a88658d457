"""An HTTP stand-in for ``vllm serve VanillaH1/AlignXplore-Plus`` (tests and benchmarks only).

It speaks the subset of vLLM's OpenAI-compatible protocol that prefstream uses:

- ``GET /v1/models``, ``POST /v1/chat/completions`` (non-streaming), ``POST /tokenize``,
  ``GET /health``, ``GET /metrics``;
- ``GET|POST /admin/faults``, ``GET /admin/stats``, ``POST /admin/reset``, ``GET /admin/last``
  to steer and observe it.

``StandinConfig.reply_shape`` switches the dialect to another real engine's (vLLM with a
reasoning parser, old or new; SGLang; llama.cpp's server): where the thinking goes, the
``/v1/models`` card, the ``/tokenize`` request and response, the ``/metrics`` names, and the
llama.cpp-only routes (``POST /apply-template``, ``GET /slots``). See :data:`ReplyShape`.

The reply to an AlignXplore+ update prompt is ``<think>\\n{reasoning}\\n</think>\\n\\n{summary}``
where the summary comes from :class:`~streamer.domain.baseline.BaselineSummarizer` (a term
statistics baseline, *not* the real model). Latency (time to first token plus a per-token cost,
optional seeded jitter), a FIFO concurrency limit with an optional bounded queue, and faults
(HTTP errors, hangs, malformed output) are configurable so that clients can be tested against
the failure modes of a real vLLM server. Token counts are approximations (see
:func:`count_tokens`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import re
import time
import uuid
import zlib
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from streamer.domain.baseline import NEUTRAL_SUMMARY, BaselineSummarizer, parse_weights

__all__ = [
    "DEFAULT_MODEL",
    "REPLY_SHAPES",
    "STANDIN_KEY",
    "FaultConfig",
    "FifoLimiter",
    "MalformedKind",
    "ParsedPrompt",
    "PromptTriple",
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

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "VanillaH1/AlignXplore-Plus"
DEFAULT_MAX_MODEL_LEN = 16384

MalformedKind = Literal["no_think_close", "double_think_close", "empty_summary", "truncated"]
ReplyShape = Literal["inline", "vllm-reasoning", "vllm-legacy", "sglang", "llamacpp"]
"""Which real engine's dialect the stand-in speaks (routes, bodies, where the thinking goes).

============== =============================================================================
shape          emulates
============== =============================================================================
inline         vLLM without a reasoning parser: ``<think>...</think>`` inline in ``content``
               (``reasoning_parser`` still moves it, as before); vLLM ``/v1/models``,
               ``/tokenize`` and ``/metrics``.
vllm-reasoning vLLM >= 0.16 with ``--reasoning-parser qwen3``: ``message.reasoning`` only;
               ``content`` is what follows ``</think>`` verbatim (``null`` when empty or when
               the think was never closed). Same routes as ``inline``.
vllm-legacy    vLLM <= 0.11.0 with a reasoning parser: as ``vllm-reasoning`` but the field is
               ``message.reasoning_content``.
sglang         SGLang ``--reasoning-parser qwen3``: ``message.reasoning_content``; a request's
               ``"separate_reasoning": false`` keeps the thinking inline. ``/v1/models`` card
               owned by ``sglang``; ``/tokenize`` takes ``{"prompt": str}`` only (``messages``
               is a 400); ``/metrics`` has ``sglang:num_running_reqs``, ``sglang:num_queue_reqs``,
               ``sglang:token_usage``.
llamacpp       llama.cpp's server, ``--reasoning-format deepseek``: ``message.reasoning_content``
               (stripped; absent when empty); a request's ``"reasoning_format": "none"`` keeps the
               thinking inline, ``"deepseek-legacy"`` fills both. ``/health`` is
               ``{"status": "ok"}``; ``/v1/models`` has ``models`` + ``data[].meta.n_ctx`` and no
               ``max_model_len``; ``/tokenize`` takes ``{"content": str}`` and answers
               ``{"tokens": [...]}`` (no content: ``{"tokens": []}``); ``POST /apply-template``;
               ``GET /slots``; ``/metrics`` has ``llamacpp:requests_processing`` and
               ``llamacpp:requests_deferred``; replies carry ``timings`` and
               ``system_fingerprint``; the request's ``model`` is not checked.
============== =============================================================================

In every shape: ``/metrics`` reads the real limiter (running = holding a concurrency slot,
waiting = queued; KV/token usage = running / ``max_concurrency``, 0 when unlimited); errors
(``reject_fields``, context length, wrong model, bad bodies) use the OpenAI envelope
``{"error": {"message", "type", "param", "code"}}``; routes a shape does not serve are 404.
``chat_template_kwargs.enable_thinking: false`` adds the template's empty think block to the
prompt (and its tokens to ``usage``) and the reply carries an empty thinking: inline
``<think>\\n\\n</think>\\n\\n{summary}``, or an empty reasoning field (llama.cpp leaves it out).
A real engine would not repeat the prefilled block in its output; the stand-in keeps it so
that the inline reply stays recognisable.
"""
REPLY_SHAPES: tuple[ReplyShape, ...] = get_args(ReplyShape)

ReasoningParser = Literal["none", "reasoning_content", "reasoning", "both"]
"""Where a reply's thinking goes, as real servers do it: ``none`` inline in ``content`` (vLLM
without a reasoning parser); ``reasoning_content`` (vLLM <= 0.11.0 and llama.cpp's server with
``--reasoning-parser``/its default); ``both`` (vLLM 0.11.1+: ``reasoning``, with
``reasoning_content`` as an alias); ``reasoning`` (vLLM 0.16+)."""


# --------------------------------------------------------------------------- configuration


class FaultConfig(BaseModel):
    """Faults injected into ``POST /v1/chat/completions``; replaced whole by ``/admin/faults``.

    Per request, in this order: ``fail_next`` (deterministic), then ``error_rate``, then
    ``timeout_rate``, then ``malformed_rate``, each decided with the server's seeded RNG.
    """

    model_config = ConfigDict(extra="forbid")

    error_rate: float = Field(0.0, ge=0.0, le=1.0)
    """Probability that a request is answered with ``error_status``."""
    error_status: Literal[429, 500, 503] = 503
    """HTTP status used by ``error_rate`` and ``fail_next``."""
    timeout_rate: float = Field(0.0, ge=0.0, le=1.0)
    """Probability that a request hangs ``hang_s`` seconds, then the connection is closed."""
    hang_s: float = Field(30.0, ge=0.0)
    """How long a hung request waits before the connection is dropped without a response."""
    malformed_rate: float = Field(0.0, ge=0.0, le=1.0)
    """Probability that a successful reply is malformed as ``malformed_kind``."""
    malformed_kind: MalformedKind = "no_think_close"
    """Which malformed output to produce."""
    fail_next: int = Field(0, ge=0)
    """The next N chat requests fail with ``error_status`` (counts down)."""
    extra_latency_ms: float = Field(0.0, ge=0.0)
    """Added to every chat reply's simulated latency (a slow server, set at run time)."""
    refuse_matching: str | None = None
    """Chat requests whose messages contain this text are refused with ``refuse_status``, every
    time (a server rejecting one kind of prompt, e.g. a content filter)."""
    refuse_status: Literal[400, 413, 422] = 400
    """HTTP status of refused requests."""


class StandinConfig(BaseModel):
    """Start-up configuration of the stand-in (immutable; faults can change at run time).

    Where a reply's thinking goes is decided per request, first match wins:

    1. the request's own switch, where the emulated engine has one: SGLang
       ``"separate_reasoning": false`` and llama.cpp ``"reasoning_format": "none"`` keep it
       inline (llama.cpp ``"deepseek-legacy"``: inline *and* in ``reasoning_content``);
    2. an explicit ``reasoning_parser`` other than ``none`` (the field(s) it names, in any shape);
    3. the ``reply_shape``'s own field (``inline``: none, the thinking stays in ``content``).

    The shape alone decides the rest of the dialect (message keys, whitespace, routes).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = DEFAULT_MODEL
    """The one served model id, as listed by ``/v1/models``."""
    max_model_len: int = Field(DEFAULT_MAX_MODEL_LEN, ge=16)
    """Context length: prompt tokens + max_tokens above it is a 400, as in vLLM."""
    ttft_ms: float = Field(0.0, ge=0.0)
    """Time to first token, in milliseconds."""
    per_token_ms: float = Field(0.0, ge=0.0)
    """Extra time per completion token, in milliseconds."""
    jitter_ms: float = Field(0.0, ge=0.0)
    """Uniform jitter in [-jitter_ms, +jitter_ms] added to each latency (seeded RNG)."""
    max_concurrency: int | None = Field(None, ge=1)
    """Requests generating at once; the rest wait in a FIFO queue. ``None`` = unlimited."""
    max_queue: int | None = Field(None, ge=0)
    """Waiting requests allowed beyond ``max_concurrency``; more are answered 429."""
    seed: int = 0
    """Seed of the fault and jitter RNGs (reproducible runs)."""
    faults: FaultConfig = Field(default_factory=FaultConfig)
    """Initial fault configuration."""
    reasoning_parser: ReasoningParser = "none"
    """Where the thinking of a reply goes (see :data:`ReasoningParser`); with a ``reply_shape``
    other than ``inline``, ``none`` means "the shape's own field" (see the class docstring)."""
    reply_shape: ReplyShape = "inline"
    """Which engine's dialect to speak (see :data:`ReplyShape`)."""
    reject_fields: list[str] = Field(default_factory=list)
    """Top-level chat request keys answered with a 400 naming the field, as a server that does
    not know a sampling field does (e.g. ``["min_p", "repetition_penalty"]``)."""


# --------------------------------------------------------------------------- tokens


_SPECIAL_IDS = {
    "<|endoftext|>": 151643,
    "<|im_start|>": 151644,
    "<|im_end|>": 151645,
    "<think>": 151667,
    "</think>": 151668,
}
_TOKEN_RE = re.compile(
    r"<\|[a-z_]{1,24}\|>|</?think>|[^\W\d_]+|\d|\n+|[ \t]{2,}|[^\w\s]|_|[^\S\n]",
)
_ASCII_WORD_CHUNK = 6
_VOCAB = 151643


def tokenize(text: str) -> list[str]:
    """Split ``text`` into approximate Qwen3 token strings (deterministic, NOT exact).

    Rules: chat special tokens and ``<think>``/``</think>`` are one token; ASCII words count one
    token per started 6 characters; other words one token per character; every digit and every
    punctuation mark is a token; a run of newlines is one token; single spaces are free (BPE
    merges them into the next word), longer runs of blanks are one token. It only approximates
    Qwen3's byte-level BPE (same order of magnitude for English prose; not calibrated against
    the real tokenizer), which is enough for context-limit checks and latency modelling.
    """
    pieces: list[str] = []
    for match in _TOKEN_RE.finditer(text):
        piece = match.group(0)
        if piece == " " or piece == "\t":
            continue
        if piece[0].isalpha() and not piece.startswith("<"):
            pieces.extend(_split_word(piece))
        else:
            pieces.append(piece)
    return pieces


def _split_word(word: str) -> list[str]:
    if word.isascii():
        return [word[i : i + _ASCII_WORD_CHUNK] for i in range(0, len(word), _ASCII_WORD_CHUNK)]
    return list(word)


def count_tokens(text: str) -> int:
    """Approximate number of Qwen3 tokens in ``text`` (stable; see :func:`tokenize`)."""
    return len(tokenize(text))


def token_ids(pieces: list[str]) -> list[int]:
    """Stable fake ids for token strings (real Qwen3 ids for the special tokens)."""
    return [_SPECIAL_IDS.get(p, zlib.crc32(p.encode("utf-8")) % _VOCAB) for p in pieces]


_EMPTY_THINK = "<think>\n\n</think>\n\n"


def render_chat(
    messages: list[dict[str, str]], add_generation_prompt: bool = True, *,
    enable_thinking: bool = True,
) -> str:
    """Render messages as the Qwen3 chat template does (nothing prefilled in thinking mode;
    ``enable_thinking=False`` prefills the empty ``<think>\\n\\n</think>\\n\\n`` block)."""
    parts = [f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages]
    if add_generation_prompt:
        parts.append("<|im_start|>assistant\n")
        if not enable_thinking:
            parts.append(_EMPTY_THINK)
    return "".join(parts)


def count_chat_tokens(
    messages: list[dict[str, str]], add_generation_prompt: bool = True, *,
    enable_thinking: bool = True,
) -> int:
    """Approximate prompt tokens of a chat request (template wrapper included)."""
    return count_tokens(render_chat(messages, add_generation_prompt,
                                    enable_thinking=enable_thinking))


def _truncate_to_tokens(text: str, max_tokens: int) -> str:
    """The longest prefix of ``text`` holding at most ``max_tokens`` approximate tokens."""
    if max_tokens <= 0:
        return ""
    used = 0
    for match in _TOKEN_RE.finditer(text):
        piece = match.group(0)
        if piece in (" ", "\t"):
            continue
        cost = len(_split_word(piece)) if piece[0].isalpha() and piece[0] != "<" else 1
        if used + cost > max_tokens:
            return text[: match.start()]
        used += cost
    return text


# --------------------------------------------------------------------------- prompt parsing

_PAST_MARKER = "=====Past Preference Summary====="
_HISTORY_MARKER = "=====Interaction History====="
_END_MARKER = "=====END====="
_NOT_PROVIDED = "Not Provided."
_TRIPLE_HEADER_RE = re.compile(r"(?m)^=====Tripl?e \d+=====[ \t]*\n")
_TRIPLE_BODY_RE = re.compile(
    r"\*QUERY:\*\n ?(?P<query>.*?)\n\*\*\*\*\*\n"
    r"\*CHOSEN ITEM BY THE USER:\*\n(?P<chosen>.*?)\n\*\*\*\*\*\n"
    r"\*REJECTED ITEM BY THE USER:\*\n(?P<rejected>.*)",
    re.DOTALL,
)


@dataclass(frozen=True, slots=True)
class PromptTriple:
    """One triple read back from a rendered prompt."""

    query: str
    chosen: str
    rejected: str


@dataclass(frozen=True, slots=True)
class ParsedPrompt:
    """The structured content of an AlignXplore+ update prompt."""

    past_summary: str | None
    triples: tuple[PromptTriple, ...]
    skipped_blocks: int = 0


def parse_update_prompt(user_text: str) -> ParsedPrompt | None:
    """Read the past summary and triples back from an AlignXplore+ user message.

    Returns ``None`` when the message is not in the expected format.
    """
    past_at = user_text.find(_PAST_MARKER)
    history_at = user_text.find(_HISTORY_MARKER, past_at + 1) if past_at >= 0 else -1
    end_at = user_text.rfind(_END_MARKER)
    if past_at < 0 or history_at < 0 or end_at < history_at:
        return None
    past = user_text[past_at + len(_PAST_MARKER) : history_at].strip()
    history = user_text[history_at + len(_HISTORY_MARKER) : end_at].strip("\n")
    blocks = _TRIPLE_HEADER_RE.split(history)
    if blocks[0].strip():
        return None
    triples: list[PromptTriple] = []
    skipped = 0
    for block in blocks[1:]:
        match = _TRIPLE_BODY_RE.search(block.strip("\n"))
        if match is None:
            skipped += 1
            continue
        triples.append(
            PromptTriple(match["query"].strip(), match["chosen"].strip(), match["rejected"].strip())
        )
    if skipped and not triples:
        return None
    return ParsedPrompt(
        past_summary=None if past in ("", _NOT_PROVIDED) else past,
        triples=tuple(triples),
        skipped_blocks=skipped,
    )


# --------------------------------------------------------------------------- answers


def _reasoning(parsed: ParsedPrompt) -> str:
    count = len(parsed.triples)
    noun = "triple" if count == 1 else "triples"
    past = "was provided" if parsed.past_summary else "was not provided"
    return (
        f"The past preference summary {past}. I read {count} interaction {noun} and compared "
        "each chosen item with the rejected one, counting genres and title words. Then I "
        "combined this evidence with the past summary, letting older evidence fade."
    )


def _answer_parts(
    summarizer: BaselineSummarizer, messages: list[dict[str, str]]
) -> tuple[str, str]:
    """(reasoning, summary) for a chat request, generic when the prompt is not recognised."""
    user_texts = [m["content"] for m in messages if m["role"] == "user"]
    parsed = parse_update_prompt(user_texts[-1]) if user_texts else None
    if parsed is None:
        logger.warning(
            "stand-in: request is not an AlignXplore+ update prompt (%d messages); "
            "answering with a generic summary",
            len(messages),
        )
        return (
            "The request is not in the expected preference-update format, so I could not read "
            "any interaction triples.",
            NEUTRAL_SUMMARY,
        )
    if parsed.skipped_blocks:
        logger.warning("stand-in: %d triple blocks could not be parsed", parsed.skipped_blocks)
    return _reasoning(parsed), summarizer.summarize(parsed.past_summary, parsed.triples)


def _compose(reasoning: str, summary: str, malformed: MalformedKind | None) -> tuple[str, str]:
    """Build the completion text and finish reason, possibly malformed on purpose."""
    if malformed == "no_think_close":
        return f"<think>\n{reasoning}\n\n{summary}", "stop"
    if malformed == "double_think_close":
        return (
            f"<think>\n{reasoning}\n</think>\n\nOn second thought.\n</think>\n\n{summary}",
            "stop",
        )
    if malformed == "empty_summary":
        return f"<think>\n{reasoning}\n</think>\n\n", "stop"
    if malformed == "truncated":
        partial = _truncate_to_tokens(reasoning, max(1, count_tokens(reasoning) // 2))
        return f"<think>\n{partial}", "length"
    return f"<think>\n{reasoning}\n</think>\n\n{summary}", "stop"


# --------------------------------------------------------------------------- runtime state


class _RequestError(Exception):
    """An OpenAI-style error answer."""

    def __init__(self, status: int, message: str, err_type: str, param: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.err_type = err_type
        self.param = param


class FifoLimiter:
    """A strictly first-in-first-out concurrency limiter (``None`` limit = unlimited)."""

    def __init__(self, limit: int | None) -> None:
        self._limit = limit
        self._active = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        """Requests queued for a slot."""
        return len(self._waiters)

    @property
    def active(self) -> int:
        """Requests holding a slot (generating)."""
        return self._active

    def must_wait(self) -> bool:
        """Whether an arriving request would have to queue."""
        return self._limit is not None and (self._active >= self._limit or bool(self._waiters))

    async def acquire(self) -> None:
        """Take a slot, waiting in arrival order if none is free."""
        if not self.must_wait():
            self._active += 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # the slot was handed over just before the cancel
            else:
                self._waiters.remove(fut)
            raise

    def release(self) -> None:
        """Free a slot, handing it to the oldest waiter if any."""
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self._active -= 1


@dataclass
class _Stats:
    """Request counters for ``/admin/stats`` (admin endpoints are not counted)."""

    total_requests: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    by_endpoint: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0
    max_in_flight: int = 0
    max_queued: int = 0
    dropped_connections: int = 0
    completion_tokens: int = 0
    prompt_tokens: int = 0

    def snapshot(self, queued: int) -> dict[str, Any]:
        return {
            "total_requests": self.total_requests,
            "by_status": dict(sorted(self.by_status.items())),
            "by_endpoint": dict(sorted(self.by_endpoint.items())),
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "queued": queued,
            "max_queued": self.max_queued,
            "dropped_connections": self.dropped_connections,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }


_FaultDecision = tuple[Literal["error"], int] | tuple[Literal["hang"], float] | None

_DROPPED_STATUS = 499  # internal marker: the connection was aborted without an answer


@dataclass(frozen=True, slots=True)
class _Placement:
    """Where one reply's thinking goes: the message field(s) (``()`` = inline in ``content``);
    ``keep_inline``: ``content`` keeps the tagged thinking too (llama.cpp deepseek-legacy)."""

    fields: tuple[str, ...]
    keep_inline: bool = False


_PARSER_FIELDS: dict[ReasoningParser, tuple[str, ...]] = {
    "none": (),
    "reasoning_content": ("reasoning_content",),
    "reasoning": ("reasoning",),
    "both": ("reasoning", "reasoning_content"),
}
_SHAPE_FIELDS: dict[ReplyShape, tuple[str, ...]] = {
    "inline": (),
    "vllm-reasoning": ("reasoning",),
    "vllm-legacy": ("reasoning_content",),
    "sglang": ("reasoning_content",),
    "llamacpp": ("reasoning_content",),
}
_LLAMACPP_REASONING_FORMATS = ("none", "auto", "deepseek", "deepseek-legacy")
_LLAMACPP_FINGERPRINT = "b0-standin"  # real servers: "b<build>-<commit>"
_LLAMA_VOCAB_TYPE_BPE = 2
_QWEN3_N_VOCAB = 151936
_QWEN3_N_CTX_TRAIN = 40960


class Standin:
    """All mutable state of one stand-in server; the request handlers are its methods."""

    def __init__(self, config: StandinConfig) -> None:
        self.config = config
        self.faults = config.faults.model_copy()
        self.stats = _Stats()
        self.limiter = FifoLimiter(config.max_concurrency)
        self.summarizer = BaselineSummarizer()
        self._fault_rng = random.Random(config.seed)
        self._jitter_rng = random.Random(config.seed + 1)
        self.started_at = int(time.time())
        self.last_exchange: dict[str, Any] | None = None

    # ---- fault and latency decisions

    def decide_fault(self) -> tuple[_FaultDecision, MalformedKind | None]:
        """Draw this request's fault; always draws three numbers so runs stay reproducible."""
        faults = self.faults
        rolls = [self._fault_rng.random() for _ in range(3)]
        malformed = faults.malformed_kind if rolls[2] < faults.malformed_rate else None
        if faults.fail_next > 0:
            self.faults = faults.model_copy(update={"fail_next": faults.fail_next - 1})
            return ("error", faults.error_status), None
        if rolls[0] < faults.error_rate:
            return ("error", faults.error_status), None
        if rolls[1] < faults.timeout_rate:
            return ("hang", faults.hang_s), None
        return None, malformed

    def latency_s(self, completion_tokens: int) -> float:
        """Simulated generation time: TTFT + per-token cost (+ seeded jitter)."""
        prompt_ms, predicted_ms = self.latency_parts_ms(completion_tokens)
        return (prompt_ms + predicted_ms) / 1000.0

    def latency_parts_ms(self, completion_tokens: int) -> tuple[float, float]:
        """(prompt phase, generation phase) of the simulated latency, in ms, never negative in
        total: TTFT + extra latency + jitter, then the per-token cost (one jitter draw)."""
        cfg = self.config
        prompt_ms = cfg.ttft_ms + self.faults.extra_latency_ms
        if cfg.jitter_ms:
            prompt_ms += self._jitter_rng.uniform(-cfg.jitter_ms, cfg.jitter_ms)
        predicted_ms = cfg.per_token_ms * completion_tokens
        if prompt_ms < 0.0:
            predicted_ms = max(0.0, predicted_ms + prompt_ms)
            prompt_ms = 0.0
        return prompt_ms, predicted_ms

    # ---- middleware

    @web.middleware
    async def stats_middleware(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        """Count requests by endpoint and status, and turn errors into OpenAI error JSON."""
        counted = not request.path.startswith("/admin")
        if counted:
            self.stats.total_requests += 1
            self.stats.by_endpoint[_endpoint_name(request)] += 1
        try:
            response = await handler(request)
        except _RequestError as exc:
            response = _error_response(exc.status, exc.message, exc.err_type, exc.param)
        except web.HTTPException as exc:
            if counted:
                self.stats.by_status[str(exc.status)] += 1
            raise
        except asyncio.CancelledError:  # the client went away (handler cancellation is on)
            if counted:
                self.stats.by_status["client_closed"] += 1
            raise
        if counted:
            if response.status == _DROPPED_STATUS:
                self.stats.dropped_connections += 1
                self.stats.by_status["dropped"] += 1
            else:
                self.stats.by_status[str(response.status)] += 1
        return response

    # ---- OpenAI / engine endpoints

    @property
    def shape(self) -> ReplyShape:
        """The dialect spoken (``config.reply_shape``)."""
        return self.config.reply_shape

    async def health(self, request: web.Request) -> web.Response:
        """``GET /health``: 200 with an empty body (vLLM, SGLang); ``{"status": "ok"}`` for
        llama.cpp."""
        if self.shape == "llamacpp":
            return web.json_response({"status": "ok"})
        return web.Response(status=200)

    async def models(self, request: web.Request) -> web.Response:
        """``GET /v1/models``: the single served model, as the emulated engine lists it."""
        model = self.config.model
        if self.shape == "llamacpp":
            return web.json_response(self._llamacpp_models())
        if self.shape == "sglang":
            card: dict[str, Any] = {
                "id": model,
                "object": "model",
                "created": self.started_at,
                "owned_by": "sglang",
                "root": model,
                "parent": None,
                "max_model_len": self.config.max_model_len,
            }
        else:
            card = {
                "id": model,
                "object": "model",
                "created": self.started_at,
                "owned_by": "vllm",
                "root": model,
                "parent": None,
                "max_model_len": self.config.max_model_len,
                "permission": [],
            }
        return web.json_response({"object": "list", "data": [card]})

    def _llamacpp_models(self) -> dict[str, Any]:
        model = self.config.model
        return {
            "models": [
                {
                    "name": model,
                    "model": model,
                    "modified_at": "",
                    "size": "",
                    "digest": "",
                    "type": "model",
                    "description": "",
                    "tags": [""],
                    "capabilities": ["completion"],
                    "parameters": "",
                    "details": {"parent_model": "", "format": "gguf", "family": "",
                                "families": [""], "parameter_size": "",
                                "quantization_level": ""},
                }
            ],
            "object": "list",
            "data": [
                {
                    "id": model,
                    "aliases": [model],
                    "tags": [],
                    "object": "model",
                    "owned_by": "llamacpp",
                    "created": self.started_at,
                    "meta": {
                        "vocab_type": _LLAMA_VOCAB_TYPE_BPE,
                        "n_vocab": _QWEN3_N_VOCAB,
                        "n_ctx": self.config.max_model_len,
                        "n_ctx_train": max(_QWEN3_N_CTX_TRAIN, self.config.max_model_len),
                    },
                }
            ],
        }

    async def tokenize(self, request: web.Request) -> web.Response:
        """``POST /tokenize`` in the emulated engine's shape, with approximate Qwen3 tokens.

        vLLM (``inline``, ``vllm-*``): ``prompt`` or ``messages`` -> ``{"count",
        "max_model_len", "tokens"}``. SGLang: ``prompt`` only -> ``{"tokens", "count",
        "max_model_len"}``, ``messages`` is a 400. llama.cpp: ``content`` -> ``{"tokens"}``, a
        body without ``content`` -> ``{"tokens": []}`` (the real server's answer).
        """
        body = await _read_json(request)
        if self.shape == "llamacpp":
            return web.json_response(_llamacpp_tokenize(body))
        self._check_model(body.get("model"))
        if self.shape == "sglang":
            if "messages" in body:
                raise _RequestError(
                    400, "/tokenize accepts 'prompt' only; 'messages' is not supported.",
                    "BadRequestError", "messages",
                )
            if not isinstance(body.get("prompt"), str):
                raise _RequestError(400, "'prompt' (a string) is required.", "BadRequestError",
                                    "prompt")
            pieces = tokenize(body["prompt"])
            return web.json_response({"tokens": token_ids(pieces), "count": len(pieces),
                                      "max_model_len": self.config.max_model_len})
        if "messages" in body:
            messages = _validate_messages(body["messages"])
            text = render_chat(messages, bool(body.get("add_generation_prompt", True)),
                               enable_thinking=_thinking_enabled(body))
        elif isinstance(body.get("prompt"), str):
            text = body["prompt"]
        else:
            raise _RequestError(
                400, "Either 'prompt' or 'messages' is required.", "BadRequestError"
            )
        pieces = tokenize(text)
        return web.json_response(
            {
                "count": len(pieces),
                "max_model_len": self.config.max_model_len,
                "tokens": token_ids(pieces),
                "token_strs": pieces if body.get("return_token_strs") else None,
            }
        )

    async def apply_template(self, request: web.Request) -> web.Response:
        """``POST /apply-template`` (llama.cpp): ``{"messages"}`` -> ``{"prompt"}``, the chat
        rendered with the generation prompt (``chat_template_kwargs.enable_thinking`` honoured)."""
        body = await _read_json(request)
        messages = _validate_messages(body.get("messages"))
        return web.json_response(
            {"prompt": render_chat(messages, True, enable_thinking=_thinking_enabled(body))}
        )

    async def slots(self, request: web.Request) -> web.Response:
        """``GET /slots`` (llama.cpp): one slot per ``max_concurrency`` (one slot when unlimited,
        llama.cpp's ``-np 1``); the first ``min(generating, slots)`` slots are processing."""
        n_slots = self.config.max_concurrency or 1
        busy = min(self.limiter.active, n_slots)
        return web.json_response([
            {"id": i, "id_task": -1, "n_ctx": self.config.max_model_len,
             "speculative": False, "is_processing": i < busy}
            for i in range(n_slots)
        ])

    async def metrics(self, request: web.Request) -> web.Response:
        """``GET /metrics``: Prometheus text with the emulated engine's load gauges, read from the
        real limiter (generating = holding a concurrency slot, waiting = queued for one)."""
        running, waiting = self.limiter.active, self.limiter.waiting
        limit = self.config.max_concurrency
        usage = running / limit if limit else 0.0
        if self.shape == "llamacpp":
            text = _prometheus([
                ("llamacpp:prompt_tokens_total", "counter", "Number of prompt tokens processed.",
                 self.stats.prompt_tokens),
                ("llamacpp:tokens_predicted_total", "counter",
                 "Number of generation tokens processed.", self.stats.completion_tokens),
                ("llamacpp:requests_processing", "gauge", "Number of requests processing.",
                 running),
                ("llamacpp:requests_deferred", "gauge", "Number of requests deferred.", waiting),
            ], labels="")
        elif self.shape == "sglang":
            text = _prometheus([
                ("sglang:num_running_reqs", "gauge", "The number of running requests.",
                 float(running)),
                ("sglang:num_queue_reqs", "gauge", "The number of requests in the waiting queue.",
                 float(waiting)),
                ("sglang:token_usage", "gauge", "The token usage.", float(usage)),
                ("sglang:cache_hit_rate", "gauge", "The prefix cache hit rate.", 0.0),
            ], labels=_model_label(self.config.model))
        else:
            text = _prometheus([
                ("vllm:num_requests_running", "gauge",
                 "Number of requests in model execution batches.", float(running)),
                ("vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed.",
                 float(waiting)),
                ("vllm:kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage.",
                 float(usage)),
                ("vllm:prefix_cache_queries", "counter",
                 "Prefix cache queries, in terms of number of queried tokens.",
                 float(self.stats.prompt_tokens)),
                ("vllm:prefix_cache_hits", "counter",
                 "Prefix cache hits, in terms of number of cached tokens.", 0.0),
                ("vllm:prompt_tokens", "counter", "Number of prefill tokens processed.",
                 float(self.stats.prompt_tokens)),
                ("vllm:generation_tokens", "counter", "Number of generation tokens processed.",
                 float(self.stats.completion_tokens)),
            ], labels=_model_label(self.config.model))
        return web.Response(body=text.encode("utf-8"),
                            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/chat/completions`` (non-streaming)."""
        body = await _read_json(request)
        self._check_rejected(body)
        model = self._check_model(body.get("model"))
        messages = _validate_messages(body.get("messages"))
        if body.get("stream"):
            raise _RequestError(
                400, "stream=true is not supported by the stand-in.", "BadRequestError", "stream"
            )
        thinking = _thinking_enabled(body)
        placement = self._placement(body)
        prompt_tokens = count_chat_tokens(messages, enable_thinking=thinking)
        max_tokens = self._check_length(prompt_tokens, _max_tokens(body))

        needle = self.faults.refuse_matching
        if needle and any(needle in str(m.get("content", "")) for m in messages):
            raise _RequestError(self.faults.refuse_status,
                                "The request was refused by the server's content policy.",
                                "BadRequestError")
        fault, malformed = self.decide_fault()
        if fault is not None and fault[0] == "error":
            return _injected_error(fault[1])
        if fault is not None and fault[0] == "hang":
            return await self._hang(request, fault[1])
        if self.limiter.must_wait() and self.config.max_queue is not None:
            if self.limiter.waiting >= self.config.max_queue:
                raise _RequestError(
                    429, "The server is busy: request queue is full.", "RateLimitError"
                )
        if self.limiter.must_wait():
            self.stats.max_queued = max(self.stats.max_queued, self.limiter.waiting + 1)
        await self.limiter.acquire()
        try:
            judged = judge_reply(messages)
            if judged is not None:  # a pairwise-judgement request (`streamer eval`)
                content, p_a = judged
                reply = self._reply_body(model, self._plain_message(content, placement), "stop",
                                         prompt_tokens, count_tokens(content), (0.0, 0.0))
                if body.get("logprobs"):
                    reply["choices"][0]["logprobs"] = _letter_logprobs(content, p_a)
                self.last_exchange = {"request": body, "messages": messages, "response": reply}
                return web.json_response(reply)
            return await self._generate(body, model, messages, prompt_tokens, max_tokens,
                                        malformed, thinking, placement)
        finally:
            self.limiter.release()

    async def _generate(
        self,
        request_body: dict[str, Any],
        model: str,
        messages: list[dict[str, str]],
        prompt_tokens: int,
        max_tokens: int,
        malformed: MalformedKind | None,
        thinking_enabled: bool,
        placement: _Placement,
    ) -> web.Response:
        self.stats.in_flight += 1
        self.stats.max_in_flight = max(self.stats.max_in_flight, self.stats.in_flight)
        try:
            reasoning, summary = _answer_parts(self.summarizer, messages)
            if not thinking_enabled:  # the template prefilled an empty think block
                reasoning = ""
            content, finish_reason = _compose(reasoning, summary, malformed)
            if count_tokens(content) > max_tokens:
                content, finish_reason = _truncate_to_tokens(content, max_tokens), "length"
            completion_tokens = count_tokens(content)
            timings = self.latency_parts_ms(completion_tokens)
            await asyncio.sleep((timings[0] + timings[1]) / 1000.0)
        finally:
            self.stats.in_flight -= 1
        self.stats.prompt_tokens += prompt_tokens
        self.stats.completion_tokens += completion_tokens
        message = self._message(content, placement, thinking_enabled)
        body = self._reply_body(model, message, finish_reason, prompt_tokens, completion_tokens,
                                timings)
        self.last_exchange = {"request": request_body, "messages": messages, "response": body}
        return web.json_response(body)

    # ---- reply dialects

    def _placement(self, body: dict[str, Any]) -> _Placement:
        """Where this request's thinking goes (precedence: see :class:`StandinConfig`)."""
        shape = self.shape
        if shape == "sglang" and body.get("separate_reasoning") is False:
            return _Placement(())
        keep_inline = False
        if shape == "llamacpp" and "reasoning_format" in body:
            fmt = body["reasoning_format"]
            if fmt not in _LLAMACPP_REASONING_FORMATS:
                raise _RequestError(400, f"Unknown reasoning format: {fmt}",
                                    "invalid_request_error", "reasoning_format")
            if fmt == "none":
                return _Placement(())
            keep_inline = fmt == "deepseek-legacy"
        parser = self.config.reasoning_parser
        if parser != "none":
            return _Placement(_PARSER_FIELDS[parser], keep_inline)
        return _Placement(_SHAPE_FIELDS[shape], keep_inline)

    def _plain_message(self, content: str, placement: _Placement) -> dict[str, Any]:
        """A reply message with no thinking to split out (e.g. the judge's JSON answer)."""
        if self.shape == "llamacpp":
            return {"role": "assistant", "content": content or None}
        if self.shape == "sglang":
            return {"role": "assistant", "content": content, "reasoning_content": None,
                    "tool_calls": None}
        fields = placement.fields or ("reasoning_content",)
        return {"role": "assistant", "content": content, **dict.fromkeys(fields),
                "tool_calls": []}

    def _message(
        self, content: str, placement: _Placement, thinking_enabled: bool
    ) -> dict[str, Any]:
        """The reply message with the thinking where the emulated engine puts it."""
        if not placement.fields:
            return self._plain_message(content, placement)
        shape = self.shape
        if shape == "llamacpp":  # llama.cpp strips the reasoning; an empty one is left out
            thinking, rest = split_reasoning(content)
            message: dict[str, Any] = {
                "role": "assistant",
                "content": (content if placement.keep_inline else rest) or None,
            }
            if thinking:
                message.update(dict.fromkeys(placement.fields, thinking))
            return message
        if shape == "inline":  # the historical --reasoning-parser split (whitespace trimmed)
            thinking, rest = split_reasoning(content)
            split: str | None = rest or None
        else:  # vLLM's and SGLang's parsers keep the text around the tags verbatim
            thinking, split = _split_verbatim(content)
        if not thinking_enabled and not (thinking or "").strip():
            thinking = ""
        message = {"role": "assistant", "content": split, **dict.fromkeys(placement.fields,
                                                                          thinking)}
        message["tool_calls"] = None if shape == "sglang" else []
        return message

    def _reply_body(
        self,
        model: str,
        message: dict[str, Any],
        finish_reason: str,
        prompt_tokens: int,
        completion_tokens: int,
        timings_ms: tuple[float, float],
    ) -> dict[str, Any]:
        """The chat completion envelope of the emulated engine."""
        usage: dict[str, Any] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        if self.shape == "llamacpp":
            return {
                "choices": [{"finish_reason": finish_reason, "index": 0, "message": message}],
                "created": int(time.time()),
                "model": model,
                "system_fingerprint": _LLAMACPP_FINGERPRINT,
                "object": "chat.completion",
                "usage": {**usage, "prompt_tokens_details": {"cached_tokens": 0}},
                "id": f"chatcmpl-{uuid.uuid4().hex}",
                "timings": _llamacpp_timings(prompt_tokens, completion_tokens, *timings_ms),
            }
        if self.shape == "sglang":
            return {
                "id": uuid.uuid4().hex,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "logprobs": None,
                        "finish_reason": finish_reason,
                        "matched_stop": _SPECIAL_IDS["<|im_end|>"] if finish_reason == "stop"
                        else None,
                    }
                ],
                "usage": {**usage, "prompt_tokens_details": None},
            }
        return _completion_body(model, message, finish_reason, prompt_tokens, completion_tokens)

    async def get_last(self, request: web.Request) -> web.Response:
        """The last successful chat exchange (the full request body, its messages and the
        response), for inspection."""
        return web.json_response(self.last_exchange or {})

    async def _hang(self, request: web.Request, hang_s: float) -> web.Response:
        """Wait, then drop the connection without an answer (no concurrency slot is held)."""
        logger.info("stand-in: injected hang of %.1fs", hang_s)
        await asyncio.sleep(hang_s)
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=_DROPPED_STATUS)

    def _check_rejected(self, body: dict[str, Any]) -> None:
        """A 400 naming the first top-level key listed in ``config.reject_fields``."""
        rejected = self.config.reject_fields
        for key in body:
            if key in rejected:
                raise _RequestError(400, f"Unrecognized request argument supplied: {key}",
                                    "BadRequestError", key)

    def _check_model(self, model: Any) -> str:
        if self.shape == "llamacpp":  # llama.cpp serves its one model whatever the name
            return model if isinstance(model, str) and model else self.config.model
        if model is None:
            return self.config.model
        if model != self.config.model:
            raise _RequestError(
                404, f"The model `{model}` does not exist.", "NotFoundError", "model"
            )
        return model

    def _check_length(self, prompt_tokens: int, max_tokens: int | None) -> int:
        limit = self.config.max_model_len
        if max_tokens is None:
            if prompt_tokens >= limit:
                raise _RequestError(
                    400,
                    f"This model's maximum context length is {limit} tokens. However, your "
                    f"request has {prompt_tokens} input tokens. Please reduce the length of the "
                    "input messages.",
                    "BadRequestError",
                )
            return limit - prompt_tokens
        if prompt_tokens + max_tokens > limit:
            raise _RequestError(
                400,
                f"This model's maximum context length is {limit} tokens. However, you requested "
                f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the messages, "
                f"{max_tokens} in the completion). Please reduce the length of the messages or "
                "completion.",
                "BadRequestError",
            )
        return max_tokens

    # ---- admin endpoints

    async def get_faults(self, request: web.Request) -> web.Response:
        """``GET /admin/faults``: the current fault configuration."""
        return web.json_response(self.faults.model_dump())

    async def set_faults(self, request: web.Request) -> web.Response:
        """``POST /admin/faults``: replace the fault configuration (omitted fields = defaults)."""
        body = await _read_json(request)
        try:
            self.faults = FaultConfig.model_validate(body)
        except ValidationError as exc:
            raise _RequestError(
                400, f"Invalid fault configuration: {exc}", "BadRequestError"
            ) from exc
        logger.info("stand-in: faults set to %s", self.faults.model_dump())
        return web.json_response(self.faults.model_dump())

    async def get_stats(self, request: web.Request) -> web.Response:
        """``GET /admin/stats``: request counters."""
        return web.json_response(self.stats.snapshot(self.limiter.waiting))

    async def reset_stats(self, request: web.Request) -> web.Response:
        """``POST /admin/reset``: zero the counters (requests in flight stay counted)."""
        in_flight = self.stats.in_flight
        self.stats = _Stats(in_flight=in_flight, max_in_flight=in_flight)
        return web.json_response(self.stats.snapshot(self.limiter.waiting))


# --------------------------------------------------------------------------- helpers


def _endpoint_name(request: web.Request) -> str:
    route = request.match_info.route
    resource = route.resource
    return resource.canonical if resource is not None else "unmatched"


async def _read_json(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError as exc:
        raise _RequestError(400, f"Invalid JSON body: {exc}", "BadRequestError") from exc
    if not isinstance(body, dict):
        raise _RequestError(400, "The JSON body must be an object.", "BadRequestError")
    return body


def _validate_messages(raw: Any) -> list[dict[str, str]]:
    """Messages as ``{"role", "content"}`` with text content (parts lists are joined)."""
    if not isinstance(raw, list) or not raw:
        raise _RequestError(
            400, "'messages' must be a non-empty list.", "BadRequestError", "messages"
        )
    messages: list[dict[str, str]] = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("role"), str):
            raise _RequestError(
                400, "Each message needs a string 'role'.", "BadRequestError", "messages"
            )
        messages.append({"role": item["role"], "content": _content_text(item.get("content"))})
    return messages


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text", "")
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    raise _RequestError(
        400, "Message 'content' must be a string or a list of parts.", "BadRequestError", "messages"
    )


def _max_tokens(body: dict[str, Any]) -> int | None:
    value = body.get("max_completion_tokens")
    if value is None:
        value = body.get("max_tokens")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _RequestError(
            400, "max_tokens must be a positive integer.", "BadRequestError", "max_tokens"
        )
    return value


def _error_response(
    status: int, message: str, err_type: str, param: str | None = None
) -> web.Response:
    """vLLM's error envelope: ``{"error": {"message", "type", "param", "code"}}``."""
    payload = {"error": {"message": message, "type": err_type, "param": param, "code": status}}
    return web.json_response(payload, status=status)


_INJECTED_ERRORS = {
    429: ("RateLimitError", "Injected fault: too many requests."),
    500: ("InternalServerError", "Injected fault: internal server error."),
    503: ("ServiceUnavailableError", "Injected fault: service unavailable."),
}


def _injected_error(status: int) -> web.Response:
    err_type, message = _INJECTED_ERRORS.get(status, ("InternalServerError", "Injected fault."))
    return _error_response(status, message, err_type)


def split_reasoning(content: str) -> tuple[str | None, str]:
    """(thinking, rest) the way a server-side reasoning parser splits a reply: the text up to
    the first ``</think>`` (without the tags) and what follows; no ``</think>``: all thinking
    (generation never left it)."""
    head, sep, tail = content.partition("</think>")
    thinking = head.replace("<think>", "", 1).strip("\n")
    if not sep:
        return thinking, ""
    return thinking, tail.lstrip("\n")


def _split_verbatim(content: str) -> tuple[str, str | None]:
    """(thinking, content) as vLLM's and SGLang's Qwen3 parsers split a reply: a leading
    ``<think>`` dropped, the text before the first ``</think>`` and the text after it, whitespace
    kept; no ``</think>``: all thinking and ``None`` content (empty content is ``None`` too)."""
    head, sep, tail = content.partition("<think>")
    text = tail if sep else head
    thinking, sep, rest = text.partition("</think>")
    if not sep:
        return thinking, None
    return thinking, rest or None


def _completion_body(
    model: str, message: dict[str, Any], finish_reason: str, prompt_tokens: int,
    completion_tokens: int,
) -> dict[str, Any]:
    """vLLM's chat completion envelope around ``message``."""
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason,
                "stop_reason": None,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": None,
        },
        "prompt_logprobs": None,
    }


def _thinking_enabled(body: dict[str, Any]) -> bool:
    """False when the request sends ``chat_template_kwargs: {"enable_thinking": false}``."""
    kwargs = body.get("chat_template_kwargs")
    if kwargs is None:
        return True
    if not isinstance(kwargs, dict):
        raise _RequestError(400, "'chat_template_kwargs' must be an object.", "BadRequestError",
                            "chat_template_kwargs")
    return kwargs.get("enable_thinking") is not False


def _llamacpp_tokenize(body: dict[str, Any]) -> dict[str, Any]:
    """llama.cpp's ``/tokenize``: ``{"content": str, "with_pieces"?}`` -> ``{"tokens"}``; a
    body without ``content`` (e.g. vLLM's ``messages`` form) answers ``{"tokens": []}``."""
    if "content" not in body:
        return {"tokens": []}
    content = body["content"]
    if not isinstance(content, str):
        raise _RequestError(400, "'content' must be a string.", "invalid_request_error",
                            "content")
    pieces = tokenize(content)
    ids = token_ids(pieces)
    if body.get("with_pieces"):
        return {"tokens": [{"id": i, "piece": p} for i, p in zip(ids, pieces, strict=True)]}
    return {"tokens": ids}


def _llamacpp_timings(
    prompt_n: int, predicted_n: int, prompt_ms: float, predicted_ms: float
) -> dict[str, Any]:
    """llama.cpp's ``timings`` from the simulated latency; a rate over 0 ms is ``null`` (the
    real server's infinity, which its JSON writer prints as null)."""

    def per_token(ms: float, n: int) -> float | None:
        return ms / n if n else None

    def per_second(ms: float, n: int) -> float | None:
        return 1e3 / ms * n if ms > 0 else None

    return {
        "cache_n": 0,
        "prompt_n": prompt_n,
        "prompt_ms": prompt_ms,
        "prompt_per_token_ms": per_token(prompt_ms, prompt_n),
        "prompt_per_second": per_second(prompt_ms, prompt_n),
        "predicted_n": predicted_n,
        "predicted_ms": predicted_ms,
        "predicted_per_token_ms": per_token(predicted_ms, predicted_n),
        "predicted_per_second": per_second(predicted_ms, predicted_n),
    }


def _model_label(model: str) -> str:
    escaped = model.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'{{model_name="{escaped}"}}'


def _prometheus(metrics: list[tuple[str, str, str, float]], labels: str) -> str:
    """Prometheus text exposition; counters get ``_total`` (as prometheus_client writes them)
    unless their name already ends with it (llama.cpp's own writer)."""
    lines: list[str] = []
    for name, kind, help_text, value in metrics:
        sample = name
        if kind == "counter" and not name.endswith("_total"):
            sample = f"{name}_total"
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}",
                  f"{sample}{labels} {value}"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- judge

_JUDGE_RE = re.compile(
    r"<Preference>\n(?P<summary>.*?)</Preference>\n\n<Item A>\n(?P<a>.*?)\n</Item A>\n\n"
    r"<Item B>\n(?P<b>.*?)\n</Item B>",
    re.DOTALL,
)
_WORD_RE = re.compile(r"[^\W\d_][\w'-]*")


def judge_reply(messages: list[dict[str, str]]) -> tuple[str, float] | None:
    """Answer an AlignXplore+ pairwise-judgement prompt, or None for any other request.

    A transparent stand-in judge: it scores each item against the preference summary it was
    given (the baseline's signed term weights when the summary is a baseline one, else plain
    word overlap with the summary) and picks the higher; it never sees the gold answer.
    Returns (reply text, P(Item A)).
    """
    user_texts = [m["content"] for m in messages if m["role"] == "user"]
    match = _JUDGE_RE.search(user_texts[-1]) if user_texts else None
    if match is None:
        return None
    summary = match.group("summary")
    weights = parse_weights(summary)
    if not weights:
        weights = {w: 1.0 for w in _words(summary) if len(w) > 3}

    def score(text: str) -> float:
        return sum(weights.get(w, 0.0) for w in set(_words(text)))

    diff = score(match.group("a")) - score(match.group("b"))
    p_a = 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, diff))))
    letter = "A" if diff >= 0 else "B"
    return json.dumps({"selection": f"Item {letter}"}), p_a


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD_RE.findall(text)]


def _letter_logprobs(content: str, p_a: float) -> dict[str, Any]:
    """OpenAI-style logprobs for the reply, with the letter token's probability."""
    letter = "A" if '"Item A"' in content else "B"
    p = p_a if letter == "A" else 1.0 - p_a
    logprob = math.log(max(p, 1e-12))
    tokens = [('{"', 0.0), ("selection", 0.0), ('":', 0.0), (' "', 0.0), ("Item", 0.0),
              (" " + letter, logprob), ('"}', 0.0)]
    return {
        "content": [
            {"token": t, "logprob": lp, "bytes": None,
             "top_logprobs": [{"token": t, "logprob": lp, "bytes": None}]}
            for t, lp in tokens
        ]
    }


# --------------------------------------------------------------------------- app factory

STANDIN_KEY: web.AppKey[Standin] = web.AppKey("standin", Standin)


def build_app(config: StandinConfig | None = None) -> web.Application:
    """Create the aiohttp application; its state is ``app[STANDIN_KEY]``.

    Every shape serves ``/health``, ``/v1/models``, ``/v1/chat/completions``, ``/tokenize``,
    ``/metrics`` and the admin routes; ``llamacpp`` adds ``/apply-template`` and ``/slots``.
    Any other path is a 404.
    """
    standin = Standin(config or StandinConfig())
    app = web.Application(middlewares=[standin.stats_middleware])
    app[STANDIN_KEY] = standin
    app.router.add_get("/health", standin.health)
    app.router.add_get("/v1/models", standin.models)
    app.router.add_post("/v1/chat/completions", standin.chat_completions)
    app.router.add_post("/tokenize", standin.tokenize)
    app.router.add_get("/metrics", standin.metrics)
    if standin.shape == "llamacpp":
        app.router.add_post("/apply-template", standin.apply_template)
        app.router.add_get("/slots", standin.slots)
    app.router.add_get("/admin/faults", standin.get_faults)
    app.router.add_post("/admin/faults", standin.set_faults)
    app.router.add_get("/admin/stats", standin.get_stats)
    app.router.add_post("/admin/reset", standin.reset_stats)
    app.router.add_get("/admin/last", standin.get_last)
    return app


@asynccontextmanager
async def running_standin(
    config: StandinConfig | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    shutdown_timeout_s: float = 2.0,
) -> AsyncIterator[str]:
    """Serve the stand-in on ``host:port`` (0 = any free port); yield its base URL.

    Like vLLM, a request whose client disconnects is cancelled (its concurrency slot is freed).
    On exit, requests still running (for example injected hangs) get ``shutdown_timeout_s``
    seconds before they are cancelled.
    """
    runner = web.AppRunner(
        build_app(config),
        access_log=None,
        handler_cancellation=True,
        shutdown_timeout=shutdown_timeout_s,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        if ":" in bound_host:
            bound_host = f"[{bound_host}]"
        yield f"http://{bound_host}:{bound_port}"
    finally:
        await runner.cleanup()
