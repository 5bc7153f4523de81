"""Rate-limited log lines: one line per kind per interval, with a count of those held back.

A hostile client can make the cloud refuse thousands of frames a second; a
WARNING line for each would fill the disk and bury everything else. The
counters in the metrics count every refusal; the log says that refusals of a
kind happen, with an example and how many there were.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable


class LogThrottle:
    """Logs the first event of each kind at once, then at most one line per ``interval_s``.

    A line after a quiet spell says how many events of its kind were not logged
    since the previous line of that kind.
    """

    def __init__(
        self,
        logger: logging.Logger,
        interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self.clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    def log(self, level: int, kind: str, message: str, *args: object) -> bool:
        """Log ``message % args`` unless a line of ``kind`` was logged within the interval.

        Returns whether a line was written.
        """
        if not self.logger.isEnabledFor(level):
            return False
        now = self.clock()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last < self.interval_s:
                self._held[kind] = self._held.get(kind, 0) + 1
                return False
            self._last[kind] = now
            held = self._held.pop(kind, 0)
        if held:
            message += " (and %d more of kind %s in the last %.0f s, not logged)"
            args = (*args, held, kind, now - (now if last is None else last))
        self.logger.log(level, message, *args)
        return True

    def warning(self, kind: str, message: str, *args: object) -> bool:
        """:meth:`log` at WARNING."""
        return self.log(logging.WARNING, kind, message, *args)


__all__ = ["LogThrottle"]
