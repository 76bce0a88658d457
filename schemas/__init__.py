"""prefstream contracts: Kafka payloads, storage records and the dead-letter envelope."""

from .base import Contract
from .cloudevents import CE_TYPES, ce_attributes, ce_headers
from .deadletter import DeadLetter
from .events import (
    INTERACTION_ADAPTER,
    Click,
    Feedback,
    Impression,
    InputRange,
    Interaction,
    InteractionBase,
    JudgedPairs,
    PairwiseChoice,
    QualityScore,
    Rating,
    SummaryChanged,
    SummaryDeleted,
    SummaryUpdateFailed,
    TokenUsage,
    WindowFacts,
)
from .items import CatalogItem, Item
from .records import SummaryRecord, WindowTriple

__all__ = [
    "CE_TYPES",
    "CatalogItem",
    "Click",
    "Contract",
    "DeadLetter",
    "Feedback",
    "INTERACTION_ADAPTER",
    "Impression",
    "InputRange",
    "Interaction",
    "InteractionBase",
    "Item",
    "JudgedPairs",
    "PairwiseChoice",
    "QualityScore",
    "Rating",
    "SummaryChanged",
    "SummaryDeleted",
    "SummaryRecord",
    "SummaryUpdateFailed",
    "TokenUsage",
    "WindowFacts",
    "WindowTriple",
    "ce_attributes",
    "ce_headers",
]
