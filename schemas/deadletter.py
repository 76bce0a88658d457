"""Dead-letter envelope: why a record could not be processed, carried in Kafka headers.

The dead-letter record's value is the original bytes, untouched, and its key the original key;
the envelope travels as ``x-dlq-*`` headers next to the original headers, so the record can be
inspected and replayed as-is.  The one exception is a record too large for the dead-letter
topic: its value is cut to fit, and the envelope says so (``truncated``, ``original_size``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from pydantic import AwareDatetime, Field

from .base import Contract

HEADER_PREFIX = "x-dlq-"


class DeadLetter(Contract):
    """The reason a record was dead-lettered and where it came from."""

    type: Literal["dead_letter"] = "dead_letter"
    schema_version: Literal[1] = 1
    error_type: str = Field(description="Stable machine-readable code, e.g. `invalid_json`.")
    error_message: str = Field(description="Human-readable detail (bounded length).")
    source_topic: str
    source_partition: int = Field(ge=0)
    source_offset: int = Field(ge=0)
    failed_at: AwareDatetime
    consumer_group: str | None = None
    original_size: int | None = Field(
        default=None, ge=0, description="Size in bytes of the original record's value."
    )
    truncated: bool = Field(
        default=False,
        description="The value was cut to fit the dead-letter topic (a prefix of "
        "`original_size` bytes was kept); if even that was not enough, the original headers "
        "were dropped and the key cut too.",
    )

    def to_headers(self) -> list[tuple[str, bytes]]:
        """Render as Kafka headers (``x-dlq-<field>``), values UTF-8 encoded.

        Booleans are ``true``/``false``; ``truncated`` is only sent when true.
        """
        data = self.model_dump(mode="json", exclude_none=True)
        if not self.truncated:
            del data["truncated"]
        return [
            (HEADER_PREFIX + k.replace("_", "-"), _render(v).encode("utf-8", "backslashreplace"))
            for k, v in data.items()
        ]

    @classmethod
    def from_headers(cls, headers: Iterable[tuple[str, bytes]]) -> DeadLetter:
        """Parse the ``x-dlq-*`` headers of a dead-letter record back into an envelope."""
        fields: dict[str, object] = {
            k[len(HEADER_PREFIX) :].replace("-", "_"): v.decode()
            for k, v in headers
            if k.startswith(HEADER_PREFIX)
        }
        if "schema_version" in fields:
            fields["schema_version"] = int(fields["schema_version"])
        return cls.model_validate(fields)


def _render(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
