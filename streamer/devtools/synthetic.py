"""Deterministic synthetic clickstream: a built-in catalog, user profiles with drift, events.

Used by the embedded demo (``streamer replay`` replays ``streamer/data/sample_clickstream.jsonl``),
the end-to-end tests and the benchmarks.  Standard library only (plus :mod:`schemas` for the
contract constants): no network; the catalog is the bundled data file ``data/catalog.json``.

Catalog
    460 invented items in three domains (``data/catalog.json``), every item clearly about its
    topic: news (``news-tech-017``: title + one-sentence abstract, 10 topics),
    books (``book-fantasy-003``: title + description, 10 genres) and movies
    (``movie-scifi-004``: ``"Title (1998)"`` + a genres list such as ``["Sci-Fi", "Adventure"]``,
    10 primary genres).  The catalog never depends on the seed.

Users (:func:`make_users`)
    Per domain, every user has 2-3 favourite categories and 1-2 disliked ones, an activity level
    in ``[0, 1)`` and a **drift** point 40-70% through their timeline: from that event on, in
    every domain one favourite is replaced by a new interest (never a disliked category).  A user
    depends only on ``(seed, index)``, not on how many users are generated.

Events (:func:`generate_events`)
    JSON-ready dicts in the wire format of :mod:`schemas.events` (every top-level field of the
    model, ``occurred_at`` as ``2026-01-03T08:15:42Z``; items carry only ``id`` and the fields
    their domain renders).  Per user, a mix of news impressions (1-2 clicked items from liked
    topics, 3-6 skipped ones mostly from other topics), movie ratings (liked genres 4-5 of 5,
    disliked 1-2), book likes/dislikes (``interaction.feedback``), pairwise choices (chosen from a
    liked category, rejected from a disliked one, half of them with a query such as
    ``Pick a weekend read.``) and positive-only clicks.  Each user's events are spread over
    ``span_days`` in short sessions; the stream is interleaved across users in time order.
    Event ids are ``evt-<user id>-<n>`` (``evt-user-007-0003``), 1-based per user.

Invalid records (``invalid_rate > 0``)
    ``round(invalid_rate * valid_count)`` EXTRA records are inserted after randomly chosen valid
    events; the valid records are identical whatever ``invalid_rate`` is.  Kinds cycle through
    :data:`INVALID_KINDS` (kind -> the code :func:`streamer.domain.codec.decode_interaction`
    rejects it with); records that are not a JSON object are returned as raw ``bytes``.  Their
    event ids are ``evt-invalid-<k>-<kind>`` (see :func:`invalid_kind`).

CLI::

    python -m streamer.devtools.synthetic --users 40 --events-per-user 24 --seed 7 \
        --out streamer/data/sample_clickstream.jsonl
"""

from __future__ import annotations

import argparse
import bisect
import gc
import itertools
import json
import math
import random
import re
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "DEFAULT_START",
    "DOMAINS",
    "INVALID_KINDS",
    "KINDS",
    "UserProfile",
    "catalog_items",
    "categories",
    "encode_record",
    "generate_events",
    "invalid_kind",
    "item_category",
    "main",
    "make_users",
    "user_id",
    "write_jsonl",
]

DEFAULT_START = datetime(2026, 1, 1, tzinfo=UTC)
"""Timestamp of the beginning of every generated timeline (unless ``start`` is given)."""

DOMAINS = ("news", "books", "movies")

KINDS = ("impression", "rating", "feedback", "pairwise", "click")
"""Short names of the event kinds (``interaction.<kind>`` on the wire)."""

