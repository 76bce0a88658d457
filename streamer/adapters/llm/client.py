"""OpenAI-compatible chat-completions client for a pool of vLLM (or SGLang, llama.cpp) servers.

One request per update, sampling as the reference (temperature 0.6, top_p 0.95, top_k 20,
min_p 0, repetition penalty 1, max_tokens 4096), every field sent explicitly under the name the
endpoint's engine understands (:mod:`.engines`).  Errors are mapped at this boundary:
:class:`ModelUnavailableError` (transient) and :class:`ModelRequestError` (permanent).

The pool:

- **Endpoints** come from a static list of base URLs (``http://vllm-0:8000/v1``) and/or DNS
  entries (``dns+http://vllm-headless.ns.svc:8000/v1``, e.g. a Kubernetes headless service).
  A DNS entry is resolved (all A/AAAA records) into one endpoint per address and re-resolved
  every ``dns_refresh_s``: new addresses are added, vanished ones are drained (no new requests,
  removed once their requests are done).  A failed resolution keeps the previous addresses.
- **Engines**: an endpoint's engine (vLLM, SGLang, llama.cpp, other) is read from its
  ``/v1/models`` before its first request (or fixed by ``dialect``); an endpoint that does not
  serve the model, or serves it with a smaller context than ``context_tokens``, is not used.
  :meth:`self_check` checks every endpoint (sampling fields included) for ``streamer doctor``
  and the worker's startup.
- **Balancing**: each attempt goes to the usable endpoint with the least load (ties rotate), never
  above ``max_concurrency_per_endpoint`` requests per endpoint.  Load is the server's own queue
  (running + waiting, all clients, read from ``/metrics`` every ``load_interval_s``) plus our
  requests sent since that read, where the server exports it, else our outstanding requests;
  with ``routing="load"`` that queue is weighed by the endpoint's observed seconds per token
  (an EWMA), so a slow server's short queue does not beat a fast server's longer one.  A
  re-attempt of an identical prompt prefers the endpoint that served it (its prefix cache),
  unless that endpoint failed it; ``affinity="user"`` sends a user's
  updates to one endpoint (rendezvous hash of the user id) while it has room.  When every
  usable endpoint is at its cap, :meth:`generate` waits for a free slot (at most ``timeout_s``):
  that is the backpressure point; :attr:`saturated`, :attr:`in_flight` and :attr:`capacity`
  expose it for readiness and metrics.
- **Health**: a background task (started on first use, stopped by :meth:`aclose`) polls
  ``GET {root}/health`` every ``health_interval_s`` (root = base URL without ``/v1``); an endpoint
  that fails it is skipped until it passes again.  A 404 (no such route) counts as healthy.
- **Circuit breaker** per endpoint (:class:`~.breaker.CircuitBreaker`): ``breaker_failures``
  consecutive transient failures open it for ``breaker_reset_s``, then one trial request decides.
- **Retries**: a transient failure (timeout, connection error, 408/409/425/429, 5xx, malformed
  JSON) is retried on another endpoint when there is one, up to ``max_retries`` times, after an
  exponential backoff with jitter.  Other 4xx answers are permanent and not retried.  When no
  endpoint is usable at all (all unhealthy or open) the call fails fast (transient).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import socket
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

from ...errors import ModelRequestError, ModelUnavailableError
from ...ports import ModelReply, UpdateRequest
from ...settings import ModelSettings, default_of
from .breaker import BreakerState, CircuitBreaker
from .engines import (
    EndpointReport,
    Engine,
    Sampling,
    ServerLoad,
    detect_engine,
    model_problems,
    parse_load,
    served_context,
    served_models,
    slots_load,
    token_count,
)

log = logging.getLogger(__name__)

TRANSIENT_4XX = frozenset({408, 409, 425, 429})
"""4xx answers that are worth retrying (timeout, conflict, too early, rate limited)."""
_NO_ROUTE = frozenset({404, 405, 501})
"""Answers meaning "this server has no such route" (for /health and /tokenize)."""
_REFUSED = frozenset({400, 404, 405, 422, 501})
"""Answers meaning "this server will not do that": a negative answer to cache (/tokenize)."""
_IDENTIFY_RETRY_S = 5.0
"""An endpoint whose ``/v1/models`` could not be read is asked again after this long."""
_RECHECK_S = 30.0
"""A misconfigured endpoint (wrong model, small context) is checked again after this long."""
_SPEED_EWMA = 0.3
"""Weight of the newest sample in an endpoint's observed speed."""
_STICKY_PROMPTS = 4096
"""Prompts remembered with the endpoint that served them (re-attempts reuse its cache)."""

Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
"""``async (host, port) -> IP addresses``: how DNS entries are resolved."""


def is_transient_status(status: int) -> bool:
    """Whether an HTTP status from a model server is worth retrying elsewhere."""
    return status >= 500 or status in TRANSIENT_4XX


async def resolve_all(host: str, port: int) -> list[str]:
    """Every address (A and AAAA records) of ``host``, in resolver order, without duplicates."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    ips: list[str] = []
    for family, _type, _proto, _name, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        ip = str(sockaddr[0])
        if ip not in ips:
            ips.append(ip)
    return ips


@dataclass(frozen=True, slots=True)
class _DnsEntry:
    """A ``dns+http(s)://host:port/path`` entry of the endpoint list."""

    source: str
    scheme: str
    host: str
    port: int
    path: str
    netloc: str

    @classmethod
    def parse(cls, entry: str) -> _DnsEntry:
        parts = urlsplit(entry[len("dns+"):])
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"invalid DNS model endpoint {entry!r} (want dns+http://host:port/v1)")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return cls(entry, parts.scheme, parts.hostname, port, parts.path.rstrip("/"), parts.netloc)

    def url_for(self, ip: str) -> str:
        host = f"[{ip}]" if ":" in ip else ip
        return f"{self.scheme}://{host}:{self.port}{self.path}"


