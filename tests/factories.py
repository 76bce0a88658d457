"""Small builders of valid events for tests."""

from __future__ import annotations

import importlib.util
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType

from schemas import Click, Feedback, Impression, Item, PairwiseChoice, Rating

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def item(i: str, **kw) -> Item:
    return Item(id=i, title=kw.pop("title", f"Item {i}"), **kw)


def pairwise(event_id: str, user_id: str = "u1", *, minutes: int = 0, **kw) -> PairwiseChoice:
    return PairwiseChoice(
        event_id=event_id,
        user_id=user_id,
        occurred_at=T0 + timedelta(minutes=minutes),
        domain=kw.pop("domain", "news"),
        chosen=kw.pop("chosen", item(f"c-{event_id}", abstract="chosen")),
        rejected=kw.pop("rejected", item(f"r-{event_id}", abstract="rejected")),
        **kw,
    )


def rating(event_id: str, value: float, user_id: str = "u1", **kw) -> Rating:
    return Rating(event_id=event_id, user_id=user_id, occurred_at=T0, domain="movies",
                  item=kw.pop("item", item(f"m-{event_id}", genres=("Drama",))), rating=value, **kw)


def feedback(event_id: str, signal: str, user_id: str = "u1") -> Feedback:
    return Feedback(event_id=event_id, user_id=user_id, occurred_at=T0, domain="books",
                    item=item(f"b-{event_id}", description="d"), signal=signal)


def click(event_id: str, user_id: str = "u1") -> Click:
    return Click(event_id=event_id, user_id=user_id, occurred_at=T0, domain="news",
                 item=item(f"n-{event_id}", abstract="a"))


def impression(event_id: str, clicked: int, skipped: int, user_id: str = "u1") -> Impression:
    return Impression(
        event_id=event_id, user_id=user_id, occurred_at=T0, domain="news",
        clicked=tuple(item(f"{event_id}-c{i}", abstract="x") for i in range(clicked)),
        skipped=tuple(item(f"{event_id}-s{i}", abstract="y") for i in range(skipped)),
    )


def example_subscriber() -> ModuleType:
    """``examples/subscriber.py`` loaded as a module (it is a script, not a package)."""
    path = Path(__file__).resolve().parents[1] / "examples" / "subscriber.py"
    spec = importlib.util.spec_from_file_location("example_subscriber", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module
