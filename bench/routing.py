"""Benchmark r: load-aware routing vs least-outstanding on an unequal pool that other clients
share, and user affinity.

Two stand-ins on 127.0.0.1: a fast one (4 slots) and a slow one (2 slots, ~3.5x the latency per
request).  A background load generator (plain httpx, closed loop, standing for the other
workers of the pool) keeps the slow one's queue non-empty: the client under test cannot see
those requests in its own outstanding counts, only in the server's ``/metrics``.  The same
seeded workload (N update requests from K concurrent callers) goes through
:class:`OpenAICompatSummaryModel` with ``routing="load"`` and with ``routing="outstanding"``,
same stand-ins, same background load; rounds alternate the order (ABBA) so that drift does not
favour one mode.  Then the affinity check: repeated requests of each user with
``affinity="user"`` and without, and how often they land where the user's first one did.

Nothing is asserted; every figure is measured here, the ratios side by side in the same run.
"""

from __future__ import annotations

import asyncio
import contextvars
import random
import sys
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import httpx
from tqdm import tqdm

from .common import percentile, say, start_standin

FAST = {"ttft_ms": 40.0, "per_token_ms": 0.3, "jitter_ms": 5.0, "max_concurrency": 4,
        "max_queue": 64}
SLOW = {"ttft_ms": 120.0, "per_token_ms": 1.2, "jitter_ms": 15.0, "max_concurrency": 2,
        "max_queue": 64}
BACKGROUND_CLIENTS = 4  # closed-loop requests on the slow one: 2 running + 2 waiting
LOAD_INTERVAL_S = 0.2
MAX_CONCURRENCY_PER_ENDPOINT = 8  # above the callers: the routing alone decides the split
MODEL = "VanillaH1/AlignXplore-Plus"
SEED = 7

_WORDS = ("trail hiking jazz vinyl espresso science fiction novels thriller cooking garden "
          "chess python cycling opera baking travel history poetry football astronomy "
          "photography knitting startup economics climate painting yoga surfing anime").split()
_TAG: contextvars.ContextVar[int | None] = contextvars.ContextVar("bench_routing_tag",
                                                                  default=None)


# ------------------------------------------------------------------------------ pure helpers


def latency_stats(latencies: Sequence[float]) -> dict:
    """p50 / p95 / p99 / mean / max of latencies in seconds (None when empty)."""
    return {"p50_s": percentile(list(latencies), 0.5), "p95_s": percentile(list(latencies), 0.95),
            "p99_s": percentile(list(latencies), 0.99),
            "mean_s": sum(latencies) / len(latencies) if latencies else None,
            "max_s": max(latencies) if latencies else None}


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def split_fractions(counts: Mapping[str, int]) -> dict[str, float]:
    total = sum(counts.values())
    return {k: v / total for k, v in counts.items()} if total else {}


def chance_same(fractions: Iterable[float]) -> float:
    """How often two independent requests land on the same endpoint, given the split: sum p²."""
    return sum(p * p for p in fractions)


def same_as_first_fraction(assignments: Iterable[tuple[str, str]]) -> float | None:
    """Of each user's requests after the first, the fraction served by the endpoint that served
    the user's first one; ``assignments`` = (user, endpoint) in request order."""
    first: dict[str, str] = {}
    same = later = 0
    for user, endpoint in assignments:
        if user not in first:
            first[user] = endpoint
            continue
        later += 1
        same += endpoint == first[user]
    return same / later if later else None


def make_requests(n: int, *, users: int, seed: int) -> list:
    """``n`` seeded update requests of ``users`` users; request i is user i mod users, so a
    user's repeated requests are spread in time (as a worker's windows of one user are)."""
    from streamer.domain.prompt import build_update_prompt
    from streamer.domain.triples import Triple
    from streamer.ports import UpdateRequest

    rng = random.Random(seed)
    out = []
    for i in range(n):
        u = i % users
        triples = tuple(
            Triple("Please recommend some news to me.",
                   "Title: " + " ".join(rng.sample(_WORDS, rng.randint(3, 7))),
                   "Title: " + " ".join(rng.sample(_WORDS, rng.randint(2, 5))), f"r{seed}-{i}-{k}")
            for k in range(rng.randint(1, 4)))
        prev = "The user enjoys " + ", ".join(rng.sample(_WORDS, rng.randint(2, 6))) + "."
        out.append(UpdateRequest(build_update_prompt(prev, triples), prev, triples,
                                 user_id=f"user-{u:04d}"))
    return out