def _root_of(base_url: str) -> str:
    """The server root of an OpenAI base URL: ``http://h:8000/v1`` -> ``http://h:8000``."""
    return base_url[: -len("/v1")] if base_url.endswith("/v1") else base_url


@dataclass(eq=False)
class _Endpoint:
    base_url: str
    source: str
    breaker: CircuitBreaker
    headers: dict[str, str] = field(default_factory=dict)
    extensions: dict[str, Any] = field(default_factory=dict)
    outstanding: int = 0
    healthy: bool = True
    draining: bool = False
    tokenize_supported: bool | None = None
    requests: int = 0
    failures: int = 0
    engine: Engine | None = None  # None: not identified yet
    problem: str | None = None  # misconfigured (wrong model, small context): not used
    load: ServerLoad | None = None
    load_at: float = 0.0
    load_outstanding: int = 0  # our outstanding requests when ``load`` was read
    load_supported: bool | str | None = None  # "metrics", "slots"; False: none
    identify_tried: float = float("-inf")
    s_per_token: float | None = None  # EWMA of observed seconds per generated token
    identify_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def root(self) -> str:
        return _root_of(self.base_url)


@dataclass(frozen=True, slots=True)
class EndpointStatus:
    """A snapshot of one endpoint (metrics, status pages, tests)."""

    base_url: str
    source: str
    healthy: bool
    draining: bool
    outstanding: int
    breaker: str
    consecutive_failures: int
    requests: int
    failures: int
    engine: str | None = None
    problem: str | None = None
    server_queue: float | None = None


class _NoUsableEndpoint(ModelUnavailableError):
    """Every endpoint is unhealthy, draining or behind an open breaker."""


def _count(value: Any) -> int:
    """A usage count; missing, null or not a number counts as 0 (servers differ)."""
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def _reasoning(message: Mapping[str, Any]) -> str | None:
    """The thinking a server split out of ``content``: ``reasoning`` (vLLM 0.11.1+) or
    ``reasoning_content`` (vLLM <= 0.11.0, llama.cpp, SGLang); None when inline or absent."""
    for key in ("reasoning", "reasoning_content"):
        value = message.get(key)
        if isinstance(value, str) and value.strip():
            return value
    return None


def _top_logprobs(logprobs: Any) -> tuple[tuple[tuple[str, float], ...], ...]:
    """Per generated token, its (token, logprob) alternatives (``top_logprobs``, else the token
    itself), from an OpenAI ``choice.logprobs``; () when absent or malformed."""
    content = logprobs.get("content") if isinstance(logprobs, Mapping) else None
    out = []
    for tok in content if isinstance(content, list) else ():
        if not isinstance(tok, Mapping):
            continue
        alternatives = tok.get("top_logprobs") or [tok]
        out.append(tuple((str(a["token"]), float(a["logprob"])) for a in alternatives
                         if isinstance(a, Mapping) and isinstance(a.get("logprob"), int | float)
                         and "token" in a))
    return tuple(out)


def _M(name: str) -> Any:  # noqa: N802 - reads as the settings default it is
    return default_of(ModelSettings, name)


def _sampling(value: Sampling | Mapping[str, float | int] | None) -> Sampling:
    """A :class:`Sampling`; a mapping overrides the reference fields it names (the others keep
    the reference value)."""
    if isinstance(value, Sampling):
        return value
    reference = {f.name: _M(f.name) for f in fields(Sampling)}
    unknown = set(value or {}) - set(reference)
    if unknown:
        raise ValueError(f"unknown sampling fields {sorted(unknown)} (known: {sorted(reference)})")
    return Sampling(**{**reference, **(value or {})})


def _prompt_key(messages: Sequence[Mapping[str, str]]) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for m in messages:
        digest.update(m["role"].encode() + b"\0" + m["content"].encode() + b"\0")
    return digest.hexdigest()


def _rendezvous(key: str, url: str) -> int:
    """Highest-random-weight hash: each key ranks the endpoints; one joining or leaving moves
    only the keys that rank it first."""
    return int.from_bytes(hashlib.blake2b(f"{key}\0{url}".encode(), digest_size=8).digest(), "big")


