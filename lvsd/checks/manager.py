"""CheckManager: runs every configured check on one scheduler and reports server transitions.

Design (measured in docs/performance.md, "checks"):
* One heap of (when, seq, probe) drives every probe with a single loop timer, re-armed
  only when an earlier entry arrives; entries due within the slack (1/50 of the shortest interval,
  1-10 ms) run in one batch of at most 32. A probe has one
  live entry: its next start while idle, its deadline while in flight (a stale entry is skipped:
  a probe's generation is the seq of its live entry). No task, no coroutine and no TimerHandle per probe.
* Identical checks (same CheckConfig, same effective target) are one Probe feeding every server
  that uses them; a probe's rise/fall state lives in the probe (lvsd.core.health.CheckState).
* A server's health is the combination of its probes (all must pass); ``on_change`` fires when its
  state or dynamic weight changes, and each transition is logged with its reason.
* Cold start and reload: new probes run at once, spread over at most ``START_SPREAD`` (1 s) at
  ``START_RATE`` a second, with at most ``Scheduler.cap`` probes in flight (derived from the
  descriptor limit; the rest wait in a queue worked off as probes finish). A probe's second run is
  placed at a random point of its interval, so the steady state is spread, not synchronised by
  the start; a server still gets no traffic before its first check passes.
* A server's first UP (out of UNKNOWN) is handed to the daemon in batches every ``FIRST_BATCH``
  (thousands of servers coming UP at start are a few reconciles, not thousands); first verdicts
  are summarised in the log (``StartLog``). Any DOWN, and any later transition, is handed over
  and logged at once.
"""

from __future__ import annotations

import asyncio
import gc
import heapq
import logging
import random
import sys
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from ..config.checks import CheckConfig
from ..config.model import ServerId
from ..core.health import UNKNOWN_HEALTH, CheckState, Health, ServerHealth, combine
from .base import Checker, Done, poller_for

log = logging.getLogger("lvsd.checks")

#: Entries due within ``slack`` seconds of now run in the same batch: 1/50 of the shortest
#: interval, within [1 ms, 10 ms]. Fewer event-loop wake-ups is most of the cost at low rates.
SLACK_MIN, SLACK_MAX = 0.001, 0.01
SLACK = SLACK_MIN
#: At most this many entries per batch: a backlog (overload, a stalled loop) is worked off in
#: slices so I/O callbacks and the daemon's reconcile interleave with it.
BATCH = 32
#: First runs of the probes a start or reload adds are spread over at most this long, at most
#: START_RATE a second (so a handful of new probes run at once): 10,000 probes at 10,000/s take
#: 1 s, which one loop sustains (docs/performance.md, "checks").
START_SPREAD = 1.0
START_RATE = 10_000.0
#: Descriptors left to the rest of the daemon (API, netlink, logs, hooks) when the probes'
#: in-flight cap is derived from the open-files limit.
FD_RESERVE = 256
#: A server's first UP waits at most this long to join a batch for the daemon: at start,
#: 10,000 servers coming UP in about a second are some 20 reconciles instead of thousands.
FIRST_BATCH = 0.05
#: At start and reload, this many first verdicts are logged one line each; the rest at debug,
#: with a summary when every new server has a verdict (and every PROGRESS_EVERY seconds until).
LOG_FIRST = 20
PROGRESS_EVERY = 5.0
#: After this many progress lines (a server whose checks cannot decide: the director cannot
#: probe it), the summary stops and later first verdicts are logged one line each.
PROGRESS_MAX = 12


class BrokenChecker(Checker):
    """Stands in for a checker that could not be built: every probe fails with the reason."""

    def __init__(self, cfg: CheckConfig, addr: str, port: int, loop: asyncio.AbstractEventLoop, done: Done,
                 reason: str) -> None:
        super().__init__(cfg, addr, port, loop, done)
        self.reason = reason

    def start(self) -> None:
        self.done(False, self.reason, None)

    def cancel(self) -> str:
        return self.reason


