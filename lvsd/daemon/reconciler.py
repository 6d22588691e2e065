"""The reconciler: lvsd's side of the kernel table. Plans (``lvsd.core.plan``), applies, keeps count.

It holds what lvsd knows between passes: the checks' verdicts, the quorum states, the services
lvsd manages (and their record in ``daemon.state_file``), and lvsd's *view* of its services (what
the last full pass read and every write since made them; exact because lvsd is the only writer
of its services). A full pass is one dump, one plan, one batched ``Backend.apply``; a pass for
the services a health change concerns plans against the view, so it costs no kernel read. If the
kernel refuses that delta the view is dropped and a full pass repairs from a fresh dump at once.
An op the kernel refuses never holds back the others: the rest of its batch is applied (a batch
with an invalid value is split, so only that op is left out), the refusal is logged with its
service, counted and kept in ``refused``, and the op is retried with backoff (``retry_at``) while
every other service's changes keep flowing.
It never decides *when* to run: the daemon's loop (``lvsd.daemon.daemon``) does, and is the only
caller of ``reconcile``.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from lvsd.config.model import Config, ServerId, ServiceConfig
from lvsd.core.announce import ServiceInput
from lvsd.core.desired import live_weight
from lvsd.core.health import ServerHealth
from lvsd.core.overrides import Override
from lvsd.core.plan import Plan, describe, plan, retired
from lvsd.daemon.hooks import Hooks
from lvsd.daemon.limits import REFUSED_RETRY_INITIAL, REFUSED_RETRY_MAX
from lvsd.ipvs.backend import Backend, BatchError, IPVSError, Op
from lvsd.ipvs.model import ServiceEntry, ServiceKey, ValueInvalid

log = logging.getLogger("lvsd")

#: Ops logged one line each; above this a batch is summarised (every op still at debug level).
LOG_OPS_MAX = 50


@dataclass
class Stats:
    """Counters behind /metrics and /status."""

    started: float = field(default_factory=time.time)
    reconciles: Counter[str] = field(default_factory=Counter)  # by result: ok / error
    reconcile_seconds: float = 0.0
    last_reconcile: float = 0.0  # wall time
    last_reconcile_duration: float = 0.0
    last_reconcile_ok: bool = True
    ops: Counter[str] = field(default_factory=Counter)  # applied, by OpKind value
    op_errors: Counter[str] = field(default_factory=Counter)
    reloads: Counter[str] = field(default_factory=Counter)  # ok / error / noop
    last_reload: float = 0.0
    last_reload_ok: bool = True
    last_reload_error: str = ""
    repairs: int = 0  # resyncs (or refused deltas) that found the kernel different from what lvsd wrote
    role_changes: int = 0
    refusals: Counter[tuple[str, str]] = field(default_factory=Counter)  # refused ops by (service, kind)


@dataclass
class Refusal:
    """An op the kernel refused, kept until it is applied or no longer wanted."""

    service: str  # the service's name (its key if the config does not name it)
    error: str
    errno: int
    count: int = 1
    first: float = field(default_factory=time.time)  # wall time of the first refusal
    retry_at: float = 0.0  # monotonic time before which the op is not sent again
    backoff: float = REFUSED_RETRY_INITIAL

    def refused_again(self, error: str, err: int, now: float) -> None:
        """One more refusal: double the wait before the next try."""
        self.count += 1
        self.error, self.errno = error, err
        self.backoff = min(REFUSED_RETRY_MAX, self.backoff * 2)
        self.retry_at = now + self.backoff


def recorded_services(path: str) -> tuple[set[ServiceKey], str]:
    """The services a daemon.state_file records, and why none could be read ("" if fine; a
    missing file is fine: nothing recorded yet)."""
    if not path:
        return set(), ""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        keys = set()
        for k in doc["services"]:
            af, proto, addr, port, fwmark = k
            if not (all(type(v) is int for v in (af, proto, port, fwmark)) and type(addr) is str):
                raise ValueError(f"not a service key: {k!r}")
            keys.add(ServiceKey(af, proto, addr, port, fwmark))
        return keys, ""
    except FileNotFoundError:
        return set(), ""
    except RecursionError:
        return set(), f"{path} unreadable (nested too deeply)"
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        return set(), f"{path} unreadable ({' '.join(str(e).split())[:200]})"


class Reconciler:
    """Plan and apply for one config and one backend; ``reconcile`` is one pass and never raises."""

    def __init__(self, config: Config, backend: Backend, stats: Stats, hooks: Hooks) -> None:
        self.config = config
        self.backend = backend
        self.stats = stats
        self.hooks = hooks
        self.health: dict[ServerId, ServerHealth] = {}
        #: the checks' current verdicts (refreshed before every full pass), None without checks
        self.health_source: Callable[[], Mapping[ServerId, ServerHealth]] | None = None
        self.quorum: dict[str, bool] = {}
        self.managed: set[ServiceKey] = {s.key for s in config.services}
        #: the managed services as the kernel has them, kept by lvsd (None = unknown: read the kernel)
        self.view: dict[ServiceKey, ServiceEntry] | None = None
        self.by_name: dict[str, ServiceConfig] = {s.name: s for s in config.services}
        self.by_key: dict[ServiceKey, ServiceConfig] = {s.key: s for s in config.services}
        #: what record() last wrote, and the file's identity then (a changed file is rewritten)
        self._recorded_as: tuple[str, frozenset[ServiceKey]] | None = None
        self._recorded_stat: tuple[int, int, int] | None = None
        self._record_error = ""
        #: ops the kernel refused, awaiting their retry (see ``apply``)
        self.refused: dict[Op, Refusal] = {}
        #: the operator's overrides (the daemon's OverrideStore.active), applied by the planner
        self.overrides: Mapping[ServerId, Override] = {}

    # ------------------------------------------------------------------ start, reload, stop

    def adopt(self) -> None:
        """At start: read the table, take back the services recorded as lvsd's that the config no
        longer names (the next full pass deletes them), and flush the managed ones if
        ``on_start = "flush"``."""
        actual = self.backend.dump()
        gone = retired(self.managed, self.recorded(), actual)
        if gone:
            # managed at the last run (daemon.state_file), no longer in the config: removed from
            # it while lvsd was stopped. Managed again until the first reconcile deletes them.
            shown = ", ".join(str(k) for k in gone[:5]) + (", ..." if len(gone) > 5 else "")
            log.info("removing %d services the config no longer names (managed before): %s", len(gone), shown)
            self.managed |= set(gone)
        self.record()
        if self.config.daemon.on_start == "flush":
            ops = [Op.del_service(k) for k in actual if k in self.managed]
            if ops:
                log.info("on_start=flush: removing %d managed services before configuring", len(ops))
                self.view = None
                self.apply(ops, "on_start=flush")  # a refused delete is logged; the first pass retries it
        else:
            adopted = [k for k in actual if k in self.managed and k not in gone]
            if adopted:
                log.info("adopting %d services already in the kernel", len(adopted))

    def set_config(self, new: Config) -> None:
        """A reload: plan for ``new`` from now on; the services it drops stay managed until the
        full pass that follows deletes them."""
        self.config = new
        self.by_name = {s.name: s for s in new.services}
        self.by_key = {s.key: s for s in new.services}
        self.managed |= {s.key for s in new.services}
        self.record()
        self.quorum = {n: v for n, v in self.quorum.items() if n in self.by_name}

    def remove_managed(self, why: str) -> None:
        """Delete every managed service the kernel has (``on_stop = "remove"``); raises on failure."""
        actual = self.backend.dump()
        ops = [Op.del_service(k) for k in actual if k in self.managed]
        if ops:
            log.info("%s: removing %d managed services", why, len(ops))
            self.view = None
            refused = self.apply(ops, why)
            if refused:
                raise IPVSError(refused[0], self.refused[refused[0]].errno, f"{len(refused)} deletes refused")

    # ------------------------------------------------------------------ one pass

    def reconcile(self, full: bool, dirty: Mapping[str, Mapping[str, str]], cause: str) -> bool:
        """One pass: the whole table (``full``), else the ``dirty`` services (name -> server ->
        why). Returns False if the pass failed as a whole (the kernel unreachable, a bug): logged,
        view dropped, never raises. Ops the kernel refused one by one do not fail the pass: they
        are in ``refused``, retried from ``retry_at()``."""
        t0 = time.perf_counter()
        ok = True
        try:
            if full:
                self._full_pass(cause)
            else:
                full = self._services_pass(dirty)
            if full:
                self.managed = {s.key for s in self.config.services}
                self.record()
        except (IPVSError, OSError, ValueInvalid) as e:
            ok = False
            self.view = None
            log.error("reconcile failed: %s", e)
        except Exception as e:  # a bug must not end the loop: log it and retry with backoff
            ok = False
            self.view = None
            log.exception("reconcile failed unexpectedly: %s", e)
        dt = time.perf_counter() - t0
        st = self.stats
        st.reconciles["ok" if ok else "error"] += 1
        st.reconcile_seconds += dt
        st.last_reconcile = time.time()
        st.last_reconcile_duration = dt
        return ok

    def _full_pass(self, cause: str, hold: bool = True) -> None:
        """Compare the whole table with a fresh dump and apply the difference; on success lvsd's
        view of its services is exactly the desired table but for refused ops' services (raises
        on failure, view dropped). ``hold=False`` sends even ops waiting for their retry."""
        self.view = None
        p = self.plan_full()
        if cause == "resync" and any(op not in self.refused for op in p.ops):  # refused ops are no news
            self.stats.repairs += 1
            log.warning("resync: kernel differs from the desired table (edited outside lvsd?), repairing")
        refused = self.apply(p.ops, cause, hold=hold) if p.ops else []
        self._forget_refusals(set(p.ops), None)
        self.view = p.desired
        for op in refused:  # those services differ from the plan: read them from the kernel next time
            if op.key is not None:
                self.view.pop(op.key, None)

    def _services_pass(self, dirty: Mapping[str, Mapping[str, str]]) -> bool:
        """Plan and apply the dirty services; if the view proves wrong, repair with a full pass.
        Returns whether a full pass ran."""
        ops, desired, cached = self.plan_services(set(dirty))
        keys = {self.by_name[n].key: n for n in dirty if n in self.by_name}
        try:
            refused = self.apply(ops, _reasons(dirty, keys)) if ops else []
        except (IPVSError, OSError):
            if not cached:
                raise
            refused = ops
        if refused and cached:
            # lvsd's view may be wrong (an outside edit since the last resync): compare with the
            # kernel now instead of waiting for the retry backoff (what the kernel still refuses
            # then is a genuine refusal, kept for its retry)
            log.warning("kernel differs from lvsd's view (edited outside lvsd?): full reconcile")
            self.stats.repairs += 1
            self._full_pass("repair", hold=False)
            return True
        self._forget_refusals(set(ops), set(keys))
        if self.view is not None:
            self.view.update(desired)
            for op in refused:
                if op.key is not None:
                    self.view.pop(op.key, None)
        return False

    def plan_full(self) -> Plan:
        """The plan for the whole table: health refreshed from the checks, one dump, the kernel's
        timeouts if the config sets some; takes the new quorum states."""
        cfg = self.config
        if self.health_source is not None:
            # (name, key) built inline: srv.id's property call was 0.18 s of a reload at 50,000 servers
            valid = {(s.name, srv.key) for s in cfg.services for srv in s.servers}
            self.health = {sid: h for sid, h in self.health_source().items() if sid in valid}
        actual = self.backend.dump()
        have = self.backend.timeouts() if cfg.ipvs.timeouts is not None else None
        p = plan(
            cfg, self.health, actual, quorum=self.quorum, managed=self.managed, timeouts=have, overrides=self.overrides
        )
        self._update_quorum(p.quorum, None)
        return p

    def plan_services(self, names: set[str]) -> tuple[list[Op], dict[ServiceKey, ServiceEntry], bool]:
        """Ops for the named services only (planned against lvsd's view of them, else read from
        the kernel), never deleting a service; also their desired entries and whether the view
        was used."""
        names = {n for n in names if n in self.by_name}
        if not names:
            return [], {}, False
        actual: dict[ServiceKey, ServiceEntry] = {}
        view = self.view
        cached = view is not None
        for name in names:
            key = self.by_name[name].key
            if view is not None and key in view:
                actual[key] = view[key]
                continue
            cached = False
            try:
                svc = self.backend.service(key)
                actual[key] = ServiceEntry(svc, {d.key: d for d in self.backend.dests(key)})
            except IPVSError as e:
                if e.errno not in (errno.ESRCH, errno.ENOENT):
                    raise
        p = plan(self.config, self.health, actual, quorum=self.quorum, only=names, overrides=self.overrides)
        self._update_quorum(p.quorum, names)
        return p.ops, p.desired, cached

    # ------------------------------------------------------------------ quorum

    def announce_inputs(self) -> list[ServiceInput]:
        """Per service with an address: its VIP and quorum verdict (the planner's, hysteresis
        included), what bgp mode's announce rule (lvsd.core.announce) decides from."""
        actual = self.view or {}
        out = []
        for s in self.config.services:
            if s.key.fwmark or not s.key.addr:
                continue
            below = False if s.quorum <= 0 else self.quorum.get(s.name)
            vip = str(ipaddress.ip_address(s.key.addr))
            out.append(ServiceInput(s.name, vip, below, live_weight(s, self.health, actual, self.overrides), s.quorum))
        return out

    def _update_quorum(self, new: dict[str, bool], names: set[str] | None) -> None:
        """Take the new quorum states (all services, or ``names``); log transitions, run hooks."""
        for name, below in new.items():
            before = self.quorum.get(name)
            if before is None and not below:
                continue
            if before == below:
                continue
            svc = self.by_name.get(name)
            if svc is None:
                continue
            sorry = f", sorry server {svc.sorry_server.key}" if svc.sorry_server is not None else ""
            if below:
                log.warning("%s: below quorum %d%s", name, svc.quorum, sorry + " in" if sorry else "")
                self.hooks.run(svc.quorum_down, {"LVSD_EVENT": "quorum_down", "LVSD_SERVICE": name})
            else:
                log.info("%s: quorum %d restored%s", name, svc.quorum, sorry + " out" if sorry else "")
                self.hooks.run(svc.quorum_up, {"LVSD_EVENT": "quorum_up", "LVSD_SERVICE": name})
        if names is None:
            self.quorum = new
        else:
            self.quorum.update(new)

    # ------------------------------------------------------------------ apply

    def apply(self, ops: list[Op], why: str | Callable[[Op], str], hold: bool = True) -> list[Op]:
        """Apply what the kernel takes of ``ops``, logging each change with its reason (``why``,
        or ``why(op)``); return the ops it refused, each logged with its service, counted and
        kept in ``refused`` for a retry with backoff. An op still waiting for its retry is not
        sent (unless ``hold`` is False). Raises only if the batch could not be sent at all (IPVSError, OSError)."""
        now = time.monotonic()
        held = [op for op in ops if hold and (r := self.refused.get(op)) is not None and r.retry_at > now]
        if held:
            skip = set(held)
            ops = [op for op in ops if op not in skip]
        failed: list[tuple[Op, IPVSError | ValueInvalid]] = []
        try:
            if ops:
                self.backend.apply(ops)  # logged afterwards: formatting lines is not on the latency path
            applied = ops
        except BatchError as e:
            applied = list(e.applied)
            failed.extend(e.failed)
        except ValueInvalid:
            # one bad value refuses the whole batch before anything is sent: leave the invalid
            # ops out (refused each with its own error) and send the rest
            applied, failed = self._apply_valid(ops)
        except IPVSError as e:
            if len(ops) != 1 or e.op != ops[0]:
                raise  # the batch could not be sent at all: the pass fails, retried with backoff
            applied, failed = [], [(ops[0], e)]
        _log_ops(applied, why)
        counts = self.stats.ops
        for op in applied:
            counts[op.kind.value] += 1
            self.refused.pop(op, None)
        for i, (op, err) in enumerate(failed):
            self._refused(op, err, now, log_it=i < LOG_OPS_MAX)
        if len(failed) > LOG_OPS_MAX:
            log.error("... and %d more refused ops", len(failed) - LOG_OPS_MAX)
        return [op for op, _ in failed]

    def _apply_valid(self, ops: list[Op]) -> tuple[list[Op], list[tuple[Op, IPVSError | ValueInvalid]]]:
        """Split a batch that failed validation: the invalid ops are refused, the rest sent (one
        by one if the backend still refuses the batch's validation)."""
        good: list[Op] = []
        failed: list[tuple[Op, IPVSError | ValueInvalid]] = []
        for op in ops:
            try:
                op.validate()
            except ValueInvalid as e:
                failed.append((op, e))
            else:
                good.append(op)
        if not good:
            return [], failed
        try:
            self.backend.apply(good)
        except BatchError as e:
            return list(e.applied), failed + list(e.failed)
        except ValueInvalid:
            applied: list[Op] = []
            for op in good:  # the backend validates more than Op.validate: op by op
                try:
                    self.backend.apply([op])
                except (ValueInvalid, IPVSError) as e:
                    if isinstance(e, IPVSError) and e.op != op:
                        raise
                    failed.append((op, e))
                else:
                    applied.append(op)
            return applied, failed
        except IPVSError as e:
            if len(good) != 1 or e.op != good[0]:
                raise
            return [], failed + [(good[0], e)]
        return good, failed

    def _refused(self, op: Op, err: IPVSError | ValueInvalid, now: float, log_it: bool) -> None:
        """Count, keep and log one refused op."""
        if isinstance(err, IPVSError):
            code, text = err.errno, err.strerror
        else:
            code, text = errno.EINVAL, str(err)
        service = self.service_name(op)
        self.stats.op_errors[op.kind.value] += 1
        self.stats.refusals[(service, op.kind.value)] += 1
        r = self.refused.get(op)
        if r is None:
            r = self.refused[op] = Refusal(
                service, text, code, retry_at=now + REFUSED_RETRY_INITIAL, backoff=REFUSED_RETRY_INITIAL
            )
        else:
            r.refused_again(text, code, now)
        if log_it:
            log.error(
                "kernel refused %s (service %s): %s; retry in %gs (refused %d times)",
                describe(op), service, text, r.backoff, r.count,
            )

    def _forget_refusals(self, planned: set[Op], services: set[ServiceKey] | None) -> None:
        """Drop refusals of ops a pass no longer wants (a reload fixed the value, a server left):
        every op not planned, or only those of ``services``."""
        for op in list(self.refused):
            if op not in planned and (services is None or op.key in services):
                del self.refused[op]

    def refused_report(self) -> list[dict[str, object]]:
        """The ops the kernel refuses now, for /status: service, op, error, count, retry."""
        now = time.monotonic()
        return [
            {
                "service": r.service,
                "kind": op.kind.value,
                "op": describe(op),
                "error": r.error,
                "count": r.count,
                "since": round(r.first, 3),
                "retry_in": round(max(0.0, r.retry_at - now), 3),
            }
            for op, r in sorted(self.refused.items(), key=lambda kv: (kv[1].service, describe(kv[0])))
        ]

    def retry_at(self) -> float | None:
        """Monotonic time of the earliest refused op's retry (None: nothing refused)."""
        return min((r.retry_at for r in self.refused.values()), default=None)

    def service_name(self, op: Op) -> str:
        """The config's name for an op's service (its key if unnamed, "-" for global ops)."""
        if op.key is None:
            return "-"
        svc = self.by_key.get(op.key)
        return svc.name if svc is not None else str(op.key)

    # ------------------------------------------------------------------ the managed services' record

    def recorded(self) -> set[ServiceKey]:
        """The services daemon.state_file says lvsd managed when it last ran (none if unset,
        missing or unreadable: then nothing is deleted on its account)."""
        keys, error = recorded_services(self.config.daemon.state_file)
        if error:
            log.warning(
                "daemon.state_file %s: a service removed from the config while lvsd was stopped is "
                "left in the kernel",
                error,
            )
        return keys

    def record(self) -> None:
        """Write the managed services to daemon.state_file when they changed, or when the file
        is no longer the one lvsd wrote (corrupted, truncated, removed): atomically, a new file
        renamed over the old. A failure is logged, never fatal."""
        path = self.config.daemon.state_file
        if not path:
            return
        if (path, self.managed) == self._recorded_as and _stat_of(path) == self._recorded_stat:
            return  # every full reconcile (each resync) comes here: compare, sort only to write
        keys = frozenset(self.managed)
        doc = {"services": [[k.af, k.protocol, k.addr, k.port, k.fwmark] for k in sorted(keys)]}
        tmp = f"{path}.tmp"
        try:
            os.makedirs(os.path.dirname(path), mode=0o750, exist_ok=True)
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(doc, f)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            self._recorded_as = (path, keys)
            self._recorded_stat = _stat_of(path)
        except OSError as e:
            if self._record_error != str(e):
                log.warning("cannot write daemon.state_file %s: %s", path, e.strerror or e)
            self._record_error = str(e)


