"""Fakes shipped with the package, for unit tests of code that uses the ports."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

from schemas import SummaryChanged, SummaryRecord, SummaryUpdateFailed

from .errors import VersionConflictError
from .ports import ModelReply, UpdateRequest


class InMemoryProfileStore:
    """Versioned summaries in a dict; same conflict rules as the real stores."""

    def __init__(self) -> None:
        self.versions: dict[str, list[SummaryRecord]] = defaultdict(list)

    async def get_current(self, user_id: str) -> SummaryRecord | None:
        history = self.versions.get(user_id)
        return history[-1] if history else None

    async def history(self, user_id: str) -> list[SummaryRecord]:
        return list(self.versions.get(user_id, []))

    async def append(self, record: SummaryRecord) -> None:
        current = await self.get_current(record.user_id)
        expected = current.version if current else None
        if expected != record.previous_version or record.version != (expected or 0) + 1:
            raise VersionConflictError(f"expected previous {expected}")
        self.versions[record.user_id].append(record)

    async def aclose(self) -> None:
        return None


class ListPublisher:
    """Collects published change events."""

    def __init__(self) -> None:
        self.events: list[SummaryChanged] = []
        self.failures: list[SummaryUpdateFailed] = []

    async def publish(self, event: SummaryChanged) -> None:
        self.events.append(event)

    async def publish_failure(self, event: SummaryUpdateFailed) -> None:
        self.failures.append(event)


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