INVALID_KINDS: dict[str, str] = {
    "invalid_json": "invalid_json",  # bytes: a JSON object cut in half
    "invalid_utf8": "invalid_utf8",  # bytes: \xff\xfe + a JSON object
    "not_an_object": "not_an_object",  # bytes: a JSON array holding the event
    "missing_user_id": "missing_user_id",  # dict without user_id
    "blank_user_id": "missing_user_id",  # dict with user_id "   "
    "unknown_type": "unknown_type",  # dict with type "interaction.purchase"
    "future_schema_version": "unsupported_schema_version",  # dict with schema_version 2
    "wrong_type": "validation_error",  # item(s) replaced by a bare id string / rating "five stars"
    "naive_timestamp": "validation_error",  # occurred_at without a timezone
    "extra_field": "validation_error",  # an unknown top-level field (contracts are closed)
}
"""Invalid record kinds produced with ``invalid_rate > 0``, mapped to the decoder's error code."""

_INVALID_ID = re.compile(r"evt-invalid-\d+-([a-z0-9_]+)")

_QUERIES = {
    "news": ("Which story would you read first?", "Pick a headline for your morning briefing."),
    "books": ("Pick a weekend read.", "Which book would you take on a long flight?",
              "Choose the next book club pick."),
    "movies": ("What should we watch tonight?", "Pick a film for Friday night.",
               "Which movie would you stream this weekend?"),
}

_KIND_WEIGHTS = (0.30, 0.22, 0.20, 0.16, 0.12)  # order of KINDS
_DOMAIN_WEIGHTS = (0.45, 0.25, 0.30)  # pairwise / click domains, order of DOMAINS
_RATINGS_POS = (4.0, 4.5, 5.0)
_RATINGS_NEG = (1.0, 1.5, 2.0)
_P_POSITIVE = 0.65  # share of ratings / feedback that are positive

# --------------------------------------------------------------------------------------------
# Catalog
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Catalog:
    by_category: dict[str, dict[str, tuple[dict[str, Any], ...]]]
    category_of: dict[str, tuple[str, str]]


def _choice(rand, seq: Sequence[Any]) -> Any:
    """``rng.choice`` without its overhead (``rand`` is a bound ``Random.random``)."""
    return seq[int(rand() * len(seq))]


def _randint(rand, lo: int, hi: int) -> int:
    return lo + int(rand() * (hi - lo + 1))


def _shuffled(rand, seq: Sequence[Any]) -> list[Any]:
    out = list(seq)
    for i in range(len(out) - 1, 0, -1):
        j = int(rand() * (i + 1))
        out[i], out[j] = out[j], out[i]
    return out


CATALOG_FILE = Path(__file__).parent / "data" / "catalog.json"
"""The bundled catalog: ``{"domains": {domain: {category: [item, ...]}}}``, in a stable order."""


@cache
def _catalog() -> _Catalog:
    data = json.loads(CATALOG_FILE.read_text(encoding="utf-8"))
    by_category: dict[str, dict[str, tuple[dict[str, Any], ...]]] = {
        domain: {
            category: tuple(
                {**item, "genres": tuple(item["genres"])} if "genres" in item else item
                for item in items
            )
            for category, items in data["domains"][domain].items()
        }
        for domain in DOMAINS
    }
    category_of = {
        item["id"]: (domain, category)
        for domain, cats in by_category.items()
        for category, items in cats.items()
        for item in items
    }
    return _Catalog(by_category, category_of)


def categories(domain: str) -> tuple[str, ...]:
    """The categories of a domain: news topics, book genres or primary movie genres."""
    return tuple(_catalog().by_category[domain])


def catalog_items(domain: str | None = None) -> list[dict[str, Any]]:
    """Copies of the catalog items (JSON-ready, as they appear in events), in a stable order."""
    domains = DOMAINS if domain is None else (domain,)
    cat = _catalog().by_category
    return [_copy(item) for d in domains for items in cat[d].values() for item in items]


def item_category(item_id: str) -> tuple[str, str]:
    """``(domain, category)`` of a catalog item id, e.g. ``("news", "technology")``."""
    return _catalog().category_of[item_id]


def _copy(item: dict[str, Any]) -> dict[str, Any]:
    out = dict(item)
    if "genres" in out:
        out["genres"] = list(out["genres"])
    return out


# --------------------------------------------------------------------------------------------
# Users
# --------------------------------------------------------------------------------------------


def user_id(index: int) -> str:
    """The id of the ``index``-th user (1-based): ``user-007``."""
    return f"user-{index:03d}"