class Probe:
    """One distinct check against one target, shared by every server that uses it."""

    # Bytes per probe count at 50,000 (issue 16, docs/performance.md "Where the bytes go"): the
    # servers it feeds are one reference plus a tuple of the others (most probes feed one server:
    # a list was ~190 bytes), the label is built when logged, and the checker is handed the probe
    # itself as its ``done`` callable (``__call__``), not a bound method (64 bytes each).
    __slots__ = ("key", "cfg", "sched", "checker", "state", "server", "more", "gen", "inflight", "started",
                 "results")

    def __init__(self, key: Any, cfg: CheckConfig, addr: str, port: int, sched: Scheduler) -> None:
        self.key = key
        self.cfg = cfg
        self.sched = sched
        self.state = CheckState(cfg.rise, cfg.fall)
        self.server: _Server | None = None  # the first server it feeds
        self.more: tuple[_Server, ...] = ()  # the others
        self.gen = 0
        self.inflight = False
        self.started = 0.0
        self.results = 0
        try:
            self.checker = cfg.checker(addr, port, sched.loop, self)
        except Exception as e:  # e.g. a CA file gone since the config was loaded: fail, never crash
            log.error("%s check of %s:%s cannot run: %s", cfg.type, addr, port, e)
            self.checker = BrokenChecker(cfg, addr, port, sched.loop, self, f"{cfg.type} check cannot run: {e}")

    @property
    def label(self) -> str:
        """``tcp 10.0.0.1:80``: the check type and its target, for the log."""
        return f"{self.cfg.type} {self.checker.addr}:{self.checker.port}"

    @property
    def servers(self) -> tuple[_Server, ...]:
        """Every server this probe's verdict feeds."""
        s = self.server
        return self.more if s is None else (s, *self.more)

    def launch(self, now: float) -> None:
        """Start a probe now; its deadline replaces the start entry."""
        self.inflight = True
        self.sched.running_probes += 1
        self.started = now
        self.gen += 1
        self.sched.push(now + self.cfg.timeout, self)
        try:
            self.checker.start()
        except Exception as e:  # a checker bug must not stop the scheduler
            log.exception("%s: checker crashed", self.label)
            if self.inflight:
                self.checker.cancel()
                self.done(False, f"{self.cfg.type} check error: {e}", None)

    def timeout(self) -> None:
        """The deadline passed with the probe in flight."""
        reason = self.checker.cancel()
        self.done(False, reason, None)

    def done(self, ok: bool | None, detail: str, weight: int | None) -> None:
        """The checker's verdict: feed the state machine, schedule the next run. ok None: the
        director could not probe (no descriptors, memory, processes): retry, decide nothing."""
        if not self.inflight:
            return
        self.inflight = False
        self.gen += 1
        sched = self.sched
        sched.running_probes -= 1
        if sched.waiting:
            sched.drain_soon()
        cfg = self.cfg
        now = sched.loop.time()
        if ok is None:
            sched.local_failure(self, detail)
            nxt = now + min(cfg.retry_delay, 1.0)
            sched.push(nxt, self)
            return
        self.results += 1
        if self.results == 1 and ok:
            # the start ran every probe within a second: spread the steady state over the interval
            nxt = now + random.uniform(0, cfg.interval)
        else:
            nxt = self.started + (cfg.interval if ok else cfg.retry_delay)
        sched.push(nxt if nxt > now else now, self)
        if self.state.record(ok, detail, weight):
            sched.transition(self)

    __call__ = done  # the checker's ``done`` callable is the probe itself

    def stop(self) -> None:
        """Forget this probe: abort anything in flight, invalidate its heap entry."""
        self.gen += 1
        if self.inflight:
            self.inflight = False
            self.sched.running_probes -= 1
            if self.sched.waiting:
                self.sched.drain_soon()
            self.checker.cancel()
        self.checker.close()
        # the checker holds the probe as its ``done``: break the cycle so both go by refcount,
        # without waiting for a full collection (a reload that drops probes needs none)
        self.checker.done = _stopped


def _stopped(ok: bool | None, detail: str, weight: int | None) -> None:
    """A stopped probe's checker reports nowhere."""


