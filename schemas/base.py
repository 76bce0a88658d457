"""Shared base classes for every contract: frozen, closed, explicitly versioned."""

from __future__ import annotations

import json
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, ValidationError


class Contract(BaseModel):
    """Base of every wire and storage contract.

    Contracts are immutable (``frozen``) and closed (``extra="forbid"``): an unknown field is an
    error rather than silently dropped data, which is what a producer of the contract wants.
    Each concrete contract declares a ``type`` discriminator and a ``schema_version``; a breaking
    change is a new version, never an in-place edit.

    A *consumer* of a topic reads with :meth:`from_wire`, which ignores fields it does not know:
    new optional fields may be added to a version at any time.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=False)

    @classmethod
    def from_wire(cls, data: bytes | str | dict[str, Any]) -> Self:
        """Parse a payload as a consumer: fields unknown to this version (at any depth) are
        dropped; every other rule (types, required fields, limits) still applies."""
        raw = json.loads(data) if isinstance(data, bytes | str) else json.loads(json.dumps(data))
        while True:
            try:
                return cls.model_validate(raw)
            except ValidationError as exc:
                errors = exc.errors()
                extras = [e["loc"] for e in errors if e["type"] == "extra_forbidden"]
                if not extras or len(extras) != len(errors):
                    raise
                for loc in extras:
                    _drop(raw, loc)


def _drop(raw: Any, loc: tuple[Any, ...]) -> None:
    for part in loc[:-1]:
        raw = raw[part]
    del raw[loc[-1]]