@dataclass(frozen=True, slots=True)
class UserProfile:
    """A synthetic user's tastes.  Mappings are keyed by domain (``news``/``books``/``movies``).

    ``likes`` are the favourites before the drift; at event index ``drift_index(n)`` (a fraction
    ``drift_at`` of the timeline) ``drift[domain] = (dropped, added)`` swaps one favourite for a
    new interest.  ``activity`` (0 = least active) orders event counts for ranged and Zipf modes.
    """

    user_id: str
    index: int
    likes: dict[str, tuple[str, ...]]
    dislikes: dict[str, tuple[str, ...]]
    drift: dict[str, tuple[str, str]]
    drift_at: float
    activity: float
    kind_weights: tuple[float, ...]
    domain_weights: tuple[float, ...]

    def likes_after_drift(self, domain: str) -> tuple[str, ...]:
        dropped, added = self.drift[domain]
        return tuple(added if c == dropped else c for c in self.likes[domain])

    def drift_index(self, n_events: int) -> int:
        """Index of the first event (0-based) generated with the drifted favourites."""
        return int(round(self.drift_at * n_events))

    def favourites(self, domain: str, event_index: int, n_events: int) -> tuple[str, ...]:
        """The favourites in force for the user's ``event_index``-th event (0-based)."""
        if event_index >= self.drift_index(n_events):
            return self.likes_after_drift(domain)
        return self.likes[domain]


def _make_user(index: int, seed: int) -> UserProfile:
    rng = random.Random(f"prefstream-user:{seed}:{index}")
    rand = rng.random
    likes: dict[str, tuple[str, ...]] = {}
    dislikes: dict[str, tuple[str, ...]] = {}
    drift: dict[str, tuple[str, str]] = {}
    for domain in DOMAINS:
        cats = _shuffled(rand, categories(domain))
        n_like = _randint(rand, 2, 3)
        n_dislike = _randint(rand, 1, 2)
        likes[domain] = tuple(cats[:n_like])
        dislikes[domain] = tuple(cats[n_like:n_like + n_dislike])
        drift[domain] = (_choice(rand, likes[domain]), cats[n_like + n_dislike])
    kind_weights = tuple(w * (0.6 + 0.8 * rand()) for w in _KIND_WEIGHTS)
    domain_weights = tuple(w * (0.5 + rand()) for w in _DOMAIN_WEIGHTS)
    return UserProfile(
        user_id=user_id(index),
        index=index,
        likes=likes,
        dislikes=dislikes,
        drift=drift,
        drift_at=0.4 + 0.3 * rand(),
        activity=rand(),
        kind_weights=kind_weights,
        domain_weights=domain_weights,
    )


def make_users(n: int, seed: int = 7) -> list[UserProfile]:
    """``n`` user profiles ``user-001``..; user ``i`` depends only on ``(seed, i)``."""
    if n < 0:
        raise ValueError("n must be >= 0")
    return [_make_user(i, seed) for i in range(1, n + 1)]


# --------------------------------------------------------------------------------------------
# Events
# --------------------------------------------------------------------------------------------


def _event_counts(
    users: Sequence[UserProfile],
    events_per_user: int | tuple[int, int],
    activity: str,
    zipf_s: float,
) -> list[int]:
    if isinstance(events_per_user, int):
        lo = hi = events_per_user
    else:
        lo, hi = events_per_user
    if lo < 0 or hi < lo:
        raise ValueError("events_per_user must be >= 0 (a range must be (low, high), low <= high)")
    if activity == "uniform":
        return [lo + int(round(u.activity * (hi - lo))) for u in users]
    if activity != "zipf":
        raise ValueError("activity must be 'uniform' or 'zipf'")
    if zipf_s <= 0:
        raise ValueError("zipf_s must be > 0")
    n = len(users)
    total = int(round(n * (lo + hi) / 2))
    if n == 0:
        return []
    # rank 1 = most active user; every user gets at least one event, the rest follows Zipf
    order = sorted(range(n), key=lambda i: (-users[i].activity, i))
    weights = [1.0 / (r ** zipf_s) for r in range(1, n + 1)]
    spare = max(0, total - n)
    wsum = math.fsum(weights)
    shares = [spare * w / wsum for w in weights]
    by_rank = [int(s) for s in shares]
    left = spare - sum(by_rank)
    for r in sorted(range(n), key=lambda r: (-(shares[r] - by_rank[r]), r))[:left]:
        by_rank[r] += 1
    counts = [0] * n
    for rank, i in enumerate(order):
        counts[i] = 1 + by_rank[rank] if total >= n else (1 if rank < total else 0)
    return counts


