"""Shared base classes for every contract: frozen, closed, explicitly versioned."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Contract(BaseModel):
    """Base of every wire and storage contract.

    Contracts are immutable (``frozen``) and closed (``extra="forbid"``): an unknown field is an
    error rather than silently dropped data.  Each concrete contract declares a ``type``
    discriminator and a ``schema_version``; a breaking change is a new version, never an
    in-place edit.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=False)
