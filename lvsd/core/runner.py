"""When to run the next reconcile: a bounded-frequency schedule with failure backoff.

Pure timing logic (the daemon feeds it the event loop's clock). Requests that arrive in a burst
are coalesced into one run no sooner than ``min_interval`` after the previous run started; with
no request at all a run still happens every ``max_interval`` (the periodic resync that repairs
edits made behind lvsd's back); after a failed run the next one waits a backoff that doubles up
to ``backoff_max`` and resets on success.
"""

from __future__ import annotations

import math


class BoundedFrequency:
    """Schedule of reconcile runs: at most one per ``min_interval``, at least one per ``max_interval``."""

    def __init__(
        self,
        min_interval: float,
        max_interval: float,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
    ) -> None:
        if min_interval < 0 or max_interval <= 0 or backoff_initial <= 0 or backoff_max < backoff_initial:
            raise ValueError("bad intervals")
        self.min_interval = min_interval
        self.max_interval = max_interval
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.pending = False
        self.last_start = -math.inf
        self.last_end = -math.inf
        self.failures = 0

    def request(self) -> None:
        """Ask for a run as soon as the bounds allow (many requests before it = one run)."""
        self.pending = True

    @property
    def backoff(self) -> float:
        """The wait imposed by consecutive failures (0 after a success)."""
        if not self.failures:
            return 0.0
        return min(self.backoff_max, self.backoff_initial * 2.0 ** (self.failures - 1))  # int ** int is Any to mypy

    def next_run(self) -> float:
        """Absolute time of the next run (may be in the past: run now)."""
        earliest = self.last_start + self.min_interval
        if self.failures:
            earliest = max(earliest, self.last_end + self.backoff)
            return earliest  # a failed run is always retried
        if self.pending:
            return earliest
        return max(earliest, self.last_start + self.max_interval)

    def delay(self, now: float) -> float:
        """Seconds to wait from ``now`` until the next run (0 = run now)."""
        return max(0.0, self.next_run() - now)

    def started(self, now: float) -> None:
        """A run begins: every request so far is covered by it."""
        self.pending = False
        self.last_start = now

    def finished(self, now: float, ok: bool) -> None:
        """A run ended; a failure schedules a retry after the backoff."""
        self.last_end = now
        self.failures = 0 if ok else self.failures + 1