class Scheduler:
    """The single timer heap behind every probe."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_transition: Callable[[Probe], None],
                 cap: int | None = None) -> None:
        self.loop = loop
        self.transition = on_transition
        self.heap: list[tuple[float, int, Probe]] = []
        self.seq = 0
        self.timer: asyncio.TimerHandle | None = None
        self.timer_when = float("inf")
        self.running = True
        self.slack = SLACK
        self.poller = poller_for(loop)
        self.local_failures = 0
        self.local_logged = float("-inf")
        #: probes in flight, and at most how many (each holds a socket or a process)
        self.running_probes = 0
        self.cap = cap if cap is not None else inflight_cap()
        #: (probe, its generation) due but held back by the cap, oldest first
        self.waiting: deque[tuple[Probe, int]] = deque()
        self.drain_armed = False

    def push(self, when: float, probe: Probe) -> None:
        """Queue the probe's next event (start or deadline) at ``when``."""
        # the entry's seq is the probe's generation: no separate int per entry (issue 16: ~40
        # bytes an entry, ~75,000 entries at 50,000 probes)
        self.seq = seq = self.seq + 1
        probe.gen = seq
        heapq.heappush(self.heap, (when, seq, probe))
        if when < self.timer_when - self.slack and self.running:
            if self.timer is not None:
                self.timer.cancel()
            self.timer_when = when
            self.timer = self.loop.call_at(when, self._tick)

    def _tick(self) -> None:
        self.timer = None
        self.timer_when = float("-inf")  # pushes during the batch never arm; re-armed below
        heap = self.heap
        pop = heapq.heappop
        now = self.loop.time()
        limit = now + self.slack
        budget = BATCH
        deferred = []
        while heap and heap[0][0] <= limit:
            entry = pop(heap)
            when, gen, probe = entry
            if gen != probe.gen:
                continue  # stale: the probe finished early, was stopped or relaunched
            if probe.inflight:
                if when > now:
                    deferred.append(entry)  # starts may run a slack early, deadlines never do
                    continue
                probe.timeout()
            elif self.running_probes >= self.cap or self.waiting:
                self.waiting.append((probe, gen))  # runs when a probe in flight finishes
                continue
            else:
                probe.launch(now)
            budget -= 1
            if not budget:
                break  # let I/O callbacks and the reconcile run between batches
        for entry in deferred:
            heapq.heappush(heap, entry)
        if self.waiting and self.running_probes < self.cap:
            self.drain_soon()
        if budget != BATCH:
            # probes already answered (loopback, a LAN while the batch ran) finish in this turn
            # instead of costing another event-loop wake-up
            self.poller.dispatch()
        self.timer_when = float("inf")
        if heap and self.running:
            self.timer_when = heap[0][0]
            self.timer = self.loop.call_at(self.timer_when, self._tick)

    def drain_soon(self) -> None:
        """Launch waiting probes from the loop's next turn (never inside a checker's callback)."""
        if not self.drain_armed and self.running:
            self.drain_armed = True
            self.loop.call_soon(self._drain)

    def _drain(self) -> None:
        self.drain_armed = False
        waiting = self.waiting
        budget = BATCH
        now = self.loop.time()
        while waiting and self.running_probes < self.cap and budget:
            probe, gen = waiting.popleft()
            if gen != probe.gen or probe.inflight:
                continue  # stopped (or relaunched) while it waited
            probe.launch(now)
            budget -= 1
        if waiting and self.running_probes < self.cap:
            self.drain_soon()  # a slice at a time: I/O and the reconcile run in between

    def local_failure(self, probe: Probe, detail: str) -> None:
        """The director could not run a probe: log it (at most every 10 s), decide nothing."""
        self.local_failures += 1
        now = self.loop.time()
        if now - self.local_logged >= 10.0:
            self.local_logged = now
            log.error("cannot run checks (%d times so far; %s): %s — raise LimitNOFILE/LimitNPROC? "
                      "servers keep their state meanwhile", self.local_failures, probe.label, detail)

    def stop(self) -> None:
        self.running = False
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.heap.clear()
        self.waiting.clear()


class _Server:
    """A configured server with checks: which probes decide it and what it was last reported as."""

    # as Probe: one probe by reference, the others in a tuple (most servers have one check)
    __slots__ = ("sid", "probe", "more", "health")

    def __init__(self, sid: ServerId) -> None:
        self.sid = sid
        self.probe: Probe | None = None
        self.more: tuple[Probe, ...] = ()
        self.health = UNKNOWN_HEALTH

    @property
    def label(self) -> str:
        """``web 10.0.0.1:80``: the service and the server, for the log."""
        return f"{self.sid[0]} {self.sid[1]}"

    @property
    def probes(self) -> tuple[Probe, ...]:
        """Every probe that decides this server."""
        p = self.probe
        return self.more if p is None else (p, *self.more)

    def combined(self) -> ServerHealth:
        p = self.probe
        if not self.more and p is not None:
            return p.state.health()
        return combine(p.state.health() for p in self.probes)