# ------------------------------------------------------------------------------ measurement


class _Recorder(httpx.AsyncHTTPTransport):
    """Notes which server each tagged chat request went to (the last attempt wins)."""

    def __init__(self, names: Mapping[str, str]) -> None:
        super().__init__()
        self.names = dict(names)  # "host:port" -> "fast" / "slow"
        self.served: dict[int, str] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        tag = _TAG.get()
        if tag is not None and request.url.path.endswith("/chat/completions"):
            where = f"{request.url.host}:{request.url.port}"
            self.served[tag] = self.names.get(where, where)
        return await super().handle_async_request(request)


class Background:
    """Closed-loop chat requests on one server from ``clients`` tasks (the pool's other users)."""

    def __init__(self, url: str, clients: int, seed: int) -> None:
        self.url, self.clients = url, clients
        self.bodies = [{"model": MODEL, "messages": r.prompt.messages(), "max_tokens": 4096}
                       for r in make_requests(64, users=64, seed=seed)]
        self.done: list[tuple[float, float]] = []  # (finished at, latency)
        self.errors = 0
        self._tasks: list[asyncio.Task] = []
        self._http: httpx.AsyncClient | None = None

    async def start(self) -> None:
        self._http = httpx.AsyncClient(timeout=60)
        self._tasks = [asyncio.create_task(self._loop(i)) for i in range(self.clients)]

    async def _loop(self, i: int) -> None:
        assert self._http is not None
        k = i
        while True:
            t = time.monotonic()
            try:
                r = await self._http.post(f"{self.url}/v1/chat/completions",
                                          json=self.bodies[k % len(self.bodies)])
                if r.status_code == 200:
                    self.done.append((time.monotonic(), time.monotonic() - t))
                else:
                    self.errors += 1
                    await asyncio.sleep(0.05)
            except httpx.HTTPError:
                self.errors += 1
                await asyncio.sleep(0.05)
            k += self.clients

    def between(self, t0: float, t1: float) -> dict:
        lat = [lat for t, lat in self.done if t0 <= t < t1]
        return {"requests_per_s": len(lat) / (t1 - t0) if t1 > t0 else None,
                "p95_s": percentile(lat, 0.95)}

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._http is not None:
            await self._http.aclose()
            self._http = None


