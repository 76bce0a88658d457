"""What differs between OpenAI-compatible inference servers, in one place.

vLLM, SGLang and llama.cpp's server all serve ``POST /v1/chat/completions``, but they differ in
what this client relies on (the README's *Serving* section has the server command lines):

============  ======================  ==========================  =============================
engine        repetition field        token counting              load signal
============  ======================  ==========================  =============================
vllm          ``repetition_penalty``  ``/tokenize`` (messages)    ``/metrics`` ``vllm:*``
sglang        ``repetition_penalty``  none usable (prompt only)   ``/metrics`` ``sglang:*``
llamacpp      ``repeat_penalty``      ``/apply-template`` then    ``/metrics`` ``llamacpp:*``
                                      ``/tokenize`` (content)
openai        ``repetition_penalty``  ``/tokenize`` (messages)    none
============  ======================  ==========================  =============================

The engine of an endpoint is read from its ``/v1/models`` card (``owned_by``: ``vllm``,
``sglang``, ``llamacpp``) unless ``STREAMER_MODEL__DIALECT`` names it; ``openai`` is any other
server, spoken to with vLLM's field names (the de-facto extension names).

Pure functions only: the HTTP calls live in :mod:`.client`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Engine = Literal["vllm", "sglang", "llamacpp", "openai"]
ENGINES: tuple[Engine, ...] = ("vllm", "sglang", "llamacpp", "openai")

_OWNERS: dict[str, Engine] = {"vllm": "vllm", "sglang": "sglang", "llamacpp": "llamacpp"}


@dataclass(frozen=True, slots=True)
class Sampling:
    """The reference sampling of AlignXplore+ (every field sent explicitly: engines' defaults
    differ, e.g. llama.cpp applies min_p 0.05 when the field is absent)."""

    temperature: float = 0.6
    top_p: float = 0.95
    top_k: int = 20
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    max_tokens: int = 4096

    def fields(self, engine: Engine) -> dict[str, float | int]:
        """The request fields, under the names ``engine`` understands."""
        repetition = "repeat_penalty" if engine == "llamacpp" else "repetition_penalty"
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "min_p": self.min_p,
            repetition: self.repetition_penalty,
            "max_tokens": self.max_tokens,
        }


def detect_engine(models_body: Mapping[str, Any]) -> Engine:
    """The engine behind a ``GET /v1/models`` answer (``openai`` when it does not say)."""
    for card in _cards(models_body):
        owner = str(card.get("owned_by") or "").lower()
        if owner in _OWNERS:
            return _OWNERS[owner]
    return "openai"


def served_models(models_body: Mapping[str, Any]) -> list[str]:
    """Every name a ``/v1/models`` answer serves: ids and aliases (llama.cpp ``--alias``)."""
    names: list[str] = []
    for card in _cards(models_body):
        for name in [card.get("id"), *(card.get("aliases") or [])]:
            if isinstance(name, str) and name and name not in names:
                names.append(name)
    return names


def served_context(models_body: Mapping[str, Any], model: str) -> int | None:
    """The context (tokens) the server gives one request of ``model``: ``max_model_len``
    (vLLM, SGLang) or llama.cpp's per-slot ``meta.n_ctx``; None when it does not say."""
    for card in _cards(models_body):
        if model not in (card.get("id"), *(card.get("aliases") or [])):
            continue
        for value in (card.get("max_model_len"), (card.get("meta") or {}).get("n_ctx")):
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None