def _offsets(rand, n: int, span_s: int) -> list[int]:
    """``n`` strictly increasing second offsets in short sessions spread over ``span_s``."""
    if n == 0:
        return []
    sizes: list[int] = []
    remaining = n
    while remaining > 0:
        size = min(remaining, 1 + int(rand() * 4))
        sizes.append(size)
        remaining -= size
    starts = sorted(int(rand() * span_s) for _ in sizes)
    out: list[int] = []
    prev = -1
    for start, size in zip(starts, sizes, strict=True):
        t = max(start, prev + 1)
        for _ in range(size):
            out.append(t)
            prev = t
            t += 20 + int(rand() * 581)  # 20 s .. 10 min between events of a session
    return out


class _UserStream:
    """Generates one user's events from its own RNG (so users are independent)."""

    def __init__(self, user: UserProfile, seed: int) -> None:
        self.user = user
        self.rand = random.Random(f"prefstream-events:{seed}:{user.index}").random
        self.items = _catalog().by_category
        self.all_news = tuple(self.items["news"])
        self.seen: set[str] = set()
        self.kind_cw = list(itertools.accumulate(user.kind_weights))
        self.domain_cw = list(itertools.accumulate(user.domain_weights))
        self.dislikes = user.dislikes
        self.likes_pre = user.likes
        self.likes_post = {d: user.likes_after_drift(d) for d in DOMAINS}
        self.others_pre = tuple(t for t in self.all_news if t not in self.likes_pre["news"])
        self.others_post = tuple(t for t in self.all_news if t not in self.likes_post["news"])
        self.makers = {
            "impression": self._impression,
            "rating": self._rating,
            "feedback": self._feedback,
            "pairwise": self._pairwise,
            "click": self._click,
        }

    def _pick(self, domain: str, category: str, fresh: bool = False) -> dict[str, Any]:
        pool = self.items[domain][category]
        item = pool[int(self.rand() * len(pool))]
        if fresh:  # prefer an item the user has not rated / judged yet (a few tries)
            for _ in range(3):
                if item["id"] not in self.seen:
                    break
                item = pool[int(self.rand() * len(pool))]
            self.seen.add(item["id"])
        return item

    def events(self, n: int, offsets: Sequence[int], stamp) -> list[dict[str, Any]]:
        rand = self.rand
        uid = self.user.user_id
        drift_idx = self.user.drift_index(n)
        width = max(4, len(str(n)))
        kind_cw, total = self.kind_cw, self.kind_cw[-1]
        makers = self.makers
        out = []
        for i in range(n):
            post = i >= drift_idx
            kind = KINDS[bisect.bisect(kind_cw, rand() * total)]
            event: dict[str, Any] = {
                "type": f"interaction.{kind}",
                "schema_version": 1,
                "event_id": f"evt-{uid}-{i + 1:0{width}d}",
                "user_id": uid,
                "occurred_at": stamp(offsets[i]),
            }
            event.update(makers[kind](post))
            out.append(event)
        return out

    def _domain(self) -> str:
        cw = self.domain_cw
        return DOMAINS[bisect.bisect(cw, self.rand() * cw[-1])]

    def _impression(self, post: bool) -> dict[str, Any]:
        rand = self.rand
        liked = (self.likes_post if post else self.likes_pre)["news"]
        others = self.others_post if post else self.others_pre
        used: set[str] = set()
        clicked = []
        for _ in range(1 if rand() < 0.7 else 2):
            for _attempt in range(4):
                item = self._pick("news", _choice(rand, liked))
                if item["id"] not in used:
                    break
            if item["id"] not in used:
                used.add(item["id"])
                clicked.append(_copy(item))
        skipped = []
        for _ in range(3 + int(rand() * 4)):  # 3..6 skipped, mostly from other topics
            for _attempt in range(4):
                topics = others if rand() < 0.85 else self.all_news
                item = self._pick("news", _choice(rand, topics))
                if item["id"] not in used:
                    break
            if item["id"] not in used:
                used.add(item["id"])
                skipped.append(_copy(item))
        return {"domain": "news", "query": None, "clicked": clicked, "skipped": skipped}

    def _rating(self, post: bool) -> dict[str, Any]:
        rand = self.rand
        if rand() < _P_POSITIVE:
            liked = (self.likes_post if post else self.likes_pre)["movies"]
            item, scores = self._pick("movies", _choice(rand, liked), True), _RATINGS_POS
        else:
            genre = _choice(rand, self.dislikes["movies"])
            item, scores = self._pick("movies", genre, True), _RATINGS_NEG
        return {"domain": "movies", "query": None, "item": _copy(item),
                "rating": _choice(rand, scores), "scale_max": 5.0}

    def _feedback(self, post: bool) -> dict[str, Any]:
        rand = self.rand
        if rand() < _P_POSITIVE:
            liked = (self.likes_post if post else self.likes_pre)["books"]
            item, signal = self._pick("books", _choice(rand, liked), True), "like"
        else:
            item = self._pick("books", _choice(rand, self.dislikes["books"]), True)
            signal = "dislike"
        return {"domain": "books", "query": None, "item": _copy(item), "signal": signal}

    def _pairwise(self, post: bool) -> dict[str, Any]:
        rand = self.rand
        domain = self._domain()
        liked = (self.likes_post if post else self.likes_pre)[domain]
        chosen = self._pick(domain, _choice(rand, liked))
        rejected = self._pick(domain, _choice(rand, self.dislikes[domain]))
        query = _choice(rand, _QUERIES[domain]) if rand() < 0.5 else None
        return {"domain": domain, "query": query, "chosen": _copy(chosen),
                "rejected": _copy(rejected)}

    def _click(self, post: bool) -> dict[str, Any]:
        domain = self._domain()
        liked = (self.likes_post if post else self.likes_pre)[domain]
        item = self._pick(domain, _choice(self.rand, liked))
        return {"domain": domain, "query": None, "item": _copy(item)}


