"""The lvsd daemon: keeps the kernel's IPVS table equal to config + health, reloads, stops.

One asyncio task owns the kernel table. Everything else (signals, health transitions, API
requests, the resync timer) only records what it wants and wakes that task, ExaBGP style, so a
signal handler never does work and two reconciles never interleave. A full reconcile is one
dump, one keyed diff (lvsd.core.diff) and one batched ``Backend.apply``. A health transition
diffs only the services it concerns against lvsd's own view of them (what the last full
reconcile read and every write since made them; exact because lvsd is the only writer of its
services), so it costs no kernel read. If the kernel refuses that delta the view is dropped and
a full reconcile repairs from a fresh dump at once; the periodic resync still compares with the
kernel and repairs edits made behind lvsd's back. A failed reconcile is logged op by op and
retried with backoff (lvsd.core.runner); it never ends the loop.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lvsd.config.model import Config, ServerId, ServiceConfig
from lvsd.core.desired import plan_table, server_health
from lvsd.core.diff import diff
from lvsd.core.health import Health, ServerHealth
from lvsd.core.runner import BoundedFrequency
from lvsd.daemon.hooks import run_hook
from lvsd.daemon.notify import Notifier, watchdog_interval
from lvsd.ipvs.backend import Backend, BatchError, IPVSError, Op, OpKind
from lvsd.ipvs.model import ServiceEntry, ServiceKey, Timeouts, ValueInvalid

log = logging.getLogger("lvsd")

#: Coalescing window: bursts of health transitions within it become one kernel batch.
MIN_INTERVAL = 0.002
#: Ops logged one line each; above this a batch is summarised (every op still at debug level).
LOG_OPS_MAX = 50


def load(path: str) -> Config:
    """Load and validate a config file (raises ConfigError or OSError)."""
    from lvsd.config.load import load_config

    return load_config(path)


class StartError(Exception):
    """The daemon cannot start (one line for the user: a component refused the config)."""


@dataclass
class Stats:
    """Counters behind /metrics and /status."""

    started: float = field(default_factory=time.time)
    reconciles: Counter = field(default_factory=Counter)  # by result: ok / error
    reconcile_seconds: float = 0.0
    last_reconcile: float = 0.0  # wall time
    last_reconcile_duration: float = 0.0
    last_reconcile_ok: bool = True
    ops: Counter = field(default_factory=Counter)  # applied, by OpKind value
    op_errors: Counter = field(default_factory=Counter)
    reloads: Counter = field(default_factory=Counter)  # ok / error / noop
    last_reload: float = 0.0
    last_reload_ok: bool = True
    last_reload_error: str = ""
    repairs: int = 0  # resyncs (or refused deltas) that found the kernel different from what lvsd wrote
    role_changes: int = 0


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
    except (OSError, ValueError, KeyError, TypeError) as e:
        return set(), f"{path} unreadable ({e})"


class Daemon:
    """The reconcile loop and its lifecycle. ``run()`` returns the process exit status."""

    def __init__(
        self,
        config: Config,
        backend: Backend,
        config_path: str | None = None,
        notifier: Notifier | None = None,
        *,
        checks_factory: Callable[[Callable[[ServerId, ServerHealth], None]], Any] | None = None,
        ha_factory: Callable[[Config, Backend, Callable[[str], None]], Any] | None = None,
        api: bool = True,
        install_signals: bool = True,
    ) -> None:
        self.config = config
        self.backend = backend
        self.config_path = config_path
        self.notifier = notifier or Notifier()
        self._checks_factory = checks_factory
        self._ha_factory = ha_factory
        self._want_api = api
        self._install_signals = install_signals
        self.checks: Any = None
        self.ha: Any = None
        self.api: Any = None
        self.role: str | None = None
        self.health: dict[ServerId, ServerHealth] = {}
        self.quorum: dict[str, bool] = {}
        self.managed: set[ServiceKey] = {s.key for s in config.services}
        self._recorded_as: tuple[str, frozenset[ServiceKey]] | None = None  # what _record() last wrote
        self._record_error = ""
        self.stats = Stats()
        self.state = "starting"
        self._runner = BoundedFrequency(MIN_INTERVAL, config.daemon.resync or 1e9)
        self._waiter: asyncio.Future | None = None  # the loop task's sleep; resolved by _kick()
        self._full = True  # next reconcile compares the whole table
        self._dirty: dict[str, str] = {}  # service name -> why (health transitions)
        # The managed services as the kernel has them, kept by lvsd (None = unknown: read the kernel).
        self._view: dict[ServiceKey, ServiceEntry] | None = None
        self._stop_requested = False
        self._reload_waiters: list[asyncio.Future] = []
        self._reload_requested = False
        self._tasks: list[asyncio.Task] = []
        self._by_name: dict[str, ServiceConfig] = {s.name: s for s in config.services}
        self._hooks: set[asyncio.Task] = set()
        self._reconcile_waiters: list[asyncio.Future] = []
        self.running = asyncio.Event()  # set once started and READY=1 sent

    # ------------------------------------------------------------------ requests (any context)

    def request_reload(self) -> asyncio.Future:
        """Ask for a reload; the future resolves to (ok, message) once it is done."""
        fut = asyncio.get_running_loop().create_future()
        self._reload_waiters.append(fut)
        self._reload_requested = True
        self._kick()
        return fut

    def _kick(self) -> None:
        """Wake the loop task: one event-loop step, no Event/wait_for task chain in between."""
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def request_stop(self) -> None:
        """Ask the loop to stop (SIGTERM/SIGINT)."""
        self._stop_requested = True
        self._kick()

    def request_resync(self) -> None:
        """Ask for a full compare with the kernel as soon as the bounds allow."""
        self._full = True
        self._runner.request()
        self._kick()

    def _on_health(self, sid: ServerId, h: ServerHealth) -> None:
        """CheckManager callback: record the verdict and schedule the server's service."""
        prev = self.health.get(sid)
        self.health[sid] = h
        name = sid[0]
        if prev is not None and prev.state is h.state and prev.weight == h.weight:
            return
        why = f"{h.state.name}" + (f" weight {h.weight}" if h.weight is not None else "")
        if h.reason:
            why += f": {h.reason}"
        self._dirty[name] = f"{name} {sid[1]} {why}"
        self._runner.request()
        self._kick()
        if prev is None or prev.state is not h.state:
            self._notify_server(sid, h)

    def _notify_server(self, sid: ServerId, h: ServerHealth) -> None:
        """Run the server's notify_up/notify_down hook for a transition into UP or DOWN."""
        svc = self._by_name.get(sid[0])
        if svc is None or h.state is Health.UNKNOWN:
            return
        srv = next((x for x in svc.servers if x.key == sid[1]), None)
        if srv is None:
            return
        argv = srv.notify_up if h.state is Health.UP else srv.notify_down
        self._run_hook(
            argv,
            {
                "LVSD_EVENT": h.state.value,
                "LVSD_SERVICE": svc.name,
                "LVSD_SERVER": str(srv.key),
                "LVSD_SERVER_ADDR": srv.key.addr,
                "LVSD_SERVER_PORT": str(srv.key.port),
                "LVSD_WEIGHT": str(h.weight if h.weight is not None else srv.dest.weight),
                "LVSD_REASON": h.reason,
            },
        )

    def _on_role(self, role: str) -> None:
        """HAManager callback: the director's role changed (HAManager logs it with its reason)."""
        if role != self.role:
            self.stats.role_changes += 1
        self.role = role
        self.notifier.status(self.status_line())

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> int:
        """Start, serve until asked to stop, stop. Returns the exit status."""
        loop = asyncio.get_running_loop()
        if self._install_signals:
            loop.add_signal_handler(signal.SIGHUP, self._sighup)
            loop.add_signal_handler(signal.SIGTERM, self.request_stop)
            loop.add_signal_handler(signal.SIGINT, self.request_stop)
        try:
            try:
                await self.start()
            except BaseException:
                await self.stop(failed=True)  # release checks/HA/API; leave the table as it is
                raise
            wd = watchdog_interval()
            if wd:
                self._tasks.append(asyncio.create_task(self._watchdog(wd)))
            self.notifier.ready(self.status_line())
            log.info("ready: %s", self.status_line())
            self.running.set()
            await self._loop()
        finally:
            if self._install_signals:
                for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
        await self.stop()
        return 0

    def _sighup(self) -> None:
        self._reload_requested = True
        self._kick()

    async def start(self) -> None:
        """Adopt (or flush) the running table, start checks, reconcile once, start HA and API."""
        cfg = self.config
        log.info(
            "starting: %d services, %d servers, backend %s, on_start=%s on_stop=%s",
            len(cfg.services),
            sum(len(s.servers) for s in cfg.services),
            self.backend.name,
            cfg.daemon.on_start,
            cfg.daemon.on_stop,
        )
        if self._want_api:
            from lvsd.daemon.api import ControlAPI

            self.api = ControlAPI(self)
            self.api.claim(cfg)  # a live socket = another lvsd: stop before touching the kernel
        actual = self.backend.dump()
        gone = sorted(k for k in actual if k not in self.managed and k in self._recorded())
        if gone:
            # managed at the last run (daemon.state_file), no longer in the config: removed from
            # it while lvsd was stopped. Managed again until the first reconcile deletes them.
            shown = ", ".join(str(k) for k in gone[:5]) + (", ..." if len(gone) > 5 else "")
            log.info("removing %d services the config no longer names (managed before): %s", len(gone), shown)
            self.managed |= set(gone)
        self._record()
        if cfg.daemon.on_start == "flush":
            ops = [Op.del_service(k) for k in actual if k in self.managed]
            if ops:
                log.info("on_start=flush: removing %d managed services before configuring", len(ops))
                self._view = None
                self._apply(ops, "on_start=flush")
        else:
            adopted = [k for k in actual if k in self.managed and k not in gone]
            if adopted:
                log.info("adopting %d services already in the kernel", len(adopted))
        await self._start_checks(cfg)
        self._reconcile(full=True, cause="start")
        await self._start_ha(cfg)
        if self._want_api:
            await self._start_api(cfg)
        self.state = "running"

    # ------------------------------------------------------------------ the managed services' record

    def _recorded(self) -> set[ServiceKey]:
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

    def _record(self) -> None:
        """Write the managed services to daemon.state_file when they changed (atomically: a new
        file renamed over the old). A failure is logged, never fatal."""
        path = self.config.daemon.state_file
        if not path or (path, self.managed) == self._recorded_as:
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
        except OSError as e:
            if self._record_error != str(e):
                log.warning("cannot write daemon.state_file %s: %s", path, e.strerror or e)
            self._record_error = str(e)

    async def _start_checks(self, cfg: Config) -> None:
        if not any(srv.checks for s in cfg.services for srv in s.servers):
            return
        factory = self._checks_factory
        if factory is None:
            try:
                from lvsd.checks.manager import CheckManager
            except ImportError as e:
                log.error("health checks configured but unavailable (%s): checked servers stay out", e)
                return
            factory = CheckManager
        self.checks = factory(self._on_health)
        await self.checks.start(cfg)
        self.health.update(self.checks.snapshot())

    async def _start_ha(self, cfg: Config) -> None:
        factory = self._ha_factory
        if factory is None:
            try:
                from lvsd.daemon.ha import HAManager
            except ImportError as e:
                log.warning("HA unavailable (%s): no role, no sync daemon", e)
                return
            factory = HAManager
        self.ha = factory(cfg, self.backend, self._on_role)
        try:
            await self.ha.start()
        except Exception as e:
            if type(e).__name__ != "HAError":
                raise
            raise StartError(f"HA: {e}") from None

    async def _start_api(self, cfg: Config) -> None:
        if self.api is None:
            from lvsd.daemon.api import ControlAPI

            self.api = ControlAPI(self)
        await self.api.start(cfg)

    async def stop(self, failed: bool = False) -> None:
        """Stop checks, HA and API; leave or remove the managed services as ``on_stop`` says
        (``failed``: start-up failed, leave the table untouched)."""
        self.state = "stopping"
        on_stop = "keep" if failed else self.config.daemon.on_stop
        self.notifier.stopping(f"stopping (on_stop={on_stop})")
        log.info("stopping (on_stop=%s)", on_stop)
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks.clear()
        if self.checks is not None:
            await self._guard("stopping checks", self.checks.stop())
        if on_stop == "remove":
            try:
                actual = self.backend.dump()
                ops = [Op.del_service(k) for k in actual if k in self.managed]
                if ops:
                    log.info("on_stop=remove: removing %d managed services", len(ops))
                    self._view = None
                    self._apply(ops, "on_stop=remove")
            except (IPVSError, OSError) as e:
                log.error("on_stop=remove failed: %s", e)
        if self.ha is not None:
            await self._guard("stopping HA", self.ha.stop(on_stop))
        if self.api is not None:
            await self._guard("stopping the API", self.api.stop())
            self.api = None
        if self._hooks:  # let running hooks finish (each has its own timeout)
            await asyncio.wait(list(self._hooks), timeout=self.config.daemon.hook_timeout + 1)
        for t in list(self._hooks):
            t.cancel()
        for fut in self._reload_waiters:
            if not fut.done():
                fut.set_result((False, "daemon stopping"))
        self._reload_waiters.clear()
        self.state = "stopped"
        log.info("stopped")

    @staticmethod
    async def _guard(what: str, coro: Any) -> None:
        try:
            await asyncio.wait_for(coro, 30)
        except Exception as e:  # a failing component must not keep the others from stopping
            log.error("%s failed: %s", what, e)

    async def _watchdog(self, interval: float) -> None:
        """WATCHDOG=1 from the event loop: a blocked loop stops the pings and systemd restarts us."""
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval)

    # ------------------------------------------------------------------ the loop

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stop_requested:
            if self._reload_requested:
                self._reload_requested = False
                waiters, self._reload_waiters = self._reload_waiters, []
                result = await self.reload()
                for fut in waiters:
                    if not fut.done():
                        fut.set_result(result)
                continue
            delay = self._runner.delay(loop.time())
            if delay > 0:
                fut = self._waiter = loop.create_future()
                timer = loop.call_later(delay, _resolve, fut)
                try:
                    await fut
                finally:
                    timer.cancel()
                    self._waiter = None
                continue
            pending = self._runner.pending
            retry = self._runner.failures > 0
            if retry:
                cause = "retry"
            elif not pending:
                cause = "resync"  # nobody asked: the periodic compare that repairs outside edits
            else:
                cause = "requested"
            self._reconcile(full=self._full or not pending or retry, cause=cause)
            await asyncio.sleep(0)  # let checks and the API run between reconciles

    def _reconcile(self, full: bool, cause: str = "") -> bool:
        """One reconcile pass: read, diff, apply. Returns True on success; never raises."""
        loop_time = asyncio.get_running_loop().time()
        self._runner.started(loop_time)
        dirty, self._dirty = self._dirty, {}
        t0 = time.perf_counter()
        ok = True
        try:
            if full:
                self._full = False
                self._full_pass(cause)
            else:
                ops, desired, cached = self._plan_services(set(dirty))
                why = "; ".join(dirty.values()) if len(dirty) <= 3 else f"{len(dirty)} services changed health"
                try:
                    if ops:
                        self._apply(ops, why)
                except (IPVSError, OSError):
                    if not cached:
                        raise
                    # lvsd's view was wrong (an outside edit since the last resync): compare
                    # with the kernel now instead of waiting for the retry backoff
                    log.warning("kernel differs from lvsd's view (edited outside lvsd?): full reconcile")
                    self.stats.repairs += 1
                    full = True
                    self._full_pass("repair")
                else:
                    if self._view is not None:
                        self._view.update(desired)
            if full:
                self.managed = {s.key for s in self.config.services}
                self._record()
        except (IPVSError, OSError, ValueInvalid) as e:
            ok = False
            self._full = True
            self._view = None
            if not getattr(e, "lvsd_logged", False):  # _apply logged refused ops one by one
                log.error("reconcile failed: %s", e)
        except Exception as e:  # a bug must not end the loop: log it and retry with backoff
            ok = False
            self._full = True
            self._view = None
            log.exception("reconcile failed unexpectedly: %s", e)
        dt = time.perf_counter() - t0
        self._runner.finished(asyncio.get_running_loop().time(), ok)
        st = self.stats
        st.reconciles["ok" if ok else "error"] += 1
        st.reconcile_seconds += dt
        st.last_reconcile = time.time()
        st.last_reconcile_duration = dt
        if ok != st.last_reconcile_ok:
            refused = sum(st.op_errors.values())
            self.notifier.status(
                self.status_line() if ok else f"kernel update failing ({refused} ops refused so far), retrying"
            )
        st.last_reconcile_ok = ok
        if not ok:
            log.info("retrying in %.1fs", self._runner.backoff)
        waiters, self._reconcile_waiters = self._reconcile_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(ok)
        return ok

    async def wait_reconciled(self) -> bool:
        """Wait for the end of the next reconcile pass; its result (for tests and tools)."""
        fut = asyncio.get_running_loop().create_future()
        self._reconcile_waiters.append(fut)
        return await fut

    def _full_pass(self, cause: str) -> None:
        """Compare the whole table with a fresh dump and apply the difference; on success lvsd's
        view of its services is exactly the desired table (raises on failure, view dropped)."""
        self._view = None
        ops, desired = self._plan_full()
        if cause == "resync" and ops:
            self.stats.repairs += 1
            log.warning("resync: kernel differs from the desired table (edited outside lvsd?), repairing")
        if ops:
            self._apply(ops, cause)
        self._view = desired

    def _plan_full(self) -> tuple[list[Op], dict[ServiceKey, ServiceEntry]]:
        """Ops for the whole table (one dump, health refreshed from the checks, one keyed diff)
        and the desired table they produce."""
        cfg = self.config
        if self.checks is not None:
            snap = self.checks.snapshot()
            valid = {srv.id for s in cfg.services for srv in s.servers}
            self.health = {sid: h for sid, h in snap.items() if sid in valid}
        actual = self.backend.dump()
        desired, states = plan_table(cfg, self.health, actual, self.quorum)
        self._update_quorum(states, None)
        ops = diff(desired, actual, self.managed)
        t = cfg.ipvs.timeouts
        if t is not None:
            have = self.backend.timeouts()
            want = Timeouts(
                t.tcp or have.tcp, t.tcp_fin or have.tcp_fin, t.udp or have.udp
            )
            if want != have:
                ops.insert(0, Op.set_timeouts(t))
        return ops, desired

    def _plan_services(self, names: set[str]) -> tuple[list[Op], dict[ServiceKey, ServiceEntry], bool]:
        """Ops for the named services only (diffed against lvsd's view of them, else read from
        the kernel), never deleting a service; also their desired entries and whether the view
        was used."""
        names = {n for n in names if n in self._by_name}
        if not names:
            return [], {}, False
        actual: dict[ServiceKey, ServiceEntry] = {}
        view = self._view
        cached = view is not None
        for name in names:
            key = self._by_name[name].key
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
        desired, states = plan_table(self.config, self.health, actual, self.quorum, only=names)
        self._update_quorum(states, names)
        return diff(desired, actual, ()), desired, cached

    def _update_quorum(self, new: dict[str, bool], names: set[str] | None) -> None:
        """Take the new quorum states (all services, or ``names``); log transitions, run hooks."""
        for name, below in new.items():
            before = self.quorum.get(name)
            if before is None and not below:
                continue
            if before == below:
                continue
            svc = self._by_name.get(name)
            if svc is None:
                continue
            sorry = f", sorry server {svc.sorry_server.key}" if svc.sorry_server is not None else ""
            if below:
                log.warning("%s: below quorum %d%s", name, svc.quorum, sorry + " in" if sorry else "")
                self._run_hook(svc.quorum_down, {"LVSD_EVENT": "quorum_down", "LVSD_SERVICE": name})
            else:
                log.info("%s: quorum %d restored%s", name, svc.quorum, sorry + " out" if sorry else "")
                self._run_hook(svc.quorum_up, {"LVSD_EVENT": "quorum_up", "LVSD_SERVICE": name})
        if names is None:
            self.quorum = new
        else:
            self.quorum.update(new)

    def _run_hook(self, argv: tuple[str, ...], env: dict[str, str]) -> None:
        """Run a notify hook in the background with a timeout; never blocks the loop."""
        if not argv:
            return
        task = asyncio.get_running_loop().create_task(self._hook(argv, env))
        self._hooks.add(task)
        task.add_done_callback(self._hooks.discard)

    async def _hook(self, argv: tuple[str, ...], env: dict[str, str]) -> None:
        result = await run_hook(argv, env, self.config.daemon.hook_timeout)
        if result.startswith("cannot run"):
            log.error("hook %s", result)
        elif result != "ok":
            log.warning("hook %s (%s): %s", argv[0], env.get("LVSD_EVENT", ""), result)

    def _apply(self, ops: list[Op], why: str) -> None:
        """Apply one batch, logging what changed and why; on failure log each refused op and raise."""
        try:
            self.backend.apply(ops)  # logged afterwards: formatting lines is not on the latency path
        except BatchError as e:
            _log_ops(e.applied, why)
            for op in e.applied:
                self.stats.ops[op.kind.value] += 1
            for op, err in e.failed[:LOG_OPS_MAX]:
                self.stats.op_errors[op.kind.value] += 1
                log.error("kernel refused %s: %s", describe(op), err.strerror)
            if len(e.failed) > LOG_OPS_MAX:
                log.error("... and %d more refused ops", len(e.failed) - LOG_OPS_MAX)
            e.lvsd_logged = True  # type: ignore[attr-defined]
            raise
        except IPVSError as e:
            op = e.op if isinstance(e.op, Op) else None
            self.stats.op_errors[op.kind.value if op else "unknown"] += 1
            log.error("kernel refused %s: %s", describe(op) if op else e.op, e.strerror)
            e.lvsd_logged = True  # type: ignore[attr-defined]
            raise
        _log_ops(ops, why)
        stats = self.stats.ops
        for op in ops:
            stats[op.kind.value] += 1

    # ------------------------------------------------------------------ reload

    async def reload(self) -> tuple[bool, str]:
        """Re-read the config file; keep the running config if it is invalid. Returns (ok, message)."""
        from lvsd.config.load import ConfigError

        path = self.config_path
        st = self.stats
        st.last_reload = time.time()
        if path is None:
            return False, "no config file to reload"
        self.notifier.reloading("reloading " + path)
        try:
            # Parsing 10,000 servers takes a few hundred ms of pure Python: do it off the loop so
            # checks, the API and the watchdog keep running (the GIL is released every 5 ms).
            new = await asyncio.to_thread(load, path)
        except ConfigError as e:
            errors = list(getattr(e, "errors", None) or [str(e)])
            msg = f"reload failed, keeping the running config: {'; '.join(errors)}"
            return self._reload_failed(msg)
        except OSError as e:
            return self._reload_failed(f"reload failed, keeping the running config: {path}: {e.strerror or e}")
        old = self.config
        if new == old:
            st.reloads["noop"] += 1
            st.last_reload_ok = True
            st.last_reload_error = ""
            log.info("reload: %s unchanged", path)
            self.notifier.ready(self.status_line())
            return True, "unchanged"
        log.info("reload: %s", summarize_change(old, new))
        self.config = new
        self._by_name = {s.name: s for s in new.services}
        self.managed |= {s.key for s in new.services}  # keep the old keys until their deletion succeeds
        self._record()
        self.quorum = {n: v for n, v in self.quorum.items() if n in self._by_name}
        self._runner.max_interval = new.daemon.resync or 1e9
        if new.daemon.log_level != old.daemon.log_level:
            logging.getLogger("lvsd").setLevel(getattr(logging, new.daemon.log_level.upper(), logging.INFO))
        if self.checks is not None:
            await self._guard("reloading checks", self.checks.reload(new))
        else:
            await self._start_checks(new)
        ok = self._reconcile(full=True, cause="reload")
        if self.ha is not None:
            await self._guard("reloading HA", self.ha.reload(new))
        if self.api is not None and new.api != old.api:
            log.warning("reload: [api] changes take effect at the next restart")
        st.reloads["ok"] += 1
        st.last_reload_ok = True
        st.last_reload_error = ""
        self.notifier.ready(self.status_line())
        return True, "reloaded" if ok else "reloaded; kernel update failing, retrying"

    def _reload_failed(self, msg: str) -> tuple[bool, str]:
        st = self.stats
        st.reloads["error"] += 1
        st.last_reload_ok = False
        st.last_reload_error = msg
        log.error("%s", msg)
        self.notifier.ready(msg)
        return False, msg

    # ------------------------------------------------------------------ reporting

    def status_line(self) -> str:
        """One line for systemd's STATUS and lvsctl status."""
        cfg = self.config
        n_srv = sum(len(s.servers) for s in cfg.services)
        down = sum(1 for h in self.health.values() if h.state is Health.DOWN)
        parts = [f"{len(cfg.services)} services, {n_srv} servers"]
        if self.checks is not None:
            parts.append(f"{down} down")
        if self.role:
            parts.append(f"role {self.role}")
        if not self.stats.last_reload_ok:
            parts.append("last reload FAILED")
        return "; ".join(parts)

    def server_states(self) -> list[dict[str, Any]]:
        """Per service: its servers with configured weight, health and reason (for the API)."""
        out = []
        for svc in self.config.services:
            servers = []
            for srv in svc.servers:
                h = server_health(svc, srv, self.health)
                servers.append(
                    {
                        "server": str(srv.key),
                        "address": srv.address or srv.key.addr,
                        "weight": srv.dest.weight,
                        "health": "up" if not srv.checks else h.state.value,
                        "checked": bool(srv.checks),
                        "dynamic_weight": h.weight,
                        "reason": h.reason,
                        "on_failure": srv.on_failure,
                    }
                )
            out.append(
                {
                    "name": svc.name,
                    "key": str(svc.key),
                    "scheduler": svc.service.scheduler,
                    "quorum": svc.quorum,
                    "below_quorum": self.quorum.get(svc.name, False),
                    "servers": servers,
                }
            )
        return out


