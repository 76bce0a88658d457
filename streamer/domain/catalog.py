"""The item catalog: events may name items by id alone; their text comes from here (pure).

:class:`Catalog` is the in-memory view of the compacted catalog topic (``profiles.items.v1``,
key = item id, value = :class:`~schemas.CatalogItem`, null = delete); the Kafka adapter feeds
it.  Items are resolved when a window closes (:func:`resolve`), not when an event arrives, so
an item published after the click still resolves.  Only *bare* items (an id, no text field)
are looked up: an item carrying its own text is used exactly as sent, catalog or not.

A bare item the catalog does not know is *unresolved*.  The scheduler holds a window while an
unresolved item's event is younger than the grace period (:func:`missing_items`); after that
the event is applied without the item:

* an impression drops the unresolved items from ``clicked`` and ``skipped``;
* a pairwise choice with an unresolved ``rejected`` renders ``No negative sample.``;
* an event left without its positive item (``chosen``, ``item``, every one of its clicked
  items) cannot become a triple: it is recorded in the version as dropped.

Every unresolved id is recorded in the version's ``window.unresolved_item_ids``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from pydantic import ValidationError

from schemas import CatalogItem, Impression, Interaction, Item, PairwiseChoice

from ..errors import InvalidEventError

Lookup = Callable[[str], Item | None]


class Catalog:
    """Item id -> item, the latest record of each key (what compaction keeps)."""

    def __init__(self) -> None:
        self._items: dict[str, Item] = {}
        self.lookups = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, item_id: str) -> bool:
        return item_id in self._items

    def get(self, item_id: str) -> Item | None:
        self.lookups += 1
        item = self._items.get(item_id)
        if item is None:
            self.misses += 1
        return item

    def put(self, record: CatalogItem) -> None:
        self._items[record.item.id] = record.item

    def delete(self, item_id: str) -> bool:
        return self._items.pop(item_id, None) is not None

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """One catalog-topic record: a :class:`CatalogItem`, or a tombstone (``value`` None).

        Raises :class:`InvalidEventError` for a record that is neither (it is skipped and
        counted by the reader; the rest of the catalog still loads)."""
        item_id = key.decode("utf-8", "replace") if key else None
        if value is None:
            if not item_id:
                raise InvalidEventError("catalog_bad_key", "tombstone without a key")
            self.delete(item_id)
            return
        record = decode_catalog_item(value)
        if item_id is not None and item_id != record.item.id:
            raise InvalidEventError(
                "catalog_key_mismatch",
                f"record key {item_id[:80]!r} is not its item id {record.item.id[:80]!r} "
                "(the key must be the item id, or compaction keeps the wrong record)")
        self.put(record)


def decode_catalog_item(value: bytes | str) -> CatalogItem:
    """Parse one catalog record (JSON) or raise :class:`InvalidEventError` saying why."""
    try:
        return CatalogItem.from_wire(value)
    except json.JSONDecodeError as exc:
        raise InvalidEventError("catalog_not_json", f"catalog record is not JSON: {exc}") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "record"
        raise InvalidEventError(
            "catalog_invalid", f"catalog record invalid at {where}: {first['msg']}") from exc


def _items_of(event: Interaction) -> Iterable[Item]:
    if isinstance(event, PairwiseChoice):
        yield event.chosen
        if event.rejected is not None:
            yield event.rejected
    elif isinstance(event, Impression):
        yield from event.clicked
        yield from event.skipped
    else:
        yield event.item


def bare_items(event: Interaction) -> Interaction:
    """The event with each of its items reduced to its id (the catalog has the rest)."""
    def bare(item: Item) -> Item:
        return Item(id=item.id)

    if isinstance(event, PairwiseChoice):
        return event.model_copy(update={
            "chosen": bare(event.chosen),
            "rejected": bare(event.rejected) if event.rejected is not None else None})
    if isinstance(event, Impression):
        return event.model_copy(update={"clicked": tuple(map(bare, event.clicked)),
                                        "skipped": tuple(map(bare, event.skipped))})
    return event.model_copy(update={"item": bare(event.item)})


def missing_items(event: Interaction, lookup: Lookup) -> tuple[str, ...]:
    """Ids of the event's bare items the catalog does not know (yet)."""
    return tuple(dict.fromkeys(i.id for i in _items_of(event)
                               if i.is_bare() and lookup(i.id) is None))


@dataclass(frozen=True, slots=True)
class Resolution:
    """A window with its bare items filled in from the catalog."""

    events: tuple[Interaction, ...]
    """The events that still have something to show the model, items resolved."""
    unresolved_item_ids: tuple[str, ...] = ()
    unusable_event_ids: tuple[str, ...] = ()
    """Events left without their positive item: applied, but no triple."""


def resolve(events: Sequence[Interaction], lookup: Lookup) -> Resolution:
    """Fill in every bare item from the catalog; apply events without the unresolved ones."""
    unresolved: dict[str, None] = {}
    unusable: list[str] = []
    out: list[Interaction] = []

    def get(item: Item) -> Item | None:
        if not item.is_bare():
            return item
        found = lookup(item.id)
        if found is None:
            unresolved[item.id] = None
        return found

    for event in events:
        if isinstance(event, PairwiseChoice):
            chosen, rejected = get(event.chosen), (get(event.rejected) if event.rejected else None)
            new: Interaction | None = event.model_copy(
                update={"chosen": chosen, "rejected": rejected}) if chosen else None
        elif isinstance(event, Impression):
            clicked = tuple(i for i in map(get, event.clicked) if i is not None)
            skipped = tuple(i for i in map(get, event.skipped) if i is not None)
            new = event.model_copy(update={"clicked": clicked, "skipped": skipped}) \
                if clicked else None
        else:
            item = get(event.item)
            new = event.model_copy(update={"item": item}) if item is not None else None
        if new is None:
            unusable.append(event.event_id)
        else:
            out.append(new)
    return Resolution(tuple(out), tuple(unresolved), tuple(unusable))