def _cards(models_body: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    data = models_body.get("data") if isinstance(models_body, Mapping) else None
    return [c for c in data if isinstance(c, Mapping)] if isinstance(data, list) else []


def token_count(body: Any) -> int | None:
    """The count in a ``/tokenize`` answer: ``count`` (vLLM, SGLang) or the length of
    ``tokens`` (llama.cpp); None when it has neither, or an empty token list (llama.cpp's answer
    to a request shape it does not know)."""
    if not isinstance(body, Mapping):
        return None
    count = body.get("count")
    if isinstance(count, int) and not isinstance(count, bool) and count >= 0:
        return count
    tokens = body.get("tokens")
    if isinstance(tokens, list) and tokens:
        return len(tokens)
    return None


# --------------------------------------------------------------------------- load


@dataclass(frozen=True, slots=True)
class ServerLoad:
    """What a server says about its own queue (all clients' requests, not only ours)."""

    running: float
    waiting: float
    kv_usage: float | None = None  # 0..1

    @property
    def queued(self) -> float:
        return self.running + self.waiting


_METRICS: dict[Engine, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    # (running, waiting, kv usage) metric names, first found wins
    "vllm": (("vllm:num_requests_running",), ("vllm:num_requests_waiting",),
             ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")),
    "sglang": (("sglang:num_running_reqs",), ("sglang:num_queue_reqs",), ("sglang:token_usage",)),
    "llamacpp": (("llamacpp:requests_processing",), ("llamacpp:requests_deferred",),
                 ("llamacpp:kv_cache_usage_ratio",)),
}

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def parse_prometheus(text: str) -> dict[str, float]:
    """Sum of the samples of each metric in Prometheus text exposition (labels summed over:
    one server may report per model or per engine)."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match is None:
            continue
        try:
            value = float(match.group(3))
        except ValueError:
            continue
        if math.isfinite(value):
            values[match.group(1)] = values.get(match.group(1), 0.0) + value
    return values


def parse_load(engine: Engine, metrics_text: str) -> ServerLoad | None:
    """The load in a server's ``/metrics``; None when the engine exports no known gauges."""
    names = _METRICS.get(engine)
    if names is None:
        return None
    values = parse_prometheus(metrics_text)

    def first(candidates: tuple[str, ...]) -> float | None:
        return next((values[n] for n in candidates if n in values), None)

    running, waiting, kv = (first(n) for n in names)
    if running is None and waiting is None:
        return None
    return ServerLoad(running=running or 0.0, waiting=waiting or 0.0, kv_usage=kv)


def slots_load(slots_body: Any) -> ServerLoad | None:
    """llama.cpp ``GET /slots``: slots processing now (it has no queue gauge there)."""
    if not isinstance(slots_body, list):
        return None
    busy = sum(1 for s in slots_body if isinstance(s, Mapping) and s.get("is_processing"))
    return ServerLoad(running=float(busy), waiting=0.0,
                      kv_usage=busy / len(slots_body) if slots_body else None)


# --------------------------------------------------------------------------- reports


@dataclass(slots=True)
class EndpointReport:
    """What one endpoint supports, from its self-check (``streamer doctor``)."""

    base_url: str
    reachable: bool = False
    engine: Engine | None = None
    models: list[str] = field(default_factory=list)
    context: int | None = None
    sampling: str = "unchecked"  # "ok", "rejected: ...", "unchecked"
    tokenize: str = "unchecked"  # "messages", "template", "none", "unchecked"
    load: str = "unchecked"  # "metrics", "slots", "none", "unchecked"
    problems: list[str] = field(default_factory=list)
    error: str | None = None  # why it could not be checked (unreachable...)

    @property
    def ok(self) -> bool:
        return self.reachable and not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "base_url": self.base_url, "reachable": self.reachable, "engine": self.engine,
            "models": self.models, "context": self.context, "sampling": self.sampling,
            "tokenize": self.tokenize, "load": self.load, "problems": self.problems,
            "error": self.error,
        }


def model_problems(models_body: Mapping[str, Any], *, model: str, context_tokens: int,
                   base_url: str) -> list[str]:
    """What is wrong between ``/v1/models`` and the settings, each saying what to change."""
    served = served_models(models_body)
    if model not in served:
        listed = ", ".join(served) or "nothing"
        return [f"{base_url} does not serve {model!r} (it serves: {listed}); set "
                f"STREAMER_MODEL__MODEL to the served name, or start the server with that name "
                f"(vllm serve --served-model-name, llama.cpp --alias)"]
    context = served_context(models_body, model)
    if context is not None and context < context_tokens:
        return [f"{base_url} serves {model!r} with a context of {context} tokens, below "
                f"STREAMER_MODEL__CONTEXT_TOKENS={context_tokens}; set "
                f"STREAMER_MODEL__CONTEXT_TOKENS={context} (longer windows are then cut), or "
                f"start the server with a larger context (vllm serve --max-model-len "
                f"{context_tokens}, llama.cpp -c {context_tokens} x parallel slots)"]
    return []
