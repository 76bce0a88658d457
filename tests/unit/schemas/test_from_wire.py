"""Consumers parse with ``Contract.from_wire``: fields newer than their code are ignored (at any
depth), every other rule still holds; producers' strict parsing is unchanged."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from schemas import JudgedPairs, QualityScore, SummaryChanged, TokenUsage

pytestmark = pytest.mark.unit


def payload() -> dict:
    event = SummaryChanged(
        event_id="e", user_id="u", version=2, previous_version=1, summary="s", model="m",
        window_id="w", event_ids=("a",), usage=TokenUsage(prompt_tokens=1, completion_tokens=1),
        latency_ms=1.0, occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
        quality=QualityScore(judge="j", scored_version=1, summary_age_s=3.0, judge_calls=1,
                             judge_prompt_tokens=10, judge_completion_tokens=1,
                             summary=JudgedPairs(pairs=1, correct=1, accuracy=1.0,
                                                 mean_p_correct=0.9)))
    return json.loads(event.model_dump_json())


def test_new_fields_at_any_depth_are_ignored():
    data = payload()
    data["a_new_field"] = [1, 2]
    data["quality"]["a_new_sub_field"] = "x"
    data["quality"]["summary"]["deeper"] = {"y": 1}
    data["usage"]["cached_tokens"] = 5
    event = SummaryChanged.from_wire(json.dumps(data).encode())
    assert event.version == 2 and event.quality.summary.mean_p_correct == 0.9
    with pytest.raises(ValidationError):  # producers (and the service's own reads) stay strict
        SummaryChanged.model_validate(data)


def test_other_rules_still_apply():
    data = payload()
    data["a_new_field"] = 1
    data["version"] = 0  # below the minimum
    with pytest.raises(ValidationError, match="version"):
        SummaryChanged.from_wire(data)
    data = payload()
    del data["summary"]
    with pytest.raises(ValidationError, match="summary"):
        SummaryChanged.from_wire(json.dumps(data))


def test_the_callers_dict_is_not_modified():
    data = payload()
    data["extra"] = 1
    SummaryChanged.from_wire(data)
    assert data["extra"] == 1
