"""Health of real servers: the rise/fall state machine and how several checks combine.

Pure logic (no asyncio, no sockets) so it can be property-tested and reused by any scheduler.

Semantics (documented in docs/checks.md):

* A check starts UNKNOWN. From UNKNOWN, the first success makes it UP at once (a newly configured
  server gets traffic as soon as its check first passes) and ``fall`` consecutive failures make it
  DOWN (an adopted server keeps its kernel weight until the checks really decide; one blip does not
  drop it).
* UP -> DOWN after ``fall`` consecutive failures; DOWN -> UP after ``rise`` consecutive successes.
  Any success resets the failure run and any failure resets the success run, so a server that
  alternates never flaps.
* A server with several checks is UP only when all are UP, DOWN as soon as one is DOWN, else UNKNOWN.
* A dynamic weight (script checks, keepalived's misc_dynamic) rides on a success; the smallest one
  of a server's checks wins.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

#: Largest weight a script exit status can give (exit 255 -> 253), as keepalived's misc_dynamic.
MAX_DYNAMIC_WEIGHT = 253


class Health(enum.Enum):
    """What the checks say about a server."""

    UNKNOWN = "unknown"
    UP = "up"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class ServerHealth:
    """Combined verdict for one server, as the desired-table computation consumes it."""

    state: Health
    weight: int | None = None  # dynamic weight from a script check, else None = configured
    reason: str = ""  # e.g. "http status 503 (3/3 failed)"


UNKNOWN_HEALTH = ServerHealth(Health.UNKNOWN)


def dynamic_weight(exit_status: int) -> tuple[bool, int | None]:
    """Map a script's exit status as keepalived's misc_dynamic: 0 -> up with the configured weight,
    1 -> down, 2..255 -> up with weight status-2 (clamped to 0..253). Returns (ok, weight)."""
    if exit_status == 0:
        return True, None
    if exit_status == 1 or exit_status < 0:
        return False, None
    return True, max(0, min(MAX_DYNAMIC_WEIGHT, exit_status - 2))


class CheckState:
    """Rise/fall state machine of one check. ``record`` returns True when the state or the dynamic
    weight changed (a transition worth reporting)."""

    __slots__ = ("rise", "fall", "state", "successes", "failures", "weight", "reason", "last_reason")

    def __init__(self, rise: int = 1, fall: int = 1) -> None:
        if rise < 1 or fall < 1:
            raise ValueError(f"rise and fall must be >= 1, got rise={rise} fall={fall}")
        self.rise = rise
        self.fall = fall
        self.state = Health.UNKNOWN
        self.successes = 0  # current run of consecutive successes
        self.failures = 0  # current run of consecutive failures
        self.weight: int | None = None
        self.reason = ""  # reason given with the last transition
        self.last_reason = ""  # detail of the last result

    def record(self, ok: bool, detail: str = "", weight: int | None = None) -> bool:
        """Feed one probe result; return True if state or dynamic weight changed."""
        self.last_reason = detail
        if ok:
            self.failures = 0
            self.successes += 1
            if self.state is Health.UP:
                if weight != self.weight:
                    self.weight = weight
                    self.reason = f"weight {self._wtext(weight)}"
                    return True
                return False
            if self.state is Health.UNKNOWN or self.successes >= self.rise:
                need = 1 if self.state is Health.UNKNOWN else self.rise
                self.state = Health.UP
                self.weight = weight
                self.reason = (detail or "check passed") + f" ({min(self.successes, need)}/{need} passed)"
                return True
            return False
        self.successes = 0
        self.failures += 1
        if self.state is not Health.DOWN and self.failures >= self.fall:
            self.state = Health.DOWN
            self.weight = None
            self.reason = (detail or "check failed") + f" ({self.fall}/{self.fall} failed)"
            return True
        return False

    @staticmethod
    def _wtext(w: int | None) -> str:
        return "configured" if w is None else str(w)

    def health(self) -> ServerHealth:
        """This check's verdict alone."""
        return ServerHealth(self.state, self.weight if self.state is Health.UP else None, self.reason)


def combine(states: Iterable[ServerHealth]) -> ServerHealth:
    """All checks must pass: DOWN if any is DOWN (first one's reason), UP if all are UP (smallest
    dynamic weight), else UNKNOWN. No checks at all is UP with the configured weight."""
    up_reason = ""
    weight: int | None = None
    unknown = False
    for h in states:
        if h.state is Health.DOWN:
            return ServerHealth(Health.DOWN, None, h.reason)
        if h.state is Health.UNKNOWN:
            unknown = True
            continue
        if not up_reason:
            up_reason = h.reason
        if h.weight is not None and (weight is None or h.weight < weight):
            weight = h.weight
    if unknown:
        return UNKNOWN_HEALTH
    return ServerHealth(Health.UP, weight, up_reason)