class CheckManager:
    """Runs the checks of a Config; see the module docstring and docs/checks.md."""

    def __init__(self, on_change: Callable[[ServerId, ServerHealth], None], inflight_max: int | None = None) -> None:
        self.on_change = on_change
        self.inflight_max = inflight_max  # None: derived from the open-files limit
        self.sched: Scheduler | None = None
        self._first: dict[ServerId, _Server] = {}  # first verdicts waiting for their batch
        self._first_timer: asyncio.TimerHandle | None = None
        self.startlog: StartLog | None = None
        self.probes: dict[Any, Probe] = {}
        self.servers: dict[ServerId, _Server] = {}
        self._canon: dict[CheckConfig, int] = {}  # CheckConfig -> token
        self._tokens = 0
        self._by_id: dict[int, tuple[CheckConfig, int]] = {}  # id(CheckConfig) -> (it, token)

    # --- lifecycle ---
    async def start(self, config: Any) -> None:
        """Start checking every server of ``config`` that has checks."""
        loop = asyncio.get_running_loop()
        self.sched = Scheduler(loop, self._on_transition, self.inflight_max)
        self._apply(config, "start")
        self._limit()

    def _limit(self) -> None:
        """Lift the open-files limit for the probes, then cap probes in flight below it."""
        raise_nofile(len(self.probes) + 1024)
        if self.sched is not None and self.inflight_max is None:
            self.sched.cap = inflight_cap()

    async def reload(self, config: Any) -> None:
        """Switch to a new config; unchanged checks keep their state and timers."""
        if self.sched is None:
            await self.start(config)
            return
        self._apply(config, "reload")
        self._limit()

    async def stop(self) -> None:
        """Stop every probe, release every socket and kill every script still running."""
        if self.sched is not None:
            self.sched.stop()
        if self._first_timer is not None:
            self._first_timer.cancel()
            self._first_timer = None
        self._first.clear()
        if self.startlog is not None:
            self.startlog.close()
            self.startlog = None
        for p in self.probes.values():
            p.stop()
        self.probes.clear()
        self.servers.clear()
        await asyncio.sleep(0)  # let cancelled script tasks run their cleanup
        script = sys.modules.get("lvsd.checks.script")
        if script is not None:
            await script.wait_reaped()  # killed scripts are reaped before we return: no zombie

    def snapshot(self) -> dict[ServerId, ServerHealth]:
        """Current health of every server that has checks."""
        return {sid: s.health for sid, s in self.servers.items()}

    def probe_count(self) -> int:
        """Number of distinct probes running (after deduplication)."""
        return len(self.probes)

    # --- internals ---
    def _token(self, cc: CheckConfig) -> int:
        """The token of a CheckConfig: equal configs get the same one. Hashing a frozen check
        dataclass hashes all its fields, so objects are looked up by identity first (the loader
        shares one object per check table, inherited by many servers)."""
        hit = self._by_id.get(id(cc))
        if hit is not None and hit[0] is cc:
            return hit[1]
        token = self._canon.get(cc)
        if token is None:
            self._tokens += 1
            token = self._canon[cc] = self._tokens
        self._by_id[id(cc)] = (cc, token)
        return token

    def _apply(self, config: Any, why: str) -> None:
        # Building 50,000 probes would trigger full garbage collections over the whole config
        # (millions of objects): 1.07-1.46 s of CPU with them, 0.29-0.31 s without (issue 16,
        # load 8). Nothing built here is cyclic garbage; the collector runs again right after.
        enabled = gc.isenabled()
        gc.disable()
        try:
            self._apply_config(config, why)
        finally:
            if enabled:
                gc.enable()

    def _apply_config(self, config: Any, why: str) -> None:
        sched = self.sched
        assert sched is not None
        now = sched.loop.time()
        wanted: dict[ServerId, list[tuple[Any, CheckConfig, str, int]]] = {}
        for svc in _services(config):
            for srv in svc.servers:
                checks = tuple(srv.checks or ())
                if not checks:
                    continue
                dk = srv.key
                sid = (svc.name, dk)
                keys = []
                for cc in checks:
                    addr, port = cc.target_of(dk.addr, dk.port)
                    keys.append(((self._token(cc), addr, port), cc, dk.addr, dk.port))
                wanted[sid] = keys

        shortest = min((cfg.interval for keys in wanted.values() for _k, cfg, _a, _p in keys), default=1.0)
        sched.slack = max(SLACK_MIN, min(SLACK_MAX, shortest / 50))
        old_probes = self.probes
        new_probes: dict[Any, Probe] = {}
        added: list[Probe] = []
        for keys in wanted.values():
            for key, cfg, addr, port in keys:
                if key in new_probes:
                    continue
                p = old_probes.get(key)
                if p is None:
                    p = Probe(key, cfg, addr, port, sched)
                    added.append(p)
                new_probes[key] = p
                p.server = None
                p.more = ()
        if added:  # first runs at once, evenly over at most START_SPREAD (the heap batches them)
            step = min(START_SPREAD, len(added) / START_RATE) / len(added)
            for i, p in enumerate(added):
                sched.push(now + i * step, p)
        for key, p in old_probes.items():
            if key not in new_probes:
                p.stop()
        self.probes = new_probes

        old_servers = self.servers
        servers: dict[ServerId, _Server] = {}
        changed: list[_Server] = []
        new = 0
        more: dict[Probe, list[_Server]] = {}  # a probe's servers after its first, while linking
        for sid, keys in wanted.items():
            s = old_servers.get(sid)
            if s is None:
                s = _Server(sid)
                new += 1
            first = new_probes[keys[0][0]]
            s.probe = first
            if len(keys) == 1:
                s.more = ()
                linked: tuple[Probe, ...] = (first,)
            else:
                linked = tuple(dict.fromkeys(new_probes[k[0]] for k in keys))
                s.more = linked[1:]
            for p in linked:
                if p.server is None:
                    p.server = s
                else:
                    more.setdefault(p, []).append(s)
            servers[sid] = s
            changed.append(s)
        for p, extra in more.items():
            p.more = tuple(extra)
        self.servers = servers
        # forget configs no longer used (tokens of live probes stay valid: _canon keeps them)
        live = {k[0] for k in new_probes}
        self._canon = {cc: t for cc, t in self._canon.items() if t in live}
        self._by_id = {i: e for i, e in self._by_id.items() if e[1] in live}
        for sid in [sid for sid in self._first if sid not in servers]:
            del self._first[sid]
        for s in changed:
            self._update(s)
        if self.startlog is not None:
            self.startlog.close()
        # the servers this start or reload added, or whose checks it changed, wait for a verdict
        waiting = sum(1 for s in servers.values() if s.health.state is Health.UNKNOWN) if new or added else 0
        self.startlog = StartLog(why, waiting, now, sched.loop) if waiting else None

    def _on_transition(self, probe: Probe) -> None:
        for s in probe.servers:
            self._update(s)

    def _update(self, s: _Server) -> None:
        h = s.combined()
        old = s.health
        if h.state is old.state and h.weight == old.weight:
            return
        s.health = h
        if h.state is Health.UNKNOWN and old.state is Health.UNKNOWN:
            return
        if old.state is Health.UNKNOWN and h.state is Health.DOWN:
            # a server adopted from the kernel (on_start = adopt) is in it until its checks
            # decide: a failure takes it out at once, never after the batch's wait
            self._first.pop(s.sid, None)
            self._hand_over(s, h)
            self._log_first(s, h)
            return
        if old.state is Health.UNKNOWN:
            # a first verdict: batched for the daemon, summarised in the log
            self._first[s.sid] = s
            if self._first_timer is None and self.sched is not None:
                self._first_timer = self.sched.loop.call_later(FIRST_BATCH, self._flush_first)
            return
        self._first.pop(s.sid, None)
        self._hand_over(s, h)
        _log_transition(s.label, h, logging.INFO)

    def _hand_over(self, s: _Server, h: ServerHealth) -> None:
        try:  # first the daemon (it schedules the kernel change), then the log line
            self.on_change(s.sid, h)
        except Exception:
            log.exception("%s: on_change handler failed", s.label)

    def _flush_first(self) -> None:
        """Hand the batch of first verdicts to the daemon (one reconcile for all of them)."""
        self._first_timer = None
        batch, self._first = self._first, {}
        for s in batch.values():
            h = s.health
            self._hand_over(s, h)
            self._log_first(s, h)

    def _log_first(self, s: _Server, h: ServerHealth) -> None:
        """Log a first verdict: counted by the start-up summary while there is one."""
        slog = self.startlog
        if slog is not None and slog.timer is None:  # gave up waiting: one line each from now on
            self.startlog = slog = None
        if slog is None:
            _log_transition(s.label, h, logging.INFO)
            return
        slog.verdict(s.label, h)
        if slog.finished():
            slog.close()
            self.startlog = None


