"""Kafka payloads.

Input topic ``profiles.interactions.v1`` carries one of the ``Interaction*`` kinds (keyed by
``user_id``); output topic ``profiles.summaries.v1`` carries :class:`SummaryChanged`.
Every payload is a JSON object with a ``type`` discriminator and a ``schema_version``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, Field, TypeAdapter

from .base import Contract
from .items import MAX_TEXT_CHARS, Item

Domain = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        pattern=r"^[a-z][a-z0-9_-]*$",
        description="Product domain: `news`, `books`, `movies` have trained renderings; "
        "anything else renders generically.",
    ),
]
UserId = Annotated[str, Field(min_length=1, max_length=256, pattern=r"\S")]
EventId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"\S")]
Query = Annotated[str | None, Field(default=None, max_length=MAX_TEXT_CHARS)]


class InteractionBase(Contract):
    """Fields common to every interaction kind."""

    schema_version: Literal[1] = 1
    event_id: EventId = Field(description="Globally unique id; duplicates are applied once.")
    user_id: UserId
    occurred_at: AwareDatetime = Field(description="When the user acted (timezone-aware).")
    domain: Domain = "generic"


class PairwiseChoice(InteractionBase):
    """The user preferred ``chosen`` over ``rejected`` (A/B responses, side-by-side picks)."""

    type: Literal["interaction.pairwise"] = "interaction.pairwise"
    query: Query = None
    chosen: Item
    rejected: Item | None = Field(default=None, description="None renders `No negative sample.`")


class Impression(InteractionBase):
    """A feed impression: items shown together, some clicked, the rest skipped (news style)."""

    type: Literal["interaction.impression"] = "interaction.impression"
    query: Query = None
    clicked: tuple[Item, ...] = Field(min_length=1, max_length=100)
    skipped: tuple[Item, ...] = Field(default=(), max_length=500)


class Rating(InteractionBase):
    """An explicit rating; a threshold splits positives from negatives."""

    type: Literal["interaction.rating"] = "interaction.rating"
    query: Query = None
    item: Item
    rating: float = Field(ge=0)
    scale_max: float = Field(default=5.0, gt=0)


class Feedback(InteractionBase):
    """A like or dislike of one item."""

    type: Literal["interaction.feedback"] = "interaction.feedback"
    query: Query = None
    item: Item
    signal: Literal["like", "dislike"]


class Click(InteractionBase):
    """A positive-only signal (click, purchase, long dwell): renders `No negative sample.`."""

    type: Literal["interaction.click"] = "interaction.click"
    query: Query = None
    item: Item


Interaction = Annotated[
    PairwiseChoice | Impression | Rating | Feedback | Click, Field(discriminator="type")
]
INTERACTION_ADAPTER: TypeAdapter[Interaction] = TypeAdapter(Interaction)


class TokenUsage(Contract):
    """Token accounting of one model call (zero for the baseline engine)."""

    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)


class JudgedPairs(Contract):
    """How well one summary predicted a window's pairwise choices (paper §6 judge protocol)."""

    pairs: int = Field(ge=1, description="Pairwise choices judged.")
    correct: int = Field(ge=0, description="Pairs where the judge picked the user's choice.")
    accuracy: float = Field(ge=0, le=1)
    mean_p_correct: float = Field(
        ge=0, le=1, description="Mean probability the judge gave the user's actual choice.")


class QualityScore(Contract):
    """The previous summary scored on the next window: the judge predicts each of the window's
    pairwise choices from the summary.  Only versions that had a previous summary and a window
    with pairs carry one; a first version never has a score."""

    judge: str = Field(description="Judge model (or the labelled CPU baseline judge).")
    scored_version: int = Field(ge=1, description="The version whose summary was judged.")
    summary_age_s: float = Field(ge=0, description="Age of that summary when it was judged.")
    summary: JudgedPairs = Field(description="With the summary in the judge prompt.")
    no_summary: JudgedPairs | None = Field(
        default=None, description="The same pairs with an empty summary (on a sample): the lift "
                                  "is summary.accuracy - no_summary.accuracy.")
    judge_calls: int = Field(ge=0, description="Judge calls made (accounted apart from updates).")
    judge_prompt_tokens: int = Field(ge=0)
    judge_completion_tokens: int = Field(ge=0)


