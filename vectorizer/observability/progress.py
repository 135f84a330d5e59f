"""Progress bars for once-mode runs on a terminal: one line per vectorizer.

The bars stay at the bottom of the terminal while they run. Log lines written to the same
terminal meanwhile go above them: the display takes over the log handlers writing there, and
for each line erases its bars, writes the line and draws them again. Without that, a line
written under the bars would be taken for them and drawn over at the next redraw.
"""

from __future__ import annotations

import asyncio
import logging
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
        # nothing counted yet is an empty bar until the run says it is done
        share = self.rows / total if total else float(self.finished)
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

    def write_above(self, text: str) -> None:
        """Writes `text` (whole lines) where the bars are, then draws the bars below it."""
        if self._drawn:
            self._out.write(f"\x1b[{self._drawn}F\x1b[J")  # erase the bars
            self._drawn = 0
        self._out.write(text)
        self.draw()

    async def run(self) -> None:
        handlers = self._take_over_log_handlers()
        try:
            while True:
                self.draw()
                await asyncio.sleep(self._interval)
        finally:
            self.draw()
            for handler, stream in handlers:
                handler.setStream(stream)

    def _take_over_log_handlers(self) -> list[tuple[logging.StreamHandler, object]]:
        """Routes the root logger's handlers that write to our terminal through `write_above`."""
        taken = []
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is self._out:
                taken.append((handler, handler.setStream(_LinesAbove(self))))
        return taken


class _LinesAbove:
    """The stream a log handler writes to while bars are shown (StreamHandler writes each
    record, terminator included, in one call)."""

    def __init__(self, display: ProgressDisplay) -> None:
        self._display = display

    def write(self, text: str) -> None:
        self._display.write_above(text)

    def flush(self) -> None:
        return  # write_above flushes after drawing
