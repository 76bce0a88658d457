"""The item catalog (pure): the compacted topic's view, and items resolved when windows close."""

import pytest

from schemas import CatalogItem, Item
from streamer.domain.catalog import Catalog, bare_items, missing_items, resolve
from streamer.domain.triples import to_triples
from streamer.errors import InvalidEventError
from tests.factories import click, impression, item, pairwise

pytestmark = pytest.mark.unit


def record(i, **kw):
    return CatalogItem(domain="news", item=item(i, **kw))


def wire(r):
    return r.model_dump_json().encode()


def test_the_latest_record_of_a_key_wins_and_a_tombstone_deletes():
    c = Catalog()
    c.apply(b"n1", wire(record("n1", title="old")))
    c.apply(b"n1", wire(record("n1", title="new")))
    c.apply(b"n2", wire(record("n2")))
    assert len(c) == 2 and c.get("n1").title == "new"
    c.apply(b"n1", None)
    assert c.get("n1") is None and "n2" in c
    assert (c.lookups, c.misses) == (2, 1)


@pytest.mark.parametrize("key, value, code", [
    (b"n1", b"{not json", "catalog_not_json"),
    (b"n1", b'{"type": "catalog.item", "schema_version": 1, "item": {"id": "n1"}}',
     "catalog_invalid"),  # no domain
    (b"other", wire(record("n1")), "catalog_key_mismatch"),
    (None, None, "catalog_bad_key"),
])
def test_a_bad_record_is_refused_with_its_reason_and_the_view_is_unchanged(key, value, code):
    c = Catalog()
    c.apply(b"n0", wire(record("n0")))
    with pytest.raises(InvalidEventError) as err:
        c.apply(key, value)
    assert err.value.code == code
    assert len(c) == 1


def test_bare_items_keep_only_ids_and_resolve_back_to_the_same_triples():
    events = [pairwise("p1"), impression("i1", 2, 3), click("c1")]
    bare = [bare_items(e) for e in events]
    assert all(i.is_bare() for e in bare for i in _items(e))
    c = Catalog()
    for e in events:
        for i in _items(e):
            c.put(CatalogItem(domain=e.domain, item=i))
    resolved = resolve(bare, c.get)
    assert resolved.unresolved_item_ids == () and resolved.unusable_event_ids == ()
    assert to_triples(resolved.events).triples == to_triples(events).triples


def test_inline_items_are_used_as_sent_and_never_looked_up():
    c = Catalog()
    c.put(record("c-p1", title="catalog text"))  # the event's own text wins
    events = [pairwise("p1")]
    assert resolve(events, c.get).events == tuple(events)
    assert c.lookups == 0 and missing_items(events[0], c.get) == ()


def test_unresolved_items_are_dropped_from_the_event_and_recorded():
    c = Catalog()
    c.put(record("known", title="Known"))
    imp = bare_items(impression("i1", 2, 2)).model_copy(
        update={"clicked": (Item(id="known"), Item(id="gone-c")),
                "skipped": (Item(id="gone-s"),)})
    pair = pairwise("p1", chosen=Item(id="known"), rejected=Item(id="gone-r"))
    lost = pairwise("p2", chosen=Item(id="gone-c"), rejected=Item(id="known"))
    only = bare_items(click("c1"))
    r = resolve([imp, pair, lost, only], c.get)
    assert r.unresolved_item_ids == ("gone-c", "gone-s", "gone-r", "n-c1")
    assert r.unusable_event_ids == ("p2", "c1")  # no positive item left: no triple
    got_imp, got_pair = r.events
    assert [i.id for i in got_imp.clicked] == ["known"] and got_imp.skipped == ()
    assert got_pair.chosen.title == "Known" and got_pair.rejected is None
    triples = to_triples(r.events).triples
    assert {t.event_id for t in triples} == {"i1", "p1"}
    assert all("No negative sample." in t.rejected for t in triples)
    assert missing_items(lost, c.get) == ("gone-c",)


def _items(e):
    from streamer.domain.catalog import _items_of

    return list(_items_of(e))