class QueueSampler:
    """Samples one server's ``/metrics`` (running + waiting, all clients) every 0.1 s."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.samples: list[tuple[float, float, float]] = []  # (t, running, waiting)
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        from streamer.adapters.llm.engines import parse_load

        async with httpx.AsyncClient(timeout=2) as http:
            while True:
                try:
                    load = parse_load("vllm", (await http.get(f"{self.url}/metrics")).text)
                    if load is not None:
                        self.samples.append((time.monotonic(), load.running, load.waiting))
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)

    def between(self, t0: float, t1: float) -> dict:
        s = [(r, w) for t, r, w in self.samples if t0 <= t < t1]
        if not s:
            return {}
        return {"mean_running": sum(r for r, _ in s) / len(s),
                "mean_waiting": sum(w for _, w in s) / len(s),
                "waiting_nonempty_fraction": sum(1 for _, w in s if w > 0) / len(s),
                "samples": len(s)}

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


async def _drive(client, requests: list, callers: int, *, tag0: int,
                 bar: tqdm | None) -> tuple[dict[int, float], int]:
    """Send ``requests`` through ``client`` from ``callers`` closed-loop tasks; latency per tag."""
    from streamer.errors import ModelUnavailableError

    latencies: dict[int, float] = {}
    errors = 0
    nxt = 0

    async def caller() -> None:
        nonlocal nxt, errors
        while nxt < len(requests):
            i = nxt
            nxt += 1
            _TAG.set(tag0 + i)
            t = time.perf_counter()
            try:
                await client.generate(requests[i])
                latencies[tag0 + i] = time.perf_counter() - t
            except ModelUnavailableError:
                errors += 1
            if bar is not None:
                bar.update(1)

    await asyncio.gather(*(caller() for _ in range(callers)))
    return latencies, errors


def _client(urls: list[str], recorder: _Recorder, *, routing: str, affinity: str = "none"):
    from streamer.adapters.llm.client import OpenAICompatSummaryModel

    return OpenAICompatSummaryModel(
        [f"{u}/v1" for u in urls], model=MODEL, routing=routing, affinity=affinity,
        load_interval_s=LOAD_INTERVAL_S, max_concurrency_per_endpoint=MAX_CONCURRENCY_PER_ENDPOINT,
        health_interval_s=5.0, dialect="auto", timeout_s=120.0, transport=recorder)


async def _run_mode(urls, names, routing: str, requests: list, warmup: list, callers: int,
                    tag0: int, background: Background, sampler: QueueSampler) -> dict:
    recorder = _Recorder(names)
    client = _client(urls, recorder, routing=routing)
    try:
        await _drive(client, warmup, callers, tag0=-10**9, bar=None)  # identify, read load
        bar = tqdm(total=len(requests), desc=f"routing={routing}", unit="req", file=sys.stdout,
                   mininterval=1)
        t0 = time.monotonic()
        lat, errors = await _drive(client, requests, callers, tag0=tag0, bar=bar)
        t1 = time.monotonic()
        bar.close()
    finally:
        await client.aclose()
    served = {k: recorder.served[k] for k in lat if k in recorder.served}
    return {"elapsed_s": t1 - t0, "latencies": lat, "served": served, "errors": errors,
            "background": background.between(t0, t1), "slow_queue": sampler.between(t0, t1)}


def _summarise(parts: list[dict], names: Sequence[str]) -> dict:
    lat = {k: v for p in parts for k, v in p["latencies"].items()}
    served = {k: v for p in parts for k, v in p["served"].items()}
    elapsed = sum(p["elapsed_s"] for p in parts)
    counts = Counter(served.values())
    split = {n: counts.get(n, 0) for n in names}
    per_endpoint = {n: latency_stats([lat[k] for k, v in served.items() if v == n]) for n in names}
    bg = [p["background"] for p in parts]
    q = [p["slow_queue"] for p in parts if p["slow_queue"]]
    return {
        "requests": len(lat), "errors": sum(p["errors"] for p in parts),
        "elapsed_s": round(elapsed, 2), "requests_per_s": len(lat) / elapsed if elapsed else None,
        **latency_stats(list(lat.values())),
        "split": split, "split_fraction": split_fractions(split),
        "latency_by_endpoint": per_endpoint,
        "background_requests_per_s": (sum(b["requests_per_s"] or 0 for b in bg) / len(bg)
                                      if bg else None),
        "background_p95_s": max((b["p95_s"] for b in bg if b["p95_s"] is not None), default=None),
        "slow_queue_all_clients": _weighted(q),
        "latencies_s": [round(v, 4) for _, v in sorted(lat.items())],
    }


def _weighted(samples: list[dict]) -> dict:
    """Queue readings of several intervals pooled (each interval weighted by its samples)."""
    n = sum(x["samples"] for x in samples)
    if not n:
        return {}
    return {**{k: sum(x[k] * x["samples"] for x in samples) / n
               for k in samples[0] if k != "samples"}, "samples": n}


async def _affinity(urls, names, users: int, repeats: int, callers: int) -> dict:
    reqs = make_requests(users * repeats, users=users, seed=SEED + 100)
    out: dict = {}
    for affinity in ("user", "none"):
        recorder = _Recorder(names)
        client = _client(urls, recorder, routing="load", affinity=affinity)
        try:
            await _drive(client, make_requests(2 * callers, users=2 * callers, seed=SEED + 101),
                         callers, tag0=-10**9, bar=None)
            bar = tqdm(total=len(reqs), desc=f"affinity={affinity}", unit="req",
                       file=sys.stdout, mininterval=1)
            lat, errors = await _drive(client, reqs, callers, tag0=0, bar=bar)
            bar.close()
        finally:
            await client.aclose()
        order = [(reqs[i].user_id, recorder.served[i]) for i in range(len(reqs))
                 if i in lat and i in recorder.served]
        labels = list(names.values())
        split = Counter(e for _, e in order)
        frac = split_fractions({n: split.get(n, 0) for n in labels})
        out[affinity] = {
            "same_endpoint_as_first_fraction": same_as_first_fraction(order),
            "chance_same_given_split": chance_same(frac.values()),
            "split": {n: split.get(n, 0) for n in labels}, "errors": errors,
            "p95_s": percentile(list(lat.values()), 0.95),
        }
        say(f"  affinity={affinity}: same endpoint as the user's first request "
            f"{out[affinity]['same_endpoint_as_first_fraction']:.3f} (split {dict(split)}, "
            f"chance given that split {out[affinity]['chance_same_given_split']:.3f})")
    return {"users": users, "repeats_per_user": repeats, "callers": callers, "routing": "load",
            "background": "paused", "n_endpoints": len(urls), "uniform_chance": 1 / len(urls),
            **out}


async def bench_routing(*, requests: int, callers: int, rounds: int, affinity_users: int,
                        affinity_repeats: int) -> dict:
    say(f"routing: fast stand-in {FAST['max_concurrency']} slots ({FAST['ttft_ms']:.0f} ms + "
        f"{FAST['per_token_ms']} ms/token), slow {SLOW['max_concurrency']} slots "
        f"({SLOW['ttft_ms']:.0f} ms + {SLOW['per_token_ms']} ms/token), {BACKGROUND_CLIENTS} "
        f"background clients on the slow one; {requests} requests x 2 modes from {callers} "
        f"callers in {rounds} round(s)")
    procs = []
    try:
        for i, cfg in enumerate((FAST, SLOW)):
            procs.append(await asyncio.to_thread(start_standin, f"routing-{i}", seed=SEED + i,
                                                 **cfg))
        urls = [u for _, u in procs]
        names = {u.split("//", 1)[1]: n for u, n in zip(urls, ("fast", "slow"), strict=True)}
        background = Background(urls[1], BACKGROUND_CLIENTS, seed=SEED + 50)
        sampler = QueueSampler(urls[1])
        await background.start()
        await sampler.start()
        await asyncio.sleep(2.0)  # the background load reaches its steady queue
        workload = make_requests(requests, users=max(1, requests // 4), seed=SEED)
        per = -(-requests // rounds)
        parts: dict[str, list[dict]] = {"load": [], "outstanding": []}
        try:
            for r in range(rounds):
                chunk = workload[r * per:(r + 1) * per]
                order = ("outstanding", "load") if r % 2 == 0 else ("load", "outstanding")
                for mode in order:
                    warm = make_requests(2 * callers, users=2 * callers, seed=SEED + 1000 + r)
                    parts[mode].append(await _run_mode(urls, names, mode, chunk, warm, callers,
                                                       r * per, background, sampler))
            await background.stop()
            say("routing: affinity check (background paused)")
            affinity = await _affinity(urls, names, affinity_users, affinity_repeats, callers)
        finally:
            await background.stop()
            await sampler.stop()
    finally:
        for p, _ in procs:
            await asyncio.to_thread(p.stop)
    modes = {m: _summarise(p, ("fast", "slow")) for m, p in parts.items()}
    ld, out = modes["load"], modes["outstanding"]
    res = {
        "standins": {"fast": FAST, "slow": SLOW}, "model": MODEL, "seed": SEED,
        "background": {"clients": BACKGROUND_CLIENTS, "target": "slow",
                       "kind": "closed-loop httpx chat completions, not seen by the client"},
        "client": {"load_interval_s": LOAD_INTERVAL_S,
                   "max_concurrency_per_endpoint": MAX_CONCURRENCY_PER_ENDPOINT},
        "requests": requests, "callers": callers, "rounds": rounds,
        "order": "ABBA: outstanding first in even rounds, load first in odd ones",
        "modes": modes,
        "throughput_ratio_load_over_outstanding": ratio(ld["requests_per_s"],
                                                        out["requests_per_s"]),
        "p95_ratio_load_over_outstanding": ratio(ld["p95_s"], out["p95_s"]),
        "p50_ratio_load_over_outstanding": ratio(ld["p50_s"], out["p50_s"]),
        "affinity": affinity,
    }
    for m in ("outstanding", "load"):
        s = modes[m]
        say(f"  routing={m}: {s['requests_per_s']:.1f} req/s, p50 {s['p50_s']:.3f} s, "
            f"p95 {s['p95_s']:.3f} s; split {s['split']}; slow queue (all clients) "
            f"{s['slow_queue_all_clients']}")
    say(f"routing: load/outstanding throughput {res['throughput_ratio_load_over_outstanding']:.3f}"
        f", p95 {res['p95_ratio_load_over_outstanding']:.3f}")
    return res