def _log_transition(label: str, h: ServerHealth, level: int) -> None:
    """One server's transition, as operators grep for it: DOWN at warning, UP and UNKNOWN at
    ``level`` (info; debug for the verdicts a start-up summary counts)."""
    if h.state is Health.DOWN:
        log.log(max(level, logging.WARNING) if level >= logging.INFO else level, "%s DOWN: %s", label, h.reason)
    elif h.state is Health.UP:
        w = "" if h.weight is None else f", weight {h.weight}"
        log.log(level, "%s UP: %s%s", label, h.reason, w)
    else:
        log.log(level, "%s UNKNOWN: checks changed, waiting for a verdict", label)


class StartLog:
    """The log of the first verdicts of the servers a start or reload added: the first
    ``LOG_FIRST`` one line each, the rest at debug, then (if there were more) one summary line when every one has a
    verdict ("start: 9,990 servers up, 10 down, in 1.3 s"), with a progress line every
    ``PROGRESS_EVERY`` seconds until then."""

    def __init__(self, why: str, servers: int, t0: float, loop: asyncio.AbstractEventLoop) -> None:
        self.why = why
        self.servers = servers
        self.t0 = t0
        self.loop = loop
        self.up = self.down = self.logged = self.progress = 0
        self.timer: asyncio.TimerHandle | None = loop.call_later(PROGRESS_EVERY, self._progress)

    def verdict(self, label: str, h: ServerHealth) -> None:
        """One new server's first verdict."""
        if h.state is Health.UP:
            self.up += 1
        elif h.state is Health.DOWN:
            self.down += 1
        self.logged += 1
        _log_transition(label, h, logging.INFO if self.logged <= LOG_FIRST else logging.DEBUG)

    def finished(self) -> bool:
        """Every new server has a verdict: log the summary."""
        if self.up + self.down < self.servers:
            return False
        if self.servers > LOG_FIRST:  # else each verdict had its own line: enough
            log.info("%s", self.line("checked"))
        return True

    def line(self, what: str) -> str:
        took = self.loop.time() - self.t0
        more = "" if self.logged <= LOG_FIRST else f" ({self.logged - LOG_FIRST:,} more lines at debug)"
        waiting = self.servers - self.up - self.down
        wait = f", {waiting:,} waiting for a verdict" if waiting else ""
        return (f"{self.why}: {what} {self.servers:,} servers: {self.up:,} up, {self.down:,} down{wait}, "
                f"in {took:.1f} s{more}")

    def _progress(self) -> None:
        self.progress += 1
        if self.progress >= PROGRESS_MAX:
            if self.servers > LOG_FIRST:
                log.info("%s; later first verdicts are logged one line each", self.line("still checking"))
            self.timer = None
            return
        if self.servers > LOG_FIRST:
            log.info("%s", self.line("still checking"))
        self.timer = self.loop.call_later(PROGRESS_EVERY, self._progress)

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


