"""The synthetic clickstream generator (streamer.devtools.synthetic)."""

from __future__ import annotations

import json
import re
import statistics
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from schemas import INTERACTION_ADAPTER, Item
from streamer.devtools import synthetic as sample
from streamer.domain.codec import decode_interaction
from streamer.domain.triples import to_triples
from streamer.errors import InvalidEventError

pytestmark = pytest.mark.unit

BUNDLED = Path(sample.__file__).resolve().parents[1] / "data" / "sample_clickstream.jsonl"
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


@pytest.fixture(scope="module")
def stream() -> list[dict]:
    return sample.generate_events(30, 30, seed=11)


@pytest.fixture(scope="module")
def long_stream() -> list[dict]:
    return sample.generate_events(25, 90, seed=5)


def _when(record: dict) -> datetime:
    return datetime.fromisoformat(record["occurred_at"])


def _seq(record: dict) -> int:
    return int(record["event_id"].rsplit("-", 1)[1])


def _signals(record: dict) -> list[tuple[str, str, bool]]:
    """(domain, category, positive?) for every item the event says something about."""
    kind = record["type"]
    out = []

    def add(item: dict, positive: bool) -> None:
        domain, category = sample.item_category(item["id"])
        assert domain == record["domain"]
        out.append((domain, category, positive))

    if kind == "interaction.impression":
        for item in record["clicked"]:
            add(item, True)
    elif kind == "interaction.pairwise":
        add(record["chosen"], True)
        add(record["rejected"], False)
    elif kind == "interaction.rating":
        add(record["item"], record["rating"] >= 0.7 * record["scale_max"])
    elif kind == "interaction.feedback":
        add(record["item"], record["signal"] == "like")
    else:
        add(record["item"], True)
    return out


# ----------------------------------------------------------------------------- determinism


def test_same_seed_same_output():
    a = sample.generate_events(15, (5, 30), seed=3, invalid_rate=0.2)
    b = sample.generate_events(15, (5, 30), seed=3, invalid_rate=0.2)
    assert a == b
    assert [sample.encode_record(r) for r in a] == [sample.encode_record(r) for r in b]


def test_other_seed_other_output():
    assert sample.generate_events(5, 10, seed=1) != sample.generate_events(5, 10, seed=2)


def test_users_depend_only_on_seed_and_index():
    assert sample.make_users(3, seed=9) == sample.make_users(6, seed=9)[:3]
    assert sample.make_users(3, seed=9) != sample.make_users(3, seed=10)


# ----------------------------------------------------------------------------- valid records


def test_every_record_validates_with_exact_wire_fields(stream):
    item_fields = set(Item.model_fields)
    for record in stream:
        event = INTERACTION_ADAPTER.validate_python(record)
        assert set(record) == set(type(event).model_fields), record["event_id"]
        assert STAMP.match(record["occurred_at"])
        for key in ("item", "chosen", "rejected"):
            if key in record and record[key] is not None:
                assert set(record[key]) <= item_fields
        json.dumps(record)  # JSON-ready


def test_every_valid_record_decodes_like_the_worker(stream):
    for record in stream:
        event = decode_interaction(record["user_id"].encode(), sample.encode_record(record))
        assert event.event_id == record["event_id"]


def test_every_event_yields_a_triple_except_lone_negatives(stream):
    for record in stream:
        event = INTERACTION_ADAPTER.validate_python(record)
        conversion = to_triples([event])
        negative = (record["type"] == "interaction.rating" and record["rating"] < 3.5) or (
            record["type"] == "interaction.feedback" and record["signal"] == "dislike"
        )
        if negative:
            assert conversion.unpaired_event_ids == (record["event_id"],)
        else:
            assert conversion.triples, record
            assert all(t.event_id == record["event_id"] for t in conversion.triples)


