"""Progress bars for once-mode runs on a terminal: one line per vectorizer."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TextIO


@dataclass
class Progress:
    """What one vectorizer has done in this run; the runner updates it."""

    name: str
    total: int = 0
    rows: int = 0
    chunks: int = 0
    reused: int = 0  # chunks whose stored vector was reused
    started: float = field(default_factory=time.monotonic)
    finished: bool = False

    def line(self, width: int = 24) -> str:
        total = max(self.total, self.rows)
        share = self.rows / total if total else 1.0
        filled = int(width * share)
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = self.rows / elapsed
        if self.finished:
            eta = "done"
        elif rate > 0:
            eta = f"eta {max(total - self.rows, 0) / rate:4.0f}s"
        else:
            eta = "eta    ?"
        return (
            f"{self.name[:28]:<28} [{'#' * filled}{'.' * (width - filled)}] "
            f"{self.rows}/{total} rows {self.chunks} chunks ({self.reused} reused) "
            f"{rate:7.1f} rows/s {eta}"
        )


class ProgressDisplay:
    """Redraws every vectorizer's line in place until stopped."""

    def __init__(self, out: TextIO, interval: float = 0.5) -> None:
        self._out = out
        self._interval = interval
        self.bars: dict[int, Progress] = {}
        self._drawn = 0

    def draw(self) -> None:
        lines = [bar.line() for _, bar in sorted(self.bars.items())]
        if self._drawn:
            self._out.write(f"\x1b[{self._drawn}F")  # back to the first line drawn last time
        for line in lines:
            self._out.write("\x1b[2K" + line + "\n")
        self._out.flush()
        self._drawn = len(lines)

    async def run(self) -> None:
        try:
            while True:
                self.draw()
                await asyncio.sleep(self._interval)
        finally:
            self.draw()
