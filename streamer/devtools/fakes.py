"""Test doubles for code that uses the ports (unit tests and examples only: the runtime never
imports this module).  Real in-memory adapters live in :mod:`streamer.adapters.memory`."""

from __future__ import annotations

from collections.abc import Callable

from ..ports import ModelReply, UpdateRequest


class ScriptedSummaryModel:
    """Answers from a script: a list of reply texts (used in order) or a function of the request."""

    def __init__(self, script: list[str] | Callable[[UpdateRequest], str], name: str = "scripted"):
        self.name = name
        self.script = script
        self.requests: list[UpdateRequest] = []

    async def generate(self, request: UpdateRequest) -> ModelReply:
        self.requests.append(request)
        if callable(self.script):
            text = self.script(request)
        else:
            text = self.script.pop(0)
        return ModelReply(text=text, model=self.name, prompt_tokens=10, completion_tokens=5,
                          finish_reason="stop", latency_ms=1.0)

    async def aclose(self) -> None:
        return None