def test_kinds_and_domains_mix(stream):
    kinds = Counter(r["type"] for r in stream)
    assert set(kinds) == {f"interaction.{k}" for k in sample.KINDS}
    assert {r["domain"] for r in stream} == set(sample.DOMAINS)
    assert {r["domain"] for r in stream if r["type"] == "interaction.impression"} == {"news"}
    assert {r["domain"] for r in stream if r["type"] == "interaction.rating"} == {"movies"}
    assert {r["domain"] for r in stream if r["type"] == "interaction.feedback"} == {"books"}
    queries = {r["query"] for r in stream if r["type"] == "interaction.pairwise"}
    assert None in queries and "Pick a weekend read." in queries


def test_impression_shape(stream):
    impressions = [r for r in stream if r["type"] == "interaction.impression"]
    for record in impressions:
        assert 1 <= len(record["clicked"]) <= 2
        assert 3 <= len(record["skipped"]) <= 6
        ids = [i["id"] for i in record["clicked"] + record["skipped"]]
        assert len(ids) == len(set(ids))
    assert {len(r["clicked"]) for r in impressions} == {1, 2}


def test_ratings_follow_likes_and_dislikes(stream):
    users = {u.user_id: u for u in sample.make_users(30, seed=11)}
    for record in stream:
        if record["type"] != "interaction.rating":
            continue
        user = users[record["user_id"]]
        _, genre = sample.item_category(record["item"]["id"])
        if record["rating"] >= 4:
            assert genre in user.likes["movies"] + user.likes_after_drift("movies")
        else:
            assert record["rating"] <= 2
            assert genre in user.dislikes["movies"]
        assert record["scale_max"] == 5.0
        assert record["item"]["genres"][0] == genre
        assert re.search(r" \(\d{4}\)$", record["item"]["title"])


def test_event_ids_unique_and_per_user(stream):
    ids = [r["event_id"] for r in stream]
    assert len(ids) == len(set(ids))
    for record in stream:
        assert re.fullmatch(r"user-\d{3,}", record["user_id"])
        assert record["event_id"].startswith(f"evt-{record['user_id']}-")


def test_time_ordered_and_interleaved(stream):
    times = [_when(r) for r in stream]
    assert times == sorted(times)
    assert times[0] >= sample.DEFAULT_START
    assert times[-1] <= sample.DEFAULT_START + timedelta(days=29)
    per_user: dict[str, list[int]] = defaultdict(list)
    for record in stream:
        per_user[record["user_id"]].append(_seq(record))
    for seqs in per_user.values():
        assert seqs == list(range(1, len(seqs) + 1))
    # interleaved: the first 30 records are not all from one user
    assert len({r["user_id"] for r in stream[:30]}) > 5


def test_counts_per_user():
    exact = Counter(r["user_id"] for r in sample.generate_events(10, 7, seed=1))
    assert sorted(exact) == [f"user-{i:03d}" for i in range(1, 11)]
    assert set(exact.values()) == {7}
    ranged = Counter(r["user_id"] for r in sample.generate_events(40, (5, 25), seed=1))
    assert all(5 <= n <= 25 for n in ranged.values())
    assert len(set(ranged.values())) > 5
    assert sample.generate_events(0, 10) == []
    assert sample.generate_events(3, 0) == []


def test_start_is_respected():
    start = datetime(2026, 3, 1, 12, 30, tzinfo=timezone(timedelta(hours=2)))
    records = sample.generate_events(4, 10, start=start, span_days=2)
    times = [_when(r) for r in records]
    assert min(times) >= start
    assert max(times) <= start + timedelta(days=2, hours=1)
    with pytest.raises(ValueError):
        sample.generate_events(2, 2, start=datetime(2026, 1, 1))  # noqa: DTZ001


# ----------------------------------------------------------------------------- profiles, drift


def test_profiles_shape():
    for user in sample.make_users(50, seed=7):
        assert 0.4 <= user.drift_at <= 0.7
        assert 0 <= user.activity < 1
        for domain in sample.DOMAINS:
            likes, dislikes = user.likes[domain], user.dislikes[domain]
            assert 2 <= len(likes) <= 3 and 1 <= len(dislikes) <= 2
            assert not set(likes) & set(dislikes)
            dropped, added = user.drift[domain]
            assert dropped in likes
            assert added not in likes and added not in dislikes
            after = user.likes_after_drift(domain)
            assert added in after and dropped not in after and len(after) == len(likes)


