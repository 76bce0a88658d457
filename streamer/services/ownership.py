"""Which input partitions this worker owns: read by intake and by the scheduler, changed only
on a rebalance (the worker's partition callbacks)."""

from __future__ import annotations

from collections.abc import Iterable


class Ownership:
    """The owned partitions; ``None`` means every partition (replay and backfill)."""

    def __init__(self, partitions: Iterable[int] | None = None) -> None:
        self.partitions: set[int] | None = set(partitions) if partitions is not None else None

    def owns(self, partition: int) -> bool:
        return self.partitions is None or partition in self.partitions

    def assign(self, partitions: Iterable[int]) -> set[int]:
        """Add partitions; returns the ones that are new."""
        new = set(partitions) - (self.partitions or set())
        self.partitions = (self.partitions or set()) | new
        return new

    def revoke(self, partitions: Iterable[int]) -> set[int]:
        """Remove partitions; returns them."""
        lost = set(partitions)
        if self.partitions is not None:
            self.partitions -= lost
        return lost

    def sorted(self) -> list[int]:
        return sorted(self.partitions or ())
