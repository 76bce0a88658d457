"""Items a user can interact with: an id plus the text fields the model reads.

:class:`CatalogItem` is the value of the compacted catalog topic ``profiles.items.v1`` (key =
the item id, UTF-8; a null value deletes the item): events may then name an item by ``id``
alone, and the worker fills in its text from the catalog when the window closes.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, Field

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

    def is_bare(self) -> bool:
        """Only an id: no text for the model (to be resolved from the catalog)."""
        return not (self.title or self.abstract or self.description or self.genres or self.text)


class CatalogItem(Contract):
    """One item's metadata on the catalog topic (key = ``item.id``).

    The latest record of a key wins (the topic is compacted); ``domain`` says which rendering
    the item's fields were written for (news: title + abstract, movies: title + genres...)."""

    type: Literal["catalog.item"] = "catalog.item"
    schema_version: Literal[1] = 1
    domain: str = Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_-]*$")
    item: Item
    updated_at: AwareDatetime | None = Field(
        default=None, description="When the product last changed the item (informational).")