def test_signals_follow_the_profile_in_force(long_stream):
    users = {u.user_id: u for u in sample.make_users(25, seed=5)}
    n_by_user = Counter(r["user_id"] for r in long_stream)
    for record in long_stream:
        user = users[record["user_id"]]
        index = _seq(record) - 1
        for domain, category, positive in _signals(record):
            if positive:
                assert category in user.favourites(domain, index, n_by_user[user.user_id])
            else:
                assert category in user.dislikes[domain]


def test_favourites_drift_between_first_and_last_third(long_stream):
    by_user: dict[str, list[dict]] = defaultdict(list)
    for record in long_stream:
        by_user[record["user_id"]].append(record)
    users = {u.user_id: u for u in sample.make_users(25, seed=5)}
    for uid, records in by_user.items():
        third = len(records) // 3
        first = Counter((d, c) for r in records[:third] for d, c, pos in _signals(r) if pos)
        last = Counter((d, c) for r in records[-third:] for d, c, pos in _signals(r) if pos)
        assert set(first) != set(last), uid
        added = {(d, users[uid].drift[d][1]) for d in sample.DOMAINS}
        dropped = {(d, users[uid].drift[d][0]) for d in sample.DOMAINS}
        assert not added & set(first), uid  # the new interest is new
        assert added & set(last), uid  # ... and shows up late
        # the dropped favourite is no longer chosen once the drift is fully in force
        tail = records[int(len(records) * 0.7) + 1:]
        late = {(d, c) for r in tail for d, c, pos in _signals(r) if pos}
        assert not dropped & late, uid


# ----------------------------------------------------------------------------- invalid records


def test_valid_stream_unchanged_by_invalid_rate():
    clean = sample.generate_events(20, (10, 20), seed=4)
    for rate in (0.05, 0.3, 1.0):
        mixed = sample.generate_events(20, (10, 20), seed=4, invalid_rate=rate)
        valid = [r for r in mixed if sample.invalid_kind(r) is None]
        assert valid == clean
        assert len(mixed) - len(valid) == round(rate * len(clean))


def test_invalid_records_are_rejected_by_the_decoder():
    records = sample.generate_events(20, 20, seed=4, invalid_rate=0.25)
    seen = Counter()
    for record in records:
        kind = sample.invalid_kind(record)
        if kind is None:
            continue
        seen[kind] += 1
        user = record.get("user_id") if isinstance(record, dict) else None
        key = user.encode() if isinstance(user, str) else None
        value = sample.encode_record(record)
        assert b"\n" not in value
        with pytest.raises(InvalidEventError) as info:
            decode_interaction(key, value)
        assert info.value.code == sample.INVALID_KINDS[kind], kind
        # non-JSON / non-object records come back raw, the others as dicts
        if kind in ("invalid_json", "invalid_utf8", "not_an_object"):
            assert isinstance(record, bytes)
        else:
            assert isinstance(record, dict)
    assert set(seen) == set(sample.INVALID_KINDS)


def test_invalid_records_also_fail_schema_validation():
    records = sample.generate_events(10, 20, seed=2, invalid_rate=0.5)
    for record in records:
        if isinstance(record, dict) and sample.invalid_kind(record) is not None:
            with pytest.raises(ValueError):
                INTERACTION_ADAPTER.validate_python(record)


def test_invalid_rate_must_not_be_negative():
    with pytest.raises(ValueError):
        sample.generate_events(2, 2, invalid_rate=-0.1)


# ----------------------------------------------------------------------------- zipf activity