def _stamper(start: datetime):
    """Fast formatter of ``start + offset seconds`` as ``YYYY-MM-DDTHH:MM:SSZ`` (UTC)."""
    if start.tzinfo is None or start.utcoffset() is None:
        raise ValueError("start must be timezone-aware")
    base = int(start.astimezone(UTC).timestamp())
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    days: dict[int, str] = {}

    def stamp(offset: int) -> str:
        t = base + offset
        day, sec = divmod(t, 86400)
        prefix = days.get(day)
        if prefix is None:
            prefix = days[day] = (epoch + timedelta(days=day)).strftime("%Y-%m-%dT")
        h, rest = divmod(sec, 3600)
        m, s = divmod(rest, 60)
        return f"{prefix}{h:02d}:{m:02d}:{s:02d}Z"

    return stamp


def generate_events(
    n_users: int,
    events_per_user: int | tuple[int, int] = 24,
    seed: int = 7,
    start: datetime = DEFAULT_START,
    invalid_rate: float = 0.0,
    *,
    activity: Literal["uniform", "zipf"] = "uniform",
    zipf_s: float = 1.1,
    span_days: float = 28.0,
) -> list[dict[str, Any] | bytes]:
    """A deterministic clickstream of ``n_users`` users, interleaved in time order.

    ``events_per_user``: an exact count, or a ``(low, high)`` range (more active users get more).
    ``activity="zipf"``: event counts follow a Zipf law with exponent ``zipf_s`` over users
    ranked by activity (every user has at least one event); the total is
    ``n_users * mean(events_per_user)``.  Each user's events span ``span_days`` from ``start``
    (truncated to whole seconds).  ``invalid_rate``: see the module docstring; with ``0`` every
    record is a dict that validates with ``schemas.INTERACTION_ADAPTER``.

    Linear in the number of events (one sort at the end); the cyclic garbage collector is paused
    while generating (100,000 users x 10 events take ~10-15 s on one core).
    """
    if n_users < 0:
        raise ValueError("n_users must be >= 0")
    if invalid_rate < 0:
        raise ValueError("invalid_rate must be >= 0")
    if span_days <= 0:
        raise ValueError("span_days must be > 0")
    # millions of small acyclic dicts: the cyclic GC would only rescan them over and over
    gc_enabled = gc.isenabled()
    gc.disable()
    try:
        return _generate(n_users, events_per_user, seed, start, invalid_rate, activity, zipf_s,
                         span_days)
    finally:
        if gc_enabled:
            gc.enable()


