"""Items a user can interact with: an id plus the text fields the model reads."""

from __future__ import annotations

from pydantic import Field

from .base import Contract

MAX_TEXT_CHARS = 20_000
"""Upper bound on any single item text field; longer values are rejected at the edge."""


class Item(Contract):
    """An item as the product logged it.

    Which fields are rendered depends on the event's ``domain`` (news: title + abstract,
    books: title + description, movies: title + genres); any other domain uses ``text`` or the
    title with whatever other fields are present.
    """

    id: str = Field(min_length=1, max_length=256, description="Product-side item identifier.")
    title: str | None = Field(default=None, max_length=MAX_TEXT_CHARS)
    abstract: str | None = Field(default=None, max_length=MAX_TEXT_CHARS)
    description: str | None = Field(default=None, max_length=MAX_TEXT_CHARS)
    genres: tuple[str, ...] = Field(default=(), max_length=64)
    text: str | None = Field(
        default=None,
        max_length=MAX_TEXT_CHARS,
        description="Free text, e.g. a chat response in an A/B choice; used by the generic domain.",
    )
