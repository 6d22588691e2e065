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

#: Verdicts are immutable and mostly alike (50,000 servers refusing give one text): one object per
#: distinct verdict, so a probe holds a reference, not ~150 bytes of its own (issue 16). Bounded:
#: cleared when full (texts that vary per server only cost what they did before).
_VERDICTS: dict[tuple[Health, int | None, str], ServerHealth] = {}
VERDICTS_MAX = 4096


def shared_health(state: Health, weight: int | None, reason: str) -> ServerHealth:
    """The shared ServerHealth of (state, weight, reason)."""
    key = (state, weight, reason)
    h = _VERDICTS.get(key)
    if h is None:
        if len(_VERDICTS) >= VERDICTS_MAX:
            _VERDICTS.clear()
        h = _VERDICTS[key] = ServerHealth(state, weight, reason)
    return h


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
    weight changed (a transition worth reporting).

    The verdict is kept as the ServerHealth that ``health()`` returns, built once per transition:
    the servers a probe feeds share it instead of holding a copy each (issue 16: bytes per server
    at 50,000, docs/performance.md "Where the bytes go")."""

    __slots__ = ("rise", "fall", "successes", "failures", "verdict")

    def __init__(self, rise: int = 1, fall: int = 1) -> None:
        if rise < 1 or fall < 1:
            raise ValueError(f"rise and fall must be >= 1, got rise={rise} fall={fall}")
        self.rise = rise
        self.fall = fall
        self.successes = 0  # current run of consecutive successes
        self.failures = 0  # current run of consecutive failures
        self.verdict = UNKNOWN_HEALTH  # state, dynamic weight, reason given with the last transition

    @property
    def state(self) -> Health:
        return self.verdict.state

    @property
    def weight(self) -> int | None:
        return self.verdict.weight

    @property
    def reason(self) -> str:
        return self.verdict.reason

    def record(self, ok: bool, detail: str = "", weight: int | None = None) -> bool:
        """Feed one probe result; return True if state or dynamic weight changed."""
        state = self.verdict.state
        if ok:
            self.failures = 0
            self.successes += 1
            if state is Health.UP:
                if weight != self.verdict.weight:
                    self.verdict = shared_health(Health.UP, weight, f"weight {self._wtext(weight)}")
                    return True
                return False
            if state is Health.UNKNOWN or self.successes >= self.rise:
                need = 1 if state is Health.UNKNOWN else self.rise
                reason = (detail or "check passed") + f" ({min(self.successes, need)}/{need} passed)"
                self.verdict = shared_health(Health.UP, weight, reason)
                return True
            return False
        self.successes = 0
        self.failures += 1
        if state is not Health.DOWN and self.failures >= self.fall:
            reason = (detail or "check failed") + f" ({self.fall}/{self.fall} failed)"
            self.verdict = shared_health(Health.DOWN, None, reason)
            return True
        return False

    @staticmethod
    def _wtext(w: int | None) -> str:
        return "configured" if w is None else str(w)

    def health(self) -> ServerHealth:
        """This check's verdict alone."""
        return self.verdict


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