class InputRange(Contract):
    """Where a version's events came from: one input partition's offset range."""

    topic: str
    partition: int = Field(ge=0)
    first_offset: int = Field(ge=0)
    last_offset: int = Field(ge=0)


class WindowFacts(Contract):
    """What a version consumed, for subscribers that need it without a read."""

    events: int = Field(ge=0, description="Events this version consumed (its `event_ids`).")
    first_event_at: AwareDatetime | None = Field(
        default=None, description="Earliest `occurred_at` among them.")
    last_event_at: AwareDatetime | None = Field(
        default=None, description="Latest `occurred_at` among them.")
    inputs: tuple[InputRange, ...] = Field(
        default=(), description="Input topic, partition and offset range of those events (empty "
                                "for versions not made from Kafka input: replay, backfill).")
    unresolved_item_ids: tuple[str, ...] = Field(
        default=(), description="Items named by id only that the catalog did not know within "
                                "the grace period: their events were applied without them.")


class SummaryChanged(Contract):
    """Published to ``profiles.summaries.v1`` (keyed by user_id) for every stored version."""

    type: Literal["summary.changed"] = "summary.changed"
    schema_version: Literal[1] = 1
    event_id: EventId
    user_id: UserId
    version: int = Field(ge=1)
    previous_version: int | None = Field(ge=1, description="None for a user's first summary.")
    summary: str
    model: str = Field(description="Model id that wrote the summary (or the baseline engine).")
    window_id: str
    event_ids: tuple[str, ...] = Field(description="Events this version consumed, in order.")
    dropped_event_ids: tuple[str, ...] = Field(
        default=(), description="Events of the window left out of the prompt (token budget)."
    )
    usage: TokenUsage
    latency_ms: float = Field(ge=0, description="Wall time of the model call(s).")
    occurred_at: AwareDatetime = Field(description="When the version was stored.")
    quality: QualityScore | None = Field(
        default=None, description="The previous summary scored on this window (optional: "
                                  "first versions, windows without pairs and unsampled ones "
                                  "carry none).")
    previous_summary: str | None = Field(
        default=None, description="The summary this version replaces (None for a first version "
                                  "and when it could not be read for a republished copy).")
    window: WindowFacts | None = Field(
        default=None, description="What this version consumed (None for versions stored "
                                  "before window facts were recorded).")


class SummaryDeleted(Contract):
    """Published to ``profiles.summaries.v1`` when a user was deleted (``streamer forget``,
    ``DELETE /v1/users/{id}``), followed by a tombstone (null value) for the same key.

    A subscriber removes the user and ignores any change event of that user whose
    ``occurred_at`` is at or before this ``occurred_at`` (an update that was in flight)."""

    type: Literal["summary.deleted"] = "summary.deleted"
    schema_version: Literal[1] = 1
    event_id: EventId
    user_id: UserId
    deleted_versions: int = Field(ge=0, description="Stored versions removed.")
    occurred_at: AwareDatetime = Field(description="When the user was deleted.")


class SummaryUpdateFailed(Contract):
    """Published to ``profiles.update-failures.v1`` when a window's update gave no usable summary.

    The user's previous summary is kept and the window's events stay pending for the next
    attempt, so this is a notice, not a loss.
    """

    type: Literal["summary.update_failed"] = "summary.update_failed"
    schema_version: Literal[1] = 1
    event_id: EventId
    user_id: UserId
    window_id: str
    event_ids: tuple[str, ...]
    kept_version: int | None = Field(ge=1, description="The version that stays current.")
    reasons: tuple[str, ...] = Field(description="Why each attempt was rejected, e.g. `no_think_close`.")
    attempts: int = Field(ge=1)
    model: str
    occurred_at: AwareDatetime
