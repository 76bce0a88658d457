"""Turn clickstream events into the (query, chosen, rejected) triples the model was trained on.

Conventions follow the AlignXplore+ data pipelines: per-domain item text (news
``Title/Abstract``, books ``Title/Description``, movies ``Title, Genres``), a per-domain
sentence for a missing query, and ``No negative sample.`` for positive-only signals.  Pairing is
deterministic: the same events in the same order always give the same triples.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from schemas import Click, Feedback, Impression, Interaction, Item, PairwiseChoice, Rating

from .safety import neutralize

NO_NEGATIVE = "No negative sample."

_DOMAIN_NOUNS = {"news": "news", "books": "books", "movies": "movies"}


@dataclass(frozen=True, slots=True)
class Triple:
    """One interaction as the model sees it, with the event it came from."""

    query: str
    chosen: str
    rejected: str
    event_id: str


@dataclass(frozen=True, slots=True)
class Conversion:
    """Triples made from a window, plus events that could not become a triple."""

    triples: tuple[Triple, ...]
    unpaired_event_ids: tuple[str, ...] = field(default=())


def default_query(domain: str) -> str:
    """The sentence used when an event carries no query (`Please recommend some news to me.`)."""
    noun = _DOMAIN_NOUNS.get(domain, "items")
    return f"Please recommend some {noun} to me."


def render_item(item: Item, domain: str) -> str:
    """Render an item's text exactly as the training data did for its domain, made inert
    (:func:`~streamer.domain.safety.neutralize`: no control tokens or invisible characters)."""
    return neutralize(_render(item, domain))


def _render(item: Item, domain: str) -> str:
    title = item.title or item.text or item.id
    if domain == "news":
        return f"Title: {title}\nAbstract: {item.abstract or ''}"
    if domain == "books":
        return f"Title: {title}\nDescription: {item.description or ''}"
    if domain == "movies":
        return f"Title: {title}, Genres: {'|'.join(item.genres)}"
    return _render_generic(item)


def _render_generic(item: Item) -> str:
    if item.text and not (item.title or item.abstract or item.description or item.genres):
        return item.text
    parts = [f"Title: {item.title or item.id}"]
    if item.abstract:
        parts.append(f"Abstract: {item.abstract}")
    if item.description:
        parts.append(f"Description: {item.description}")
    if item.genres:
        parts.append(f"Genres: {'|'.join(item.genres)}")
    if item.text:
        parts.append(item.text)
    return "\n".join(parts)


def is_positive(event: Rating | Feedback, rating_threshold: float) -> bool:
    """Ratings at or above ``rating_threshold`` x scale and likes are positive."""
    if isinstance(event, Feedback):
        return event.signal == "like"
    return event.rating >= rating_threshold * event.scale_max


def to_triples(events: Sequence[Interaction], *, rating_threshold: float = 0.7) -> Conversion:
    """Convert a user's window of events (in arrival order) into triples.

    - pairwise choices map one to one;
    - an impression pairs its i-th clicked item with its i-th skipped item (cycling through the
      skipped ones), or ``No negative sample.`` when nothing was skipped;
    - clicks are positive-only;
    - ratings and likes/dislikes: each positive is paired, in order, with the next unused
      negative of the same window and domain, else ``No negative sample.``; negatives left over
      cannot form a triple on their own and are reported as unpaired.
    """
    triples: list[Triple] = []
    negatives: dict[str, list[Rating | Feedback]] = {}
    positives: list[Rating | Feedback] = []
    for event in events:
        if isinstance(event, Rating | Feedback):
            if is_positive(event, rating_threshold):
                positives.append(event)
            else:
                negatives.setdefault(event.domain, []).append(event)
    positive_ids = {e.event_id for e in positives}
    used_negatives: set[str] = set()
    neg_cursor = {domain: 0 for domain in negatives}

    for event in events:
        query = neutralize(event.query or default_query(event.domain))
        if isinstance(event, PairwiseChoice):
            rejected = render_item(event.rejected, event.domain) if event.rejected else NO_NEGATIVE
            triples.append(
                Triple(query, render_item(event.chosen, event.domain), rejected, event.event_id)
            )
        elif isinstance(event, Impression):
            for i, clicked in enumerate(event.clicked):
                if event.skipped:
                    rejected = render_item(event.skipped[i % len(event.skipped)], event.domain)
                else:
                    rejected = NO_NEGATIVE
                chosen = render_item(clicked, event.domain)
                triples.append(Triple(query, chosen, rejected, event.event_id))
        elif isinstance(event, Click):
            triples.append(
                Triple(query, render_item(event.item, event.domain), NO_NEGATIVE, event.event_id)
            )
        elif event.event_id in positive_ids:
            pool = negatives.get(event.domain, [])
            cursor = neg_cursor.get(event.domain, 0)
            if cursor < len(pool):
                negative = pool[cursor]
                neg_cursor[event.domain] = cursor + 1
                used_negatives.add(negative.event_id)
                rejected = render_item(negative.item, negative.domain)
            else:
                rejected = NO_NEGATIVE
            triples.append(
                Triple(query, render_item(event.item, event.domain), rejected, event.event_id)
            )
    unpaired = tuple(
        e.event_id
        for pool in negatives.values()
        for e in pool
        if e.event_id not in used_negatives
    )
    return Conversion(tuple(triples), unpaired)
