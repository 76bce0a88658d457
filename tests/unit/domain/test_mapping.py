"""Mapping files (pure): selectors, conditions, the shipped Segment and Snowplow examples on
their samples, and a clear reason for every record or file that cannot be converted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from schemas import Click, Feedback, Impression, Rating
from streamer.domain.codec import decode_interaction
from streamer.domain.mapping import parse_mapping
from streamer.errors import ConfigurationError, InvalidEventError

pytestmark = pytest.mark.unit

MAPPINGS = Path(__file__).resolve().parents[3] / "deploy" / "mappings"


def shipped(name: str):
    return parse_mapping(yaml.safe_load((MAPPINGS / f"{name}.yaml").read_text()), source=name)


def samples(name: str) -> list[dict]:
    return [json.loads(line) for line in (MAPPINGS / "samples" / f"{name}.jsonl").read_text()
            .splitlines() if line.strip()]


def convert(m, doc):
    return decode_interaction(None, m.apply(json.dumps(doc).encode()))


def code_of(m, doc) -> str:
    with pytest.raises(InvalidEventError) as err:
        convert(m, doc)
    return err.value.code


def test_segment_ecommerce_sample():
    m = shipped("segment-ecommerce")
    docs = samples("segment-ecommerce")
    click, viewed, added, reviewed, removed = (convert(m, d) for d in docs[:5])
    assert isinstance(click, Click) and click.event_id == "seg-msg-1"
    assert click.user_id == "user-42" and click.domain == "products"
    assert click.occurred_at.isoformat() == "2026-11-30T10:00:00.800000+00:00"  # original time
    assert (click.item.id, click.item.title, click.item.description) == (
        "507f1f77bcf86cd799439011", "Monopoly: 3rd Edition", "Hasbro, Games")
    assert isinstance(viewed, Click) and viewed.item.id == "1234"  # a number, as a string
    assert viewed.item.description == "Games"  # no brand: the category alone
    assert isinstance(added, Feedback) and added.signal == "like"
    assert isinstance(removed, Feedback) and removed.signal == "dislike"
    assert isinstance(reviewed, Rating) and (reviewed.rating, reviewed.scale_max) == (5.0, 5.0)
    assert reviewed.item.is_bare()  # the review names the product by id: the catalog's job
    assert [code_of(m, d) for d in docs[5:]] == [
        "mapping_missing_field",  # an anonymous visitor: no userId
        "mapping_no_rule",  # a page call
        "mapping_bad_value",  # rating "five stars"
    ]


def test_snowplow_ecommerce_sample():
    m = shipped("snowplow-ecommerce")
    docs = samples("snowplow-ecommerce")
    view, cart, listed = (convert(m, d) for d in docs[:3])
    assert isinstance(view, Click) and view.event_id == "c6ef3124-b53a-4b13-a233-0088f79dcbcb"
    assert view.occurred_at.isoformat() == "2026-11-30T10:00:00.123000+00:00"  # derived_tstamp
    assert (view.item.id, view.item.title) == ("P-125", "Baseball T")
    assert isinstance(cart, Feedback) and cart.signal == "like"
    # collector_tstamp in the enriched TSV's format: UTC, no zone written
    assert cart.occurred_at.isoformat() == "2026-11-30T10:02:00+00:00"
    assert isinstance(listed, Impression)
    assert [i.id for i in listed.clicked] == ["P-9"]
    assert [i.title for i in listed.skipped] == ["Wool Socks", "Rain Jacket"]
    assert [code_of(m, d) for d in docs[3:]] == ["mapping_missing_field", "mapping_no_rule"]


def mapping(fields, when=None, emit="interaction.click"):
    return parse_mapping({"mapping": 1, "name": "t", "rules": [
        {"name": "r", "when": when or {}, "emit": emit, "fields": fields}]})


BASE = {"event_id": "id", "user_id": "u", "occurred_at": {"path": "t", "as": "timestamp"},
        "item": {"id": {"path": "p", "as": "str"}}}


@pytest.mark.parametrize("stamp, want", [
    ("2026-01-02T03:04:05Z", "2026-01-02T03:04:05+00:00"),
    ("2026-01-02T03:04:05+02:00", "2026-01-02T03:04:05+02:00"),
    ("2026-01-02 03:04:05.250", "2026-01-02T03:04:05.250000+00:00"),
    (1767323045, "2026-01-02T03:04:05+00:00"),
    (1767323045250, "2026-01-02T03:04:05.250000+00:00"),
])
def test_timestamps_in_every_common_form(stamp, want):
    e = convert(mapping(BASE), {"id": "e", "u": "x", "t": stamp, "p": 1})
    assert e.occurred_at.isoformat() == want


def test_maps_defaults_templates_first_and_each_with_where():
    m = mapping({**BASE, "event_id": {"template": "seg-{id}-{n}"},
                 "user_id": {"first": ["a.user", "b[1]"]},
                 "signal": {"path": "s", "map": {"thumbs_up": "like", "thumbs_down": "dislike",
                                                 "true": "like"}, "default": "dislike"}},
                emit="interaction.feedback")
    doc = {"id": "e", "n": 7, "b": ["x", "second"], "t": 0, "p": "p1", "s": "thumbs_up"}
    e = convert(m, doc)
    assert (e.event_id, e.user_id, e.signal) == ("seg-e-7", "second", "like")
    assert convert(m, {**doc, "s": "meh"}).signal == "dislike"  # not in the map: the default
    assert convert(m, {**doc, "s": True}).signal == "like"  # a non-string value, mapped
    assert code_of(m, {k: v for k, v in doc.items() if k != "n"}) == "mapping_missing_field"

    imp = mapping({**{k: v for k, v in BASE.items() if k != "item"},
                   "clicked": {"each": "shown", "where": {"clicked": True},
                               "fields": {"id": "sku", "title": "name"}},
                   "skipped": {"each": "shown", "where": {"clicked": {"not": True}},
                               "fields": {"id": "sku"}}}, emit="interaction.impression")
    e = convert(imp, {"id": "e", "u": "x", "t": 0, "shown": [
        {"sku": "a", "name": "A", "clicked": True}, {"sku": "b"}, {"sku": "c", "clicked": False}]})
    assert [i.id for i in e.clicked] == ["a"] and [i.id for i in e.skipped] == ["b", "c"]


def test_conditions_pick_the_first_rule_that_holds():
    m = parse_mapping({"mapping": 1, "rules": [
        {"name": "schema v1", "emit": "interaction.click", "fields": BASE,
         "when": {"schema": {"startswith": "iglu:com.acme/click/jsonschema/1-"},
                  "p": {"exists": True}}},
        {"name": "rated", "emit": "interaction.rating",
         "fields": {**BASE, "rating": {"path": "r", "as": "float"}},
         "when": {"kind": ["rating", "review"]}},
    ]})
    doc = {"id": "e", "u": "x", "t": 0, "p": "i"}
    assert isinstance(convert(m, {**doc, "schema": "iglu:com.acme/click/jsonschema/1-0-2"}), Click)
    assert isinstance(convert(m, {**doc, "kind": "review", "r": "4.5"}), Rating)
    assert code_of(m, {**doc, "schema": "iglu:com.acme/click/jsonschema/2-0-0"}) \
        == "mapping_no_rule"


def test_an_event_the_contract_refuses_names_the_rule_and_the_field():
    m = mapping({**BASE, "rating": {"path": "r", "as": "float"}}, emit="interaction.rating")
    source = json.dumps({"id": "e", "u": "x", "t": 0, "p": "i", "r": -1}).encode()
    with pytest.raises(InvalidEventError) as err:
        m.decode(b"x", source)
    assert err.value.code == "mapping_invalid_output"
    assert "rule 'r'" in str(err.value) and "rating" in str(err.value)
    # a problem that is not the mapping's keeps its own code
    with pytest.raises(InvalidEventError) as err:
        m.decode(None, source.replace(b'"r": -1', b'"r": 4'), require_key=True)
    assert err.value.code == "missing_key"
    value, event = m.decode(b"x", source.replace(b'"r": -1', b'"r": 4'))
    assert event.rating == 4 and json.loads(value)["type"] == "interaction.rating"


@pytest.mark.parametrize("value, code", [
    (b"{not json", "invalid_json"), (b"[1, 2]", "not_an_object"), (b"\xff", "invalid_utf8"),
    (b"[" * 5000 + b"]" * 5000, "too_deep"), (None, "empty_value")])
def test_bytes_that_are_no_record_get_the_usual_codes(value, code):
    with pytest.raises(InvalidEventError) as err:
        mapping(BASE).apply(value)
    assert err.value.code == code


@pytest.mark.parametrize("doc, message", [
    ({"rules": []}, "`mapping: 1`"),
    ({"mapping": 1, "rules": []}, "non-empty list"),
    ({"mapping": 1, "rules": [{"emit": "click", "fields": BASE}]}, "emit must be one of"),
    ({"mapping": 1, "rules": [{"emit": "interaction.click", "fields": {"event_id": "a"}}]},
     "must give user_id, occurred_at"),
    ({"mapping": 1, "rules": [{"emit": "interaction.click",
                               "fields": {**BASE, "domain": "products"}}]}, None),
    ({"mapping": 1, "rules": [{"emit": "interaction.click",
                               "fields": {**BASE, "domain": 5}}]}, "{const: 5}"),
    ({"mapping": 1, "rules": [{"emit": "interaction.click",
                               "fields": {**BASE, "x": {"path": "a..b"}}}]}, "cannot parse path"),
    ({"mapping": 1, "rules": [{"emit": "interaction.click",
                               "fields": {**BASE, "x": {"path": "a", "as": "date"}}}]},
     "as must be one of"),
    ({"mapping": 1, "rules": [{"emit": "interaction.click",
                               "fields": {**BASE, "x": {"path": "a", "mapp": {}}}}]},
     "unknown key(s) mapp"),
    ({"mapping": 1, "rules": [{"emit": "interaction.click", "fields": BASE,
                               "when": {"a": {"equals": 1}}}]}, "a condition is"),
])
def test_a_wrong_mapping_file_says_what_and_where(doc, message):
    if message is None:  # a bare string is a path, not a constant: valid
        parse_mapping(doc)
        return
    with pytest.raises(ConfigurationError) as err:
        parse_mapping(doc, source="m.yaml")
    assert message in str(err.value)