def raise_nofile(needed: int) -> None:
    """Every probe may hold a socket at once (a black-holed subnet, timeouts near the interval):
    lift the soft descriptor limit towards ``needed`` (never above the hard limit)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    new = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
    if new > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        except (ValueError, OSError) as e:
            log.warning("cannot raise the open-files limit to %d: %s", new, e)


def inflight_cap() -> int:
    """Probes allowed in flight at once: the open-files limit less what the rest of the daemon
    needs (each probe holds a socket, a script probe a pipe), at least 64."""
    import resource

    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1 << 20
    return max(64, soft - FD_RESERVE)


def _services(config: Any) -> Iterable[Any]:
    return getattr(config, "services", ()) or ()


async def check_once(check: CheckConfig, addr: str, port: int) -> tuple[bool | None, str, int | None]:
    """Run one probe of ``check`` against addr:port (the server's; ``connect`` applies), honouring
    its timeout; return (ok, detail, weight), ok None if the director itself could not probe. For
    tests and one-off diagnostics."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[tuple[bool | None, str, int | None]] = loop.create_future()

    def done(ok: bool | None, detail: str, weight: int | None) -> None:
        if not fut.done():
            fut.set_result((ok, detail, weight))

    checker = check.checker(addr, port, loop, done)
    checker.start()
    try:
        return await asyncio.wait_for(asyncio.shield(fut), check.timeout)
    except asyncio.TimeoutError:
        return (False, checker.cancel(), None)