def _resolve(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)


def _log_ops(ops: list[Op], why: str) -> None:
    """What a batch changed: one line per op, or a summary for a big batch (ops at debug)."""
    if not ops or not log.isEnabledFor(logging.INFO):
        return
    if len(ops) <= LOG_OPS_MAX:
        for op in ops:
            log.info("%s (%s)", describe(op), why)
        return
    summary = Counter(op.kind.value for op in ops)
    log.info("applied %d ops (%s) (%s)", len(ops), ", ".join(f"{n} {k}" for k, n in summary.items()), why)
    if log.isEnabledFor(logging.DEBUG):
        for op in ops:
            log.debug("%s", describe(op))


def describe(op: Op) -> str:
    """An op as one readable phrase: what changes in the kernel."""
    k = op.kind
    if k in (OpKind.ADD_SERVICE, OpKind.EDIT_SERVICE) and op.service is not None:
        s = op.service
        extra = f" scheduler {s.scheduler}"
        if s.persistent:
            extra += f" persistent {s.timeout}s"
        return f"{k.value} {s.key}{extra}"
    if k in (OpKind.ADD_DEST, OpKind.EDIT_DEST) and op.dest is not None:
        d = op.dest
        from lvsd.ipvs.model import Forward

        fwd = {0: "nat", 1: "local", 2: "tun", 3: "dr", 4: "bypass"}.get(int(d.forward), str(d.forward))
        if d.forward == Forward.TUNNEL:
            fwd += f"/{d.tun_type}"
        return f"{k.value} {op.key} -> {d.key} weight {d.weight} {fwd}"
    if k is OpKind.SET_TIMEOUTS and op.timeouts is not None:
        t = op.timeouts
        return f"set-timeouts tcp {t.tcp} tcpfin {t.tcp_fin} udp {t.udp}"
    return str(op)


def summarize_change(old: Config, new: Config) -> str:
    """What a reload changes, by service name: added, removed, changed."""
    o = {s.name: s for s in old.services}
    n = {s.name: s for s in new.services}
    added = [x for x in n if x not in o]
    removed = [x for x in o if x not in n]
    changed = [x for x in n if x in o and n[x] != o[x]]
    parts = []
    for label, names in (("added", added), ("removed", removed), ("changed", changed)):
        if names:
            shown = ", ".join(names[:10]) + (f" (+{len(names) - 10})" if len(names) > 10 else "")
            parts.append(f"{label} {shown}")
    other = [
        f for f in ("daemon", "ipvs", "ha", "sync", "api", "metrics") if getattr(old, f) != getattr(new, f)
    ]
    if other:
        parts.append("changed [" + "], [".join(other) + "]")
    return "; ".join(parts) or "no change"