def _stat_of(path: str) -> tuple[int, int, int] | None:
    """A file's identity and version (inode, size, mtime in ns); None if it cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _reasons(dirty: Mapping[str, Mapping[str, str]], keys: Mapping[ServiceKey, str]) -> Callable[[Op], str]:
    """Each op's own reason: its server's health event, else its service's events (an op for a
    server that did not change, e.g. the sorry server, is there because of them)."""

    def why(op: Op) -> str:
        name = keys.get(op.key) if op.key is not None else None
        events = dirty.get(name, {}) if name is not None else {}
        if op.dest is not None and (own := events.get(str(op.dest.key))):
            return own
        if events:
            shown = "; ".join(list(events.values())[:3])
            return shown + (f"; and {len(events) - 3} more" if len(events) > 3 else "")
        return f"{len(dirty)} services changed health"

    return why


def _log_ops(ops: list[Op], why: str | Callable[[Op], str]) -> None:
    """What a batch changed: one line per op with its reason, or a summary for a big batch
    (ops at debug)."""
    if not ops or not log.isEnabledFor(logging.INFO):
        return
    reason = why if callable(why) else (lambda op: why)
    if len(ops) <= LOG_OPS_MAX:
        for op in ops:
            log.info("%s (%s)", describe(op), reason(op))
        return
    summary = Counter(op.kind.value for op in ops)
    label = why if isinstance(why, str) else "health changes"
    log.info("applied %d ops (%s) (%s)", len(ops), ", ".join(f"{n} {k}" for k, n in summary.items()), label)
    if log.isEnabledFor(logging.DEBUG):
        for op in ops:
            log.debug("%s (%s)", describe(op), reason(op))
