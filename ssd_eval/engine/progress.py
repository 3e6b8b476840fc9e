"""Progress as occasional plain lines on stderr, for logs where a progress bar would be one endless line."""

from __future__ import annotations

import logging
import math
import sys
import time

progress_log = logging.getLogger("ssd_eval.progress")
"""A run's start, scoring and end lines: plain lines on stderr (cli configures it), in logs too."""


class ProgressLines:
    """A tqdm stand-in printing a line now and then: the first after ``FIRST_AFTER_S`` seconds or
    ``FIRST_FRACTION`` of the images (not within ``min_first_s``), then every ``every_s`` seconds, and one at
    the end when any was printed."""

    FIRST_AFTER_S = 10.0
    FIRST_FRACTION = 0.05

    def __init__(self, total: int, desc: str, *, every_s: float = 120.0, clock=time.monotonic, stream=None,
                 min_first_s: float = 2.0):
        self.total, self.desc, self.every_s, self.clock, self.min_first_s = total, desc, every_s, clock, min_first_s
        self.stream = stream if stream is not None else sys.stderr
        self.done = 0
        self.started = self.last_line = clock()
        self.printed = False
        self.printed_done = 0  # images done at the last line

    def _due(self, now: float) -> bool:
        if self.printed:  # the end's line is printed once
            return self.printed_done < self.total and (now - self.last_line >= self.every_s or self.done >= self.total)
        elapsed = now - self.started
        early = elapsed >= min(self.FIRST_AFTER_S, self.every_s) or self.done >= self.FIRST_FRACTION * self.total
        return elapsed >= self.min_first_s and early

    @property
    def n(self) -> int:
        """The images counted so far (as tqdm names it)."""
        return self.done

    def update(self, count: int) -> None:
        """Count ``count`` more finished images; print a line when one is due."""
        self.done += count
        now = self.clock()
        if self._due(now):
            self.last_line, self.printed, self.printed_done = now, True, self.done
            rate = self.done / max(now - self.started, 1e-9)
            left = (self.total - self.done) / rate if rate > 0 else math.inf
            print(f"{self.desc}: {self.done}/{self.total} images ({100 * self.done / max(self.total, 1):.0f} %), "
                  f"{rate:.2f} img/s, about {_duration(left)} left", file=self.stream, flush=True)

    def __enter__(self) -> "ProgressLines":
        return self

    def __exit__(self, *exc) -> None:
        return None


def _duration(seconds: float) -> str:
    if seconds == math.inf:
        return "?"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