def test_zipf_activity_is_skewed():
    users, mean = 400, 12
    counts = Counter(
        r["user_id"] for r in sample.generate_events(users, mean, seed=7, activity="zipf")
    )
    values = sorted(counts.values(), reverse=True)
    assert len(values) == users and min(values) >= 1
    assert sum(values) == users * mean
    top = sum(values[: users // 100])  # top 1% of users
    assert top > 0.2 * sum(values)
    assert values[0] > 20 * statistics.median(values)
    # the most active profiles get the most events
    profiles = sorted(sample.make_users(users, seed=7), key=lambda u: -u.activity)
    assert counts[profiles[0].user_id] == values[0]
    # uniform activity for comparison: everyone the same
    uniform = Counter(r["user_id"] for r in sample.generate_events(50, mean, seed=7))
    assert set(uniform.values()) == {mean}


def test_zipf_stream_is_still_valid_and_ordered():
    records = sample.generate_events(50, (6, 14), seed=3, activity="zipf", zipf_s=1.3)
    assert len(records) == 50 * 10
    assert [_when(r) for r in records] == sorted(_when(r) for r in records)
    for record in records[:200]:
        INTERACTION_ADAPTER.validate_python(record)
    with pytest.raises(ValueError):
        sample.generate_events(5, 5, activity="pareto")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- catalog


def test_catalog():
    items = sample.catalog_items()
    assert 300 <= len(items) <= 600
    ids = [i["id"] for i in items]
    assert len(ids) == len(set(ids))
    for domain in sample.DOMAINS:
        titles = [i["title"] for i in sample.catalog_items(domain)]
        assert len(titles) == len(set(titles))
        assert len(sample.categories(domain)) >= 8
    assert "technology" in sample.categories("news")
    assert {"fantasy", "mystery", "romance", "sci-fi", "cookbooks", "poetry"} <= set(
        sample.categories("books")
    )
    for item in items:
        Item.model_validate(item)
        domain, _ = sample.item_category(item["id"])
        prefix = {"news": "news-", "books": "book-", "movies": "movie-"}[domain]
        assert re.fullmatch(re.escape(prefix) + r"[a-z]+-\d{3}", item["id"])
        if domain == "news":
            assert item["abstract"].endswith(".")
        elif domain == "books":
            assert item["description"].endswith(".")
        else:
            assert item["genres"] and re.search(r"\(\d{4}\)$", item["title"])
    assert sample.item_category("news-tech-001") == ("news", "technology")
    # copies: mutating a returned item does not change the catalog
    items[0]["title"] = "changed"
    assert sample.catalog_items()[0]["title"] != "changed"


# ----------------------------------------------------------------------------- CLI and bundle


def test_cli_writes_jsonl(tmp_path, capsys):
    out = tmp_path / "s.jsonl"
    assert sample.main(["--users", "5", "--events-per-user", "8", "--seed", "2",
                        "--out", str(out)]) == 0
    summary = capsys.readouterr().out
    assert "users=5 events=40 invalid=0" in summary
    lines = out.read_bytes().splitlines()
    assert [json.loads(line) for line in lines] == sample.generate_events(5, 8, seed=2)

    bad = tmp_path / "bad.jsonl"
    sample.main(["--users", "5", "--events-per-user", "8", "--seed", "2", "--invalid-rate",
                 "0.5", "--out", str(bad)])
    assert "invalid=20" in capsys.readouterr().out
    raw = bad.read_bytes().splitlines()
    assert len(raw) == 60
    rejected = 0
    for line in raw:
        try:
            decode_interaction(None, line)
        except InvalidEventError:
            rejected += 1
    assert rejected == 20


def test_bundled_sample_is_current():
    assert BUNDLED.exists(), "run: python -m streamer.devtools.synthetic --out streamer/data/..."
    data = BUNDLED.read_bytes()
    assert len(data) < 1_500_000
    expected = sample.generate_events(40, 24, seed=7)
    assert data == b"".join(sample.encode_record(r) + b"\n" for r in expected), (
        "regenerate with: python -m streamer.devtools.synthetic --users 40 --events-per-user 24 --seed 7 "
        "--out streamer/data/sample_clickstream.jsonl"
    )
    assert all(_when(r) >= datetime(2026, 1, 1, tzinfo=UTC) for r in expected)