def _generate(
    n_users: int,
    events_per_user: int | tuple[int, int],
    seed: int,
    start: datetime,
    invalid_rate: float,
    activity: str,
    zipf_s: float,
    span_days: float,
) -> list[dict[str, Any] | bytes]:
    users = make_users(n_users, seed)
    counts = _event_counts(users, events_per_user, activity, zipf_s)
    stamp = _stamper(start)
    span_s = max(1, int(span_days * 86400))
    keys: list[int] = []
    valid: list[dict[str, Any]] = []
    mult = n_users + 1
    for user, n in zip(users, counts, strict=True):
        stream = _UserStream(user, seed)
        offsets = _offsets(stream.rand, n, span_s)
        idx = user.index
        keys.extend(t * mult + idx for t in offsets)
        valid.extend(stream.events(n, offsets, stamp))
    # per user the offsets strictly increase, so (time, user index) is a unique sort key
    order = sorted(range(len(valid)), key=keys.__getitem__)
    valid = [valid[i] for i in order]
    if invalid_rate == 0 or not valid:
        return list(valid)
    return _with_invalid(valid, invalid_rate, seed)


# --------------------------------------------------------------------------------------------
# Invalid records
# --------------------------------------------------------------------------------------------


def _corrupt(base: dict[str, Any], kind: str, k: int) -> dict[str, Any] | bytes:
    doc: dict[str, Any] = json.loads(json.dumps(base))
    doc["event_id"] = f"evt-invalid-{k:06d}-{kind}"
    # keep event_id first so that even cut or wrapped records show which kind they are
    doc = {"event_id": doc.pop("event_id"), **doc}
    if kind == "invalid_json":
        text = json.dumps(doc, separators=(",", ":"))
        cut = max(len(text) // 2, text.index(",") + 1)
        return text[:cut].encode()
    if kind == "invalid_utf8":
        return b"\xff\xfe" + json.dumps(doc, separators=(",", ":")).encode()
    if kind == "not_an_object":
        return json.dumps([doc], separators=(",", ":")).encode()
    if kind == "missing_user_id":
        del doc["user_id"]
    elif kind == "blank_user_id":
        doc["user_id"] = "   "
    elif kind == "unknown_type":
        doc["type"] = "interaction.purchase"
    elif kind == "future_schema_version":
        doc["schema_version"] = 2
    elif kind == "wrong_type":
        if "rating" in doc:
            doc["rating"] = "five stars"
        else:
            for field in ("item", "chosen", "clicked"):
                if field in doc:
                    value = doc[field]
                    doc[field] = value[0]["id"] if isinstance(value, list) else value["id"]
                    break
    elif kind == "naive_timestamp":
        doc["occurred_at"] = doc["occurred_at"].rstrip("Z")
    elif kind == "extra_field":
        doc["session_id"] = f"sess-{k:06d}"
    else:  # pragma: no cover - INVALID_KINDS and this function are kept in step
        raise AssertionError(kind)
    return doc


def _with_invalid(
    valid: list[dict[str, Any]], invalid_rate: float, seed: int
) -> list[dict[str, Any] | bytes]:
    rng = random.Random(f"prefstream-invalid:{seed}")
    kinds = tuple(INVALID_KINDS)
    n_invalid = int(round(invalid_rate * len(valid)))
    after: dict[int, list[dict[str, Any] | bytes]] = {}
    for k in range(n_invalid):
        pos = rng.randrange(len(valid))
        after.setdefault(pos, []).append(_corrupt(valid[pos], kinds[k % len(kinds)], k + 1))
    out: list[dict[str, Any] | bytes] = []
    for pos, event in enumerate(valid):
        out.append(event)
        extra = after.get(pos)
        if extra:
            out.extend(extra)
    return out


def invalid_kind(record: dict[str, Any] | bytes | str) -> str | None:
    """The :data:`INVALID_KINDS` key of a generated invalid record, or ``None`` for a valid one."""
    if isinstance(record, dict):
        event_id = record.get("event_id")
        text = event_id if isinstance(event_id, str) else ""
    elif isinstance(record, bytes):
        text = record.decode("utf-8", errors="replace")
    else:
        text = record
    match = _INVALID_ID.search(text)
    return match.group(1) if match else None


# --------------------------------------------------------------------------------------------
# Output and CLI
# --------------------------------------------------------------------------------------------


def encode_record(record: dict[str, Any] | bytes | str) -> bytes:
    """One record as the bytes of a Kafka value / JSONL line (raw records are passed through)."""
    if isinstance(record, bytes):
        return record
    if isinstance(record, str):
        return record.encode()
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode()


def write_jsonl(records: Iterable[dict[str, Any] | bytes | str], path: str | Path) -> int:
    """Write records one per line (``-`` = stdout); returns the number of bytes written."""
    data = b"".join(encode_record(r) + b"\n" for r in records)
    if str(path) == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return len(data)


def _parse_range(text: str) -> int | tuple[int, int]:
    for sep in ("-", ":", ","):
        if sep in text:
            lo, hi = text.split(sep, 1)
            return int(lo), int(hi)
    return int(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m streamer.devtools.synthetic",
        description="Write a deterministic synthetic clickstream as JSON lines.",
    )
    parser.add_argument("--users", type=int, default=40)
    parser.add_argument("--events-per-user", type=_parse_range, default=24,
                        help="a count, or a range like 10-40")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--start", type=datetime.fromisoformat, default=DEFAULT_START,
                        help="ISO 8601 timezone-aware start (default 2026-01-01T00:00:00Z)")
    parser.add_argument("--span-days", type=float, default=28.0)
    parser.add_argument("--activity", choices=("uniform", "zipf"), default="uniform")
    parser.add_argument("--zipf-s", type=float, default=1.1)
    parser.add_argument("--invalid-rate", type=float, default=0.0,
                        help="extra invalid records per valid one (default 0: valid only)")
    parser.add_argument("--out", default="-", help="output file (default: stdout)")
    args = parser.parse_args(argv)
    try:
        records = generate_events(
            args.users, args.events_per_user, seed=args.seed, start=args.start,
            invalid_rate=args.invalid_rate, activity=args.activity, zipf_s=args.zipf_s,
            span_days=args.span_days,
        )
    except ValueError as exc:
        parser.error(str(exc))
    size = write_jsonl(records, args.out)
    kinds = Counter(r["type"].removeprefix("interaction.") for r in records
                    if isinstance(r, dict) and invalid_kind(r) is None)
    n_invalid = len(records) - sum(kinds.values())
    users = len({r["user_id"] for r in records if isinstance(r, dict) and invalid_kind(r) is None})
    summary = (
        f"users={users} events={sum(kinds.values())} invalid={n_invalid} bytes={size} kinds: "
        + ", ".join(f"{k}={kinds[k]}" for k in KINDS)
    )
    print(summary, file=sys.stderr if args.out == "-" else sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
