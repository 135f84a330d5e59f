"""The counters of chunk reuse (reuse.py): kept apart so that reporting and the worker's
tracking can count without importing the planner and the config models it needs."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ReuseCounts:
    """What one batch (or a run) embedded and what it reused instead."""

    embedded: int = 0
    same_row: int = 0
    other_row: int = 0
    rows_unchanged: int = 0
    tokens_saved: int = 0

    def add(self, other: ReuseCounts) -> None:
        self.embedded += other.embedded
        self.same_row += other.same_row
        self.other_row += other.other_row
        self.rows_unchanged += other.rows_unchanged
        self.tokens_saved += other.tokens_saved

    def __bool__(self) -> bool:
        return any((self.embedded, self.same_row, self.other_row, self.rows_unchanged))

    def fields(self) -> dict[str, int]:
        """The counts as structured log fields."""
        return {
            "embedded": self.embedded,
            "reused_same_row": self.same_row,
            "reused_other_row": self.other_row,
            "unchanged_rows": self.rows_unchanged,
            "tokens_saved": self.tokens_saved,
        }