class OpenAICompatSummaryModel:
    """A :class:`~streamer.ports.SummaryModel` over a pool of OpenAI-compatible endpoints."""

    def __init__(
        self,
        base_urls: Sequence[str],
        *,
        model: str,
        api_key: str = "EMPTY",
        timeout_s: float = _M("timeout_s"),
        max_retries: int = _M("max_retries"),
        sampling: Sampling | Mapping[str, float | int] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        max_concurrency_per_endpoint: int = _M("max_concurrency_per_endpoint"),
        health_interval_s: float | None = _M("health_interval_s"),
        health_timeout_s: float = 2.0,
        breaker_failures: int = _M("breaker_failures"),
        breaker_reset_s: float = _M("breaker_reset_s"),
        dns_refresh_s: float = _M("dns_refresh_s"),
        resolver: Resolver | None = None,
        backoff_base_s: float = 0.2,
        backoff_max_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        dialect: Literal["auto", "vllm", "sglang", "llamacpp", "openai"] = _M("dialect"),
        context_tokens: int | None = None,
        routing: Literal["load", "outstanding"] = _M("routing"),
        load_interval_s: float = _M("load_interval_s"),
        affinity: Literal["none", "user"] = _M("affinity"),
        extra_body: Mapping[str, Any] | None = None,
    ) -> None:
        if not base_urls:
            raise ValueError("at least one model endpoint is required")
        if max_concurrency_per_endpoint < 1:
            raise ValueError("max_concurrency_per_endpoint must be >= 1")
        if timeout_s <= 0 or dns_refresh_s <= 0 or health_timeout_s <= 0 or load_interval_s <= 0:
            raise ValueError("timeouts and intervals must be > 0")
        self.name = model
        self.model = model
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.sampling = _sampling(sampling)
        self.dialect = dialect
        self.context_tokens = context_tokens
        self.routing = routing
        self.load_interval_s = load_interval_s
        self.affinity = affinity
        reserved = {"model", "messages", "n", "chat_template_kwargs", *self.sampling.fields("vllm"),
                    *self.sampling.fields("llamacpp")}
        clash = sorted(reserved & set(extra_body or {}))
        if clash:
            raise ValueError(f"extra_body cannot set {clash}: they have their own settings")
        self.extra_body = dict(extra_body or {})
        self._served_by: OrderedDict[str, str] = OrderedDict()
        self.max_concurrency_per_endpoint = max_concurrency_per_endpoint
        self.health_interval_s = health_interval_s if health_interval_s and health_interval_s > 0 else None
        self.health_timeout_s = health_timeout_s
        self.breaker_failures = breaker_failures
        self.breaker_reset_s = breaker_reset_s
        self.dns_refresh_s = dns_refresh_s
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self._resolver: Resolver = resolver or resolve_all
        self._clock = clock

        self._static: list[str] = []
        self._dns: list[_DnsEntry] = []
        for raw in base_urls:
            entry = raw.strip()
            if entry.startswith("dns+"):
                self._dns.append(_DnsEntry.parse(entry))
            else:
                self._static.append(entry.rstrip("/"))
        self._dns_urls: dict[str, list[str]] = {}
        self._endpoints: list[_Endpoint] = []
        self._changed = asyncio.Event()
        self._reconcile()

        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s, connect=min(10.0, timeout_s)),
            headers={"Authorization": f"Bearer {api_key}"},
            # concurrency is capped per endpoint by the pool itself
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
            transport=transport,
        )
        self._start_lock = asyncio.Lock()
        self._started = False
        self._closed = False
        self._tasks: list[asyncio.Task[None]] = []
        self._waiting = 0
        self._rotation = 0
        self._rng = random.Random()

    @classmethod
    def from_settings(cls, settings: ModelSettings) -> OpenAICompatSummaryModel:
        return cls(
            settings.base_urls,
            model=settings.model,
            api_key=settings.api_key.get_secret_value(),
            timeout_s=settings.timeout_s,
            max_retries=settings.max_retries,
            sampling=Sampling(**{f.name: getattr(settings, f.name) for f in fields(Sampling)}),
            max_concurrency_per_endpoint=settings.max_concurrency_per_endpoint,
            health_interval_s=settings.health_interval_s,
            breaker_failures=settings.breaker_failures,
            breaker_reset_s=settings.breaker_reset_s,
            dns_refresh_s=settings.dns_refresh_s,
            dialect=settings.dialect,
            context_tokens=settings.context_tokens,
            routing=settings.routing,
            load_interval_s=settings.load_interval_s,
            affinity=settings.affinity,
            extra_body=settings.extra_body,
        )

    # ------------------------------------------------------------------ observation

    @property
    def configured_urls(self) -> list[str]:
        """The endpoint list as configured (static URLs and ``dns+`` entries)."""
        return [*self._static, *(entry.source for entry in self._dns)]

    @property
    def in_flight(self) -> int:
        """Requests currently sent to the pool's endpoints."""
        return sum(e.outstanding for e in self._endpoints)

    @property
    def capacity(self) -> int:
        """Concurrent requests the usable endpoints take (cap x healthy, non-open endpoints)."""
        return self.max_concurrency_per_endpoint * sum(1 for e in self._endpoints if self._usable(e))

    @property
    def saturated(self) -> bool:
        """True when no endpoint can take a request right now (all at their cap, or none
        usable): a :meth:`generate` call would wait.  False before first use."""
        if not self._started:
            return False
        return not any(self._can_take(e) for e in self._endpoints)

    @property
    def waiting(self) -> int:
        """:meth:`generate` calls waiting for a free slot."""
        return self._waiting

    @property
    def endpoints(self) -> list[EndpointStatus]:
        """A snapshot of every endpoint, draining ones included."""
        return [
            EndpointStatus(
                base_url=e.base_url,
                source=e.source,
                healthy=e.healthy,
                draining=e.draining,
                outstanding=e.outstanding,
                breaker=e.breaker.state.value,
                consecutive_failures=e.breaker.consecutive_failures,
                requests=e.requests,
                failures=e.failures,
                engine=e.engine,
                problem=e.problem,
                server_queue=e.load.queued if self._fresh_load(e) and e.load else None,
            )
            for e in self._endpoints
        ]

    def _usable(self, e: _Endpoint) -> bool:
        return (e.healthy and not e.draining and e.problem is None
                and e.breaker.state is not BreakerState.OPEN)

    def _can_take(self, e: _Endpoint) -> bool:
        return (
            self._usable(e)
            and e.outstanding < self.max_concurrency_per_endpoint
            and e.breaker.can_acquire()
        )

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        """Resolve DNS entries and start the health and DNS tasks (done lazily on first use)."""
        if self._started:
            return
        if self._closed:
            raise ModelUnavailableError("the model client is closed")
        async with self._start_lock:
            if self._started:
                return
            if self._dns:
                await self.refresh_dns()
                self._tasks.append(asyncio.create_task(self._dns_loop(), name="llm-pool-dns"))
            if self.health_interval_s is not None:
                self._tasks.append(
                    asyncio.create_task(self._health_loop(), name="llm-pool-health")
                )
            if self.routing == "load":
                self._tasks.append(asyncio.create_task(self._load_loop(), name="llm-pool-load"))
            self._started = True

    async def aclose(self) -> None:
        self._closed = True
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._notify()
        await self._client.aclose()

    def _notify(self) -> None:
        """Wake the calls waiting for a slot (something changed)."""
        self._changed.set()
        self._changed = asyncio.Event()

    # ------------------------------------------------------------------ endpoints and DNS

    def _reconcile(self) -> None:
        """Make the endpoint list match static + resolved URLs (drain the vanished ones)."""
        wanted: dict[str, tuple[str, _DnsEntry | None]] = {}
        for url in self._static:
            wanted.setdefault(url, (url, None))
        for entry in self._dns:
            for url in self._dns_urls.get(entry.source, []):
                wanted.setdefault(url, (entry.source, entry))
        known = {e.base_url: e for e in self._endpoints}
        for url, (source, entry) in wanted.items():
            endpoint = known.get(url)
            if endpoint is not None:
                if endpoint.draining:
                    log.info("model endpoint %s is back (%s)", url, source)
                    endpoint.draining = False
                continue
            endpoint = _Endpoint(
                url, source, CircuitBreaker(self.breaker_failures, self.breaker_reset_s,
                                            clock=self._clock)
            )
            if entry is not None:
                endpoint.headers["Host"] = entry.netloc
                if entry.scheme == "https":
                    endpoint.extensions["sni_hostname"] = entry.host
            self._endpoints.append(endpoint)
            if entry is not None:
                log.info("model endpoint %s added (%s)", url, source)
        for endpoint in self._endpoints:
            if endpoint.base_url not in wanted and not endpoint.draining:
                log.info("model endpoint %s left %s: draining", endpoint.base_url, endpoint.source)
                endpoint.draining = True
        self._endpoints = [e for e in self._endpoints if not (e.draining and e.outstanding == 0)]
        self._notify()

    async def refresh_dns(self) -> None:
        """Re-resolve every DNS entry now (a failed resolution keeps the previous addresses)."""
        if not self._dns:
            return
        results = await asyncio.gather(
            *(self._resolver(entry.host, entry.port) for entry in self._dns),
            return_exceptions=True,
        )
        for entry, result in zip(self._dns, results, strict=True):
            if isinstance(result, BaseException) or not result:
                log.warning("cannot resolve model endpoint %s (%r); keeping %d known addresses",
                            entry.source, result, len(self._dns_urls.get(entry.source, [])))
                continue
            self._dns_urls[entry.source] = [entry.url_for(ip) for ip in result]
        self._reconcile()

    async def _dns_loop(self) -> None:
        while True:
            unresolved = any(not self._dns_urls.get(e.source) for e in self._dns)
            await asyncio.sleep(min(self.dns_refresh_s, 2.0) if unresolved else self.dns_refresh_s)
            try:
                await self.refresh_dns()
            except Exception:  # never let the loop die
                log.exception("model endpoint DNS refresh failed")

    # ------------------------------------------------------------------ health

    async def check_health(self) -> None:
        """Probe every (non-draining) endpoint once now."""
        await asyncio.gather(*(self._probe(e) for e in self._endpoints if not e.draining))

    async def _probe(self, endpoint: _Endpoint) -> None:
        try:
            async with asyncio.timeout(self.health_timeout_s):
                resp = await self._client.get(
                    f"{endpoint.root}/health",
                    headers=endpoint.headers,
                    extensions=endpoint.extensions,
                    timeout=self.health_timeout_s,
                )
            healthy = resp.is_success or resp.status_code in _NO_ROUTE
            why = f"status {resp.status_code}"
        except (TimeoutError, httpx.TimeoutException):
            healthy, why = False, "timeout"
        except httpx.RequestError as exc:
            healthy, why = False, repr(exc)
        if healthy != endpoint.healthy:
            endpoint.healthy = healthy
            if healthy:
                log.info("model endpoint %s is healthy again", endpoint.base_url)
            else:
                log.warning("model endpoint %s failed its health check (%s)", endpoint.base_url, why)
            self._notify()

    async def _health_loop(self) -> None:
        assert self.health_interval_s is not None
        while True:
            try:
                await self.check_health()
            except Exception:  # never let the loop die
                log.exception("model endpoint health check failed")
            await asyncio.sleep(self.health_interval_s)

    # ------------------------------------------------------------------ engines

    def engine_of(self, endpoint: _Endpoint) -> Engine:
        """The engine an endpoint is spoken to as (``openai`` until identified)."""
        if self.dialect != "auto":
            return self.dialect
        return endpoint.engine or "openai"

    async def _get_json(self, endpoint: _Endpoint, path: str) -> tuple[int, Any]:
        """``GET {root}{path}`` with the health timeout: (status, JSON body or None)."""
        async with asyncio.timeout(self.health_timeout_s * 2):
            resp = await self._client.get(f"{endpoint.root}{path}", headers=endpoint.headers,
                                          extensions=endpoint.extensions,
                                          timeout=self.health_timeout_s * 2)
        try:
            return resp.status_code, resp.json()
        except ValueError:
            return resp.status_code, None

    async def _identify(self, endpoint: _Endpoint, report: EndpointReport | None = None) -> None:
        """Read ``/v1/models``: the engine, and whether the endpoint serves the model with
        enough context (else it is marked misconfigured and not used).  Unreachable: left
        unidentified (asked again before the next request)."""
        async with endpoint.identify_lock:
            if endpoint.engine is not None and endpoint.problem is None and report is None:
                return
            try:
                status, body = await self._get_json(endpoint, "/v1/models")
            except (TimeoutError, httpx.HTTPError) as exc:
                if report is not None:
                    report.error = f"cannot reach {endpoint.root}/v1/models: {exc!r}"
                log.debug("cannot identify model endpoint %s: %r", endpoint.base_url, exc)
                return
            if report is not None:
                report.reachable = True
            if status != 200 or not isinstance(body, Mapping):
                endpoint.engine = endpoint.engine or "openai"
                if report is not None:
                    report.engine = self.engine_of(endpoint)
                    report.error = f"GET /v1/models answered {status}; model and context unchecked"
                return
            endpoint.engine = detect_engine(body)
            problems = model_problems(body, model=self.model, base_url=endpoint.base_url,
                                      context_tokens=self.context_tokens or 0)
            self._set_problem(endpoint, problems[0] if problems else None)
            if report is not None:
                report.engine = self.engine_of(endpoint)
                report.models = served_models(body)
                report.context = served_context(body, self.model)
                report.problems.extend(problems)

    async def _identify_new(self) -> None:
        """Identify the endpoints not identified yet (``dialect=auto``) before routing to them;
        one that could not be reached is asked again after ``_IDENTIFY_RETRY_S``, a
        misconfigured one after ``_RECHECK_S`` (the server may have been fixed)."""
        now = self._clock()
        due = [e for e in self._endpoints if not e.draining and (
            (e.engine is None and self.dialect == "auto"
             and now - e.identify_tried >= _IDENTIFY_RETRY_S)
            or (e.problem is not None and now - e.identify_tried >= _RECHECK_S))]
        for e in due:
            e.identify_tried = now
        if due:
            await asyncio.gather(*(self._identify(e) for e in due))

    def _set_problem(self, endpoint: _Endpoint, problem: str | None) -> None:
        if problem and problem != endpoint.problem:
            log.error("model endpoint %s is not used: %s", endpoint.base_url, problem)
        elif endpoint.problem and not problem:
            log.info("model endpoint %s is usable again: it now serves the model as configured",
                     endpoint.base_url)
        endpoint.problem = problem
        self._notify()

    async def self_check(self, *, probe_sampling: bool = True) -> list[EndpointReport]:
        """Check every endpoint (``streamer doctor``, the worker's startup): reachable, engine,
        the model served with enough context, the sampling fields accepted (one 1-token call),
        token counting and load signals.  Misconfigured endpoints are taken out of use."""
        if self._dns and not self._started:
            await self.refresh_dns()
        return list(await asyncio.gather(*(
            self._check(e, probe_sampling) for e in self._endpoints if not e.draining)))

    async def _check(self, endpoint: _Endpoint, probe_sampling: bool) -> EndpointReport:
        report = EndpointReport(endpoint.base_url)
        await self._identify(endpoint, report)
        if not report.reachable or report.problems:
            return report
        if probe_sampling:
            problem = await self._probe_sampling(endpoint)
            report.sampling = "ok" if problem is None else "rejected"
            if problem is not None:
                report.problems.append(problem)
                self._set_problem(endpoint, problem)
                return report
        endpoint.tokenize_supported = None  # ask again
        count = await self._tokenize_on(endpoint, [{"role": "user", "content": "ping"}])
        report.tokenize = (("template" if self.engine_of(endpoint) == "llamacpp" else "messages")
                           if count is not None else "none")
        endpoint.load_supported = None
        await self._read_load(endpoint)
        report.load = ("none" if not endpoint.load_supported
                       else "slots" if endpoint.load_supported == "slots" else "metrics")
        return report

    async def _probe_sampling(self, endpoint: _Endpoint) -> str | None:
        """One 1-token chat call with every sampling field: what a refusal says, or None."""
        body = {"model": self.model, "messages": [{"role": "user", "content": "ping"}], "n": 1,
                **self.sampling.fields(self.engine_of(endpoint)), **self.extra_body,
                "max_tokens": 1,
                "chat_template_kwargs": {"enable_thinking": True}}
        try:
            async with asyncio.timeout(self.timeout_s):
                resp = await self._client.post(f"{endpoint.base_url}/chat/completions", json=body,
                                               headers=endpoint.headers,
                                               extensions=endpoint.extensions)
        except (TimeoutError, httpx.HTTPError) as exc:
            log.warning("sampling check of %s failed: %r", endpoint.base_url, exc)
            return None  # not a refusal: the pool's health and retries handle it
        if resp.status_code in (400, 422):
            sent = ", ".join(f"{k}={v}" for k, v in self.sampling.fields(
                self.engine_of(endpoint)).items())
            return (f"{endpoint.base_url} ({self.engine_of(endpoint)}) refused the sampling fields "
                    f"({resp.status_code}: {resp.text[:300]}); sent: {sent}.  Set "
                    f"STREAMER_MODEL__DIALECT to the server's engine (vllm, sglang, llamacpp) "
                    f"or use a server that takes these fields")
        return None

    # ------------------------------------------------------------------ load

    def _fresh_load(self, endpoint: _Endpoint) -> bool:
        return (endpoint.load is not None
                and self._clock() - endpoint.load_at <= 5 * self.load_interval_s)

    async def _read_load(self, endpoint: _Endpoint) -> None:
        """Read an endpoint's own queue (``/metrics``; llama.cpp ``/slots`` when it has no
        metrics).  An engine or server without either is not asked again."""
        if self.dialect == "auto" and endpoint.engine is None:
            return  # not identified yet
        engine = self.engine_of(endpoint)
        if endpoint.load_supported is False or engine == "openai":
            endpoint.load_supported = False
            return
        outstanding = endpoint.outstanding
        load: ServerLoad | None = None
        source: str | bool = False
        try:
            async with asyncio.timeout(self.health_timeout_s):
                resp = await self._client.get(f"{endpoint.root}/metrics", headers=endpoint.headers,
                                              extensions=endpoint.extensions,
                                              timeout=self.health_timeout_s)
            if resp.is_success:
                load = parse_load(engine, resp.text)
                source = "metrics" if load is not None else False
            if load is None and engine == "llamacpp":
                status, body = await self._get_json(endpoint, "/slots")
                load = slots_load(body) if status == 200 else None
                source = "slots" if load is not None else False
        except (TimeoutError, httpx.HTTPError) as exc:
            log.debug("load of %s unread: %r", endpoint.base_url, exc)
            return  # unknown this time; the previous reading goes stale
        if load is None:
            if endpoint.load_supported is None:
                log.info("model endpoint %s exports no load (%s): routing on outstanding requests",
                         endpoint.base_url, engine)
            endpoint.load_supported = False
            return
        endpoint.load_supported = source
        endpoint.load, endpoint.load_at, endpoint.load_outstanding = load, self._clock(), outstanding
        self._notify()

    async def _load_loop(self) -> None:
        while True:
            try:
                await asyncio.gather(*(self._read_load(e) for e in self._endpoints
                                       if self._usable(e) and e.engine is not None
                                       and e.load_supported is not False))
            except Exception:  # never let the loop die
                log.exception("model endpoint load read failed")
            await asyncio.sleep(self.load_interval_s)

    def _score(self, e: _Endpoint) -> float:
        """How long a new request would wait at an endpoint (lower is better; ties rotate).

        ``routing="outstanding"``: our outstanding requests.  ``routing="load"``: the requests
        ahead of it, the server's own queue (all clients) plus what we sent since it was read
        when known and fresh, else ours; times the endpoint's observed seconds per generated
        token (an EWMA, as "peak EWMA" balancers weigh load), so that a short queue on a slow
        server does not beat a longer one on a fast server.  Idle endpoints tie at 0 whatever
        their speed, so that light traffic still spreads (and every speed stays measured).  An
        endpoint not measured yet counts at the pool's mean speed."""
        if self.routing != "load":
            return float(e.outstanding)
        ahead = float(e.outstanding)
        kv = 0.0
        if e.load is not None and self._fresh_load(e):
            ahead = max(ahead, e.load.queued + e.outstanding - e.load_outstanding)
            kv = e.load.kv_usage or 0.0
        return (ahead + kv) * (e.s_per_token or self._mean_s_per_token())

    def _mean_s_per_token(self) -> float:
        known = [e.s_per_token for e in self._endpoints if e.s_per_token]
        return sum(known) / len(known) if known else 1.0

    def _observe(self, e: _Endpoint, latency_s: float, completion_tokens: int) -> None:
        sample = latency_s / max(1, completion_tokens)
        e.s_per_token = sample if e.s_per_token is None else (
            (1 - _SPEED_EWMA) * e.s_per_token + _SPEED_EWMA * sample)

    # ------------------------------------------------------------------ requests

    def request_body(self, request: UpdateRequest, engine: Engine = "openai") -> dict[str, object]:
        """The chat-completions body: two messages, the reference sampling under ``engine``'s
        field names, thinking asked for explicitly."""
        return self._body(request.prompt.messages(), self.sampling, self.extra_body, True, engine)

    def _body(self, messages: Sequence[Mapping[str, str]], sampling: Sampling,
              extra: Mapping[str, Any], thinking: bool, engine: Engine) -> dict[str, object]:
        return {"model": self.model, "messages": [dict(m) for m in messages], "n": 1,
                **sampling.fields(engine), **extra,
                "chat_template_kwargs": {"enable_thinking": thinking}}

    async def generate(self, request: UpdateRequest) -> ModelReply:
        """One update call: the reference sampling (and ``extra_body``), thinking on."""
        return await self.chat(request.prompt.messages(), sampling=self.sampling,
                               extra=self.extra_body, thinking=True, user_id=request.user_id)

    async def chat(self, messages: Sequence[Mapping[str, str]], *, sampling: Sampling,
                   extra: Mapping[str, Any] | None = None, thinking: bool = True,
                   user_id: str | None = None, sticky: bool = True) -> ModelReply:
        """One chat call through the pool (routing, retries, breakers), with its own sampling
        and extra fields: the update calls and the judge's short, non-thinking calls.
        ``sticky=False``: the endpoint that served it is not remembered (one-off prompts)."""
        await self.start()
        extra = extra or {}
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        key = _prompt_key(messages)
        affinity = user_id if self.affinity == "user" else None
        tried: set[str] = set()
        last_error: Exception | None = None
        attempts = self.max_retries + 1
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(self._backoff_s(attempt - 1))
            await self._identify_new()
            try:
                endpoint, trial = await self._acquire(
                    tried, deadline, sticky=self._served_by.get(key), affinity=affinity)
            except _NoUsableEndpoint as exc:
                last_error = exc
                log.warning("no usable model endpoint (%s), attempt %d/%d", exc, attempt + 1,
                            attempts)
                continue
            tried.add(endpoint.base_url)
            try:
                reply = await self._call(endpoint, self._body(
                    messages, sampling, extra, thinking, self.engine_of(endpoint)), trial)
            except ModelUnavailableError as exc:
                last_error = exc
                if self._served_by.get(key) == endpoint.base_url:
                    del self._served_by[key]
                log.warning("model endpoint %s failed (%s), attempt %d/%d", endpoint.base_url, exc,
                            attempt + 1, attempts)
                continue
            if sticky:
                self._remember(key, endpoint.base_url)
            return reply
        raise ModelUnavailableError(f"all {attempts} attempts failed: {last_error}") from last_error

    def _remember(self, key: str, url: str) -> None:
        self._served_by[key] = url
        self._served_by.move_to_end(key)
        while len(self._served_by) > _STICKY_PROMPTS:
            self._served_by.popitem(last=False)

    def _backoff_s(self, retry: int) -> float:
        """Exponential backoff with ("equal") jitter: in [d/2, d], d = base x 2^retry <= max."""
        delay = min(self.backoff_max_s, self.backoff_base_s * 2**retry)
        return delay / 2 + self._rng.uniform(0, delay / 2)

    def _pick(self, tried: set[str], sticky: str | None = None,
              affinity: str | None = None) -> _Endpoint | None:
        free = [e for e in self._endpoints if self._can_take(e)]
        if not free:
            return None
        fresh = [e for e in free if e.base_url not in tried] or free
        if sticky is not None and sticky not in tried:
            for e in fresh:
                if e.base_url == sticky:
                    return e
        if affinity is not None:
            # the user's endpoint while it has room; a full one yields to the user's next
            return max(fresh, key=lambda e: _rendezvous(affinity, e.base_url))
        self._rotation += 1
        n = len(self._endpoints)
        order = {id(e): i for i, e in enumerate(self._endpoints)}
        return min(fresh, key=lambda e: (self._score(e), (order[id(e)] - self._rotation) % n))

    async def _acquire(self, tried: set[str], deadline: float, *, sticky: str | None = None,
                       affinity: str | None = None) -> tuple[_Endpoint, bool]:
        """Reserve a slot on the best endpoint, waiting while every usable one is at its cap."""
        loop = asyncio.get_running_loop()
        while True:
            if self._closed:
                raise ModelUnavailableError("the model client is closed")
            endpoint = self._pick(tried, sticky, affinity)
            if endpoint is not None:
                trial = endpoint.breaker.state is BreakerState.HALF_OPEN
                endpoint.breaker.acquire()
                endpoint.outstanding += 1
                endpoint.requests += 1
                return endpoint, trial
            if not any(self._usable(e) for e in self._endpoints):
                raise _NoUsableEndpoint(self._describe_unusable())
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise ModelUnavailableError(
                    f"model pool saturated: no free slot within {self.timeout_s:g}s "
                    f"({self.in_flight} in flight, capacity {self.capacity})"
                )
            changed = self._changed
            self._waiting += 1
            try:
                # re-check at least every second: open breakers turn half-open with time
                await asyncio.wait_for(changed.wait(), min(remaining, 1.0))
            except TimeoutError:
                pass
            finally:
                self._waiting -= 1

    def _describe_unusable(self) -> str:
        if not self._endpoints:
            return "no model endpoint known (DNS not resolved?)"
        parts = []
        for e in self._endpoints:
            state = ("draining" if e.draining else "unhealthy" if not e.healthy
                     else e.problem if e.problem else f"breaker {e.breaker.state.value}")
            parts.append(f"{e.base_url}: {state}")
        return "no usable model endpoint (" + ", ".join(parts) + ")"

    def _release(self, endpoint: _Endpoint, trial: bool, outcome: bool | None) -> None:
        """Free the slot and report the outcome (True ok, False transient failure, None none)."""
        endpoint.outstanding -= 1
        breaker = endpoint.breaker
        before = breaker.state
        if outcome is True:
            breaker.record_success()
        elif outcome is False:
            endpoint.failures += 1
            breaker.record_failure()
        elif trial:
            breaker.cancel_trial()
        after = breaker.state
        if after is not before:
            if after is BreakerState.OPEN:
                log.warning("model endpoint %s: circuit opened for %gs", endpoint.base_url,
                            breaker.reset_s)
            else:
                log.info("model endpoint %s: circuit %s", endpoint.base_url, after.value)
        if endpoint.draining and endpoint.outstanding == 0 and endpoint in self._endpoints:
            self._endpoints.remove(endpoint)
            log.info("model endpoint %s drained and removed", endpoint.base_url)
        self._notify()

    async def _call(self, endpoint: _Endpoint, body: dict[str, object], trial: bool) -> ModelReply:
        outcome: bool | None = None
        started = time.perf_counter()
        try:
            try:
                async with asyncio.timeout(self.timeout_s):
                    resp = await self._client.post(
                        f"{endpoint.base_url}/chat/completions",
                        json=body,
                        headers=endpoint.headers,
                        extensions=endpoint.extensions,
                    )
            except (TimeoutError, httpx.TimeoutException) as exc:
                outcome = False
                raise ModelUnavailableError(
                    f"timeout after {self.timeout_s:g}s calling {endpoint.base_url}"
                ) from exc
            except httpx.RequestError as exc:
                outcome = False
                raise ModelUnavailableError(f"cannot reach {endpoint.base_url}: {exc!r}") from exc
            latency_ms = (time.perf_counter() - started) * 1000
            status = resp.status_code
            if is_transient_status(status):
                outcome = False
                raise ModelUnavailableError(f"{endpoint.base_url} answered {status}")
            if status >= 300:
                outcome = True  # the server works; the request is what it refuses
                raise ModelRequestError(f"{endpoint.base_url} refused the request "
                                        f"({status}): {resp.text[:300]}")
            try:
                data = resp.json()
                choice = data["choices"][0]
                message = choice["message"]
                content = message["content"]
                if content is not None and not isinstance(content, str):
                    raise TypeError("message.content is not a string")
                usage = data.get("usage") or {}
                reply = ModelReply(
                    text=content or "",
                    model=data.get("model") or self.model,
                    prompt_tokens=_count(usage.get("prompt_tokens")),
                    completion_tokens=_count(usage.get("completion_tokens")),
                    finish_reason=choice.get("finish_reason"),
                    latency_ms=latency_ms,
                    reasoning=_reasoning(message),
                    top_logprobs=_top_logprobs(choice.get("logprobs")),
                )
            except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
                outcome = False
                raise ModelUnavailableError(f"malformed response from {endpoint.base_url}") from exc
            outcome = True
            self._observe(endpoint, latency_ms / 1000, reply.completion_tokens)
            return reply
        finally:
            self._release(endpoint, trial, outcome)

    # ------------------------------------------------------------------ tokens

    async def count_tokens(self, messages: Sequence[Mapping[str, str]]) -> int | None:
        """Prompt tokens of ``messages`` (chat template and generation prompt included), asked
        to an endpoint that can count them: vLLM ``/tokenize`` (messages), llama.cpp
        ``/apply-template`` then ``/tokenize`` (content).  None when none can (SGLang, others):
        the caller falls back to the local Qwen3 tokenizer.  A refusal is remembered per
        endpoint, so a server that cannot count is not asked again."""
        await self.start()
        await self._identify_new()
        candidates = sorted(
            (e for e in self._endpoints if self._usable(e) and e.tokenize_supported is not False),
            key=lambda e: e.outstanding,
        )
        for endpoint in candidates[: self.max_retries + 1]:
            count = await self._tokenize_on(endpoint, messages)
            if count is not None:
                return count
        return None

    def _no_tokenize(self, endpoint: _Endpoint, why: str) -> None:
        if endpoint.tokenize_supported is not False:
            log.info("model endpoint %s cannot count tokens (%s): using the local tokenizer",
                     endpoint.base_url, why)
        endpoint.tokenize_supported = False

    async def _post(self, endpoint: _Endpoint, path: str, body: Mapping[str, Any]) -> httpx.Response:
        timeout = min(self.timeout_s, 10.0)
        async with asyncio.timeout(timeout):
            return await self._client.post(f"{endpoint.root}{path}", json=dict(body),
                                           headers=endpoint.headers,
                                           extensions=endpoint.extensions, timeout=timeout)

    async def _tokenize_on(self, endpoint: _Endpoint,
                           messages: Sequence[Mapping[str, str]]) -> int | None:
        engine = self.engine_of(endpoint)
        if engine == "sglang":  # its /tokenize takes a prompt only, no chat template
            self._no_tokenize(endpoint, "SGLang /tokenize takes no messages")
            return None
        chat = [dict(m) for m in messages]
        try:
            if engine == "llamacpp":
                resp = await self._post(endpoint, "/apply-template", {"messages": chat})
                if resp.status_code in _REFUSED:
                    self._no_tokenize(endpoint, f"/apply-template answered {resp.status_code}")
                    return None
                prompt = resp.json().get("prompt") if resp.is_success else None
                if not isinstance(prompt, str):
                    return None
                resp = await self._post(endpoint, "/tokenize", {
                    "content": prompt, "add_special": True, "parse_special": True})
            else:
                resp = await self._post(endpoint, "/tokenize", {
                    "model": self.model, "messages": chat, "add_generation_prompt": True,
                    "chat_template_kwargs": {"enable_thinking": True}})
            if resp.status_code in _REFUSED:
                self._no_tokenize(endpoint, f"/tokenize answered {resp.status_code}")
                return None
            if not resp.is_success:  # 5xx, 429: maybe next time
                return None
            count = token_count(resp.json())
        except (TimeoutError, httpx.HTTPError, ValueError, AttributeError) as exc:
            log.debug("tokenize on %s failed: %r", endpoint.base_url, exc)
            return None
        if count is None:
            self._no_tokenize(endpoint, "its /tokenize answer has no count")
            return None
        endpoint.tokenize_supported = True
        return count
