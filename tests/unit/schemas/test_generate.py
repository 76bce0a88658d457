import pytest
from pydantic import ValidationError

import schemas
from schemas.generate import main as generate_main
from tests.factories import pairwise

pytestmark = pytest.mark.unit


def test_committed_json_schemas_match_the_models():
    assert generate_main(["--check"]) == 0, "run `python -m schemas.generate`"


def test_all_is_sorted_and_complete():
    assert schemas.__all__ == sorted(schemas.__all__)
    for name in schemas.__all__:
        assert hasattr(schemas, name)


def test_contracts_are_frozen_and_closed():
    e = pairwise("e1")
    with pytest.raises(ValidationError):
        e.user_id = "x"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        schemas.PairwiseChoice.model_validate({**e.model_dump(), "extra": 1})


def test_naive_timestamps_are_refused():
    with pytest.raises(ValidationError):
        schemas.PairwiseChoice.model_validate(
            {**e_json(), "occurred_at": "2026-01-01T00:00:00"})


def e_json():
    return pairwise("e1").model_dump(mode="json")
