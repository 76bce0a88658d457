"""Public clickstream datasets, exactly as published, to prefstream interaction events.

Each converter takes the dataset's files as lines of text and returns events in timestamp order,
following the AlignXplore+ data conventions (shared docs, alignxplore-plus.md section 4):

* **MIND** (``behaviors.tsv`` + ``news.tsv``, headerless TSV; times ``MM/DD/YYYY HH:MM:SS AM/PM``):
  news items render as ``Title/Abstract``. A user's click history (listed again in every
  impression row: taken once) becomes one :class:`~schemas.PairwiseChoice` per clicked article,
  each against a random article the user never clicked; every impression row becomes an
  :class:`~schemas.Impression` of its clicked (``-1``) and skipped (``-0``) articles, which the
  triples pair from the same impression.
* **MovieLens** (``ratings.csv`` + ``movies.csv``, with their CSV headers): every rating is a
  positive, whatever the score, paired with a random movie the user did not rate; movies render
  as ``Title, Genres``.
* **Amazon Reviews 2023** (a category's review JSONL + its ``meta`` JSONL, joined on
  ``parent_asin``): every review is a positive paired with a random item the user did not review;
  items render as ``Title/Description`` with the description list stringified as published
  (``['…']``), like the books pipeline.

Every dataset's items also come out as catalog records (:attr:`ImportResult.catalog`), and
:meth:`ImportResult.by_id` gives the events with items named by id only, as a platform whose
item text lives in the catalog topic would publish them.

Negatives are drawn from a generator seeded with ``seed`` and the user id, so a conversion is
reproducible. Queries are left empty (the default per-domain query is rendered, e.g. ``Please
recommend some news to me.``).
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from schemas import CatalogItem, Impression, Interaction, Item, PairwiseChoice

from ..errors import ConfigurationError
from .catalog import bare_items

__all__ = ["ImportResult", "amazon", "mind", "movielens"]

MIND_TIME = "%m/%d/%Y %I:%M:%S %p"


@dataclass(frozen=True, slots=True)
class ImportResult:
    events: list[Interaction]
    users: int
    items: int
    skipped: int  # records that referenced an unknown item, or could not be paired
    catalog: tuple[CatalogItem, ...] = ()  # every item of the dataset, as catalog records

    def by_id(self) -> list[Interaction]:
        """The events with their items named by id only (to resolve from ``catalog``)."""
        return [bare_items(e) for e in self.events]


def _rng(seed: int, user: str) -> random.Random:
    return random.Random(f"{seed}/{user}")


def _negative(rng: random.Random, pool: Sequence[str], excluded: set[str]) -> str | None:
    """A random pool id not in ``excluded`` (None when every id is excluded)."""
    if len(excluded) >= len(pool):
        left = [i for i in pool if i not in excluded]
        return rng.choice(left) if left else None
    while True:
        candidate = pool[rng.randrange(len(pool))]
        if candidate not in excluded:
            return candidate


def _bad(source: str, n: int, detail: str) -> ConfigurationError:
    return ConfigurationError(f"{source} line {n}: {detail}")


# --------------------------------------------------------------------------- MIND


def mind(behaviors: Iterable[str], news: Iterable[str], *, seed: int = 7) -> ImportResult:
    items: dict[str, Item] = {}
    for n, line in enumerate(news, start=1):
        if not line.strip():
            continue
        cols = line.rstrip("\n").split("\t")
        if len(cols) < 5:
            raise _bad("news.tsv", n, f"expected 8 tab-separated columns, got {len(cols)}")
        items[cols[0]] = Item(id=cols[0], title=cols[3] or None, abstract=cols[4] or None)
    pool = sorted(items)
    events: list[Interaction] = []
    history_done: set[str] = set()
    clicked_by: dict[str, set[str]] = {}
    rows = []
    for n, line in enumerate(behaviors, start=1):
        if not line.strip():
            continue
        cols = line.rstrip("\n").split("\t")
        if len(cols) != 5:
            raise _bad("behaviors.tsv", n, f"expected 5 tab-separated columns, got {len(cols)}")
        impression_id, user, when, history, shown = cols
        try:
            at = datetime.strptime(when, MIND_TIME).replace(tzinfo=UTC)
        except ValueError as exc:
            raise _bad("behaviors.tsv", n, f"time {when!r} is not MM/DD/YYYY HH:MM:SS AM/PM") \
                from exc
        pairs = [s.rsplit("-", 1) for s in shown.split()]
        rows.append((impression_id, user, at, history.split(), pairs))
        clicked = clicked_by.setdefault(user, set())
        clicked.update(history.split())
        clicked.update(i for i, label in pairs if label == "1")
    skipped = 0
    for impression_id, user, at, history, pairs in rows:
        rng = _rng(seed, user)
        if user not in history_done:  # the click history is repeated in every row: once
            history_done.add(user)
            for k, news_id in enumerate(history):
                negative = _negative(rng, pool, clicked_by[user])
                if news_id not in items or negative is None:
                    skipped += 1
                    continue
                events.append(PairwiseChoice(
                    event_id=f"mind-{user}-h{k}", user_id=user, occurred_at=at, domain="news",
                    chosen=items[news_id], rejected=items[negative]))
        clicked = [items[i] for i, label in pairs if label == "1" and i in items]
        shown_skipped = [items[i] for i, label in pairs if label == "0" and i in items]
        if not clicked:
            skipped += 1
            continue
        events.append(Impression(event_id=f"mind-imp-{impression_id}", user_id=user,
                                 occurred_at=at, domain="news", clicked=tuple(clicked[:100]),
                                 skipped=tuple(shown_skipped[:500])))
    return _result(events, items, skipped, "news")


# --------------------------------------------------------------------------- MovieLens


def movielens(ratings: Iterable[str], movies: Iterable[str], *, seed: int = 7) -> ImportResult:
    items: dict[str, Item] = {}
    reader = csv.DictReader(movies)
    if reader.fieldnames is None or not {"movieId", "title", "genres"} <= set(reader.fieldnames):
        raise ConfigurationError("movies.csv: expected the header movieId,title,genres")
    for row in reader:
        genres = () if row["genres"] == "(no genres listed)" else tuple(row["genres"].split("|"))
        items[row["movieId"]] = Item(id=row["movieId"], title=row["title"], genres=genres)
    rated: dict[str, list[tuple[int, str]]] = {}
    reader = csv.DictReader(ratings)
    if reader.fieldnames is None or not {"userId", "movieId", "rating", "timestamp"} <= set(
            reader.fieldnames):
        raise ConfigurationError("ratings.csv: expected the header userId,movieId,rating,timestamp")
    for row in reader:
        rated.setdefault(row["userId"], []).append((int(row["timestamp"]), row["movieId"]))
    return _positives(rated, items, seed, prefix="ml", domain="movies", per_second=1)


# --------------------------------------------------------------------------- Amazon Reviews 2023


def amazon(reviews: Iterable[str], meta: Iterable[str], *, seed: int = 7) -> ImportResult:
    items: dict[str, Item] = {}
    for n, line in enumerate(meta, start=1):
        if not line.strip():
            continue
        try:
            m = json.loads(line)
            asin = m["parent_asin"]
        except (ValueError, KeyError) as exc:
            raise _bad("meta JSONL", n, "not a JSON object with parent_asin") from exc
        description = m.get("description")
        items[asin] = Item(id=asin, title=m.get("title") or None,
                           description=str(description) if description else None)
    reviewed: dict[str, list[tuple[int, str]]] = {}
    for n, line in enumerate(reviews, start=1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
            reviewed.setdefault(r["user_id"], []).append((int(r["timestamp"]), r["parent_asin"]))
        except (ValueError, KeyError) as exc:
            raise _bad("review JSONL", n, "not a JSON object with user_id, parent_asin, "
                                          "timestamp") from exc
    return _positives(reviewed, items, seed, prefix="amz", domain="books", per_second=1000)


def _positives(seen_by_user: dict[str, list[tuple[int, str]]], items: dict[str, Item],
               seed: int, *, prefix: str, domain: str, per_second: int) -> ImportResult:
    """Every (timestamp, item) a user interacted with as a positive, each against a random
    item of ``items`` the user never interacted with (timestamps in 1/``per_second`` s)."""
    pool = sorted(items)
    events: list[Interaction] = []
    skipped = 0
    for user, seen in seen_by_user.items():
        rng = _rng(seed, user)
        excluded = {i for _, i in seen}
        for ts, item_id in sorted(seen):
            negative = _negative(rng, pool, excluded)
            if item_id not in items or negative is None:
                skipped += 1
                continue
            events.append(PairwiseChoice(
                event_id=f"{prefix}-{user}-{item_id}-{ts}", user_id=user,
                occurred_at=datetime.fromtimestamp(ts / per_second, UTC), domain=domain,
                chosen=items[item_id], rejected=items[negative]))
    return _result(events, items, skipped, domain)


def _result(events: list[Interaction], items: dict[str, Item], skipped: int,
            domain: str) -> ImportResult:
    events.sort(key=lambda e: (e.occurred_at, e.user_id, e.event_id))
    return ImportResult(events, len({e.user_id for e in events}), len(items), skipped,
                        tuple(CatalogItem(domain=domain, item=i) for i in items.values()))
