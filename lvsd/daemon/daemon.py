"""The lvsd daemon's lifecycle: start, reload, stop, signals, and the loop that owns reconciles.

One asyncio task (``_loop``) owns the kernel table. Everything else (signals, health transitions,
API requests, the resync timer) only records what it wants and wakes that task, ExaBGP style, so
a signal handler never does work and two reconciles never interleave. What a reconcile does
(plan, apply, lvsd's view of its services, quorum, the state-file record) is the reconciler's
(``lvsd.daemon.reconciler``); when one runs is decided here, by a bounded-frequency schedule with
failure backoff (``lvsd.core.runner``). A failed reconcile is retried; it never ends the loop.
This module also wires the checks, HA, the control API and systemd notifications.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import logging
import signal
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from lvsd.config.model import Config, ServerId, ServiceConfig
from lvsd.core.desired import server_health
from lvsd.core.health import Health, ServerHealth
from lvsd.core.plan import NO_CHANGE, describe, summarize_change
from lvsd.core.runner import BoundedFrequency
from lvsd.daemon import early
from lvsd.daemon.hooks import Hooks
from lvsd.daemon.listeners import loop_exception_handler
from lvsd.daemon.notify import Notifier, watchdog_interval
from lvsd.daemon.overrides import OverrideStore, overrides_path
from lvsd.daemon.reconciler import Reconciler, Stats, recorded_services
from lvsd.ipvs.backend import Backend, IPVSError
from lvsd.ipvs.model import ServiceKey

__all__ = ["Daemon", "StartError", "Stats", "describe", "load", "recorded_services", "summarize_change"]

log = logging.getLogger("lvsd")

#: Coalescing window: bursts of health transitions within it become one kernel batch.
MIN_INTERVAL = 0.002


def load(path: str) -> Config:
    """Load and validate a config file (raises ConfigError or OSError)."""
    from lvsd.config import load_config

    return load_config(path)


class StartError(Exception):
    """The daemon cannot start (one line for the user: a component refused the config).
    ``exit_status``: lvsd's exit status for it (78, EX_CONFIG: the file itself must change)."""

    exit_status = 1


class Daemon:
    """The lifecycle around one ``Reconciler``. ``run()`` returns the process exit status."""

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
        self.stats = Stats()
        self.hooks = Hooks(config.daemon.hook_timeout)
        self.reconciler = Reconciler(config, backend, self.stats, self.hooks)
        #: lvsctl disable/drain/weight and drain_on_remove; the reconciler plans with ``active``
        self.overrides = OverrideStore(overrides_path(config))
        self.reconciler.overrides = self.overrides.active
        self.state = "starting"
        self._runner = BoundedFrequency(MIN_INTERVAL, config.daemon.resync or 1e9)
        self._waiter: asyncio.Future[None] | None = None  # the loop task's sleep; resolved by _kick()
        self._full = True  # next reconcile compares the whole table
        self._dirty: dict[str, dict[str, str]] = {}  # service name -> server -> why (health transitions)
        self._retry: asyncio.TimerHandle | None = None  # the full pass that retries refused ops
        self._stop_requested = False
        self._reload_waiters: list[asyncio.Future[tuple[bool, str]]] = []
        self._reload_requested = False
        self._tasks: list[asyncio.Task[None]] = []
        self._reconcile_waiters: list[asyncio.Future[bool]] = []
        self.running = asyncio.Event()  # set once started and READY=1 sent

    # ------------------------------------------------------------------ the reconciler's state, read here

    @property
    def config(self) -> Config:
        """The running config (the reconciler's: a reload hands it the new one)."""
        return self.reconciler.config

    @property
    def health(self) -> dict[ServerId, ServerHealth]:
        """The checks' verdicts as the last reconcile or transition left them."""
        return self.reconciler.health

    @property
    def quorum(self) -> dict[str, bool]:
        """Per service name: below quorum (sorry server in)."""
        return self.reconciler.quorum

    @property
    def managed(self) -> set[ServiceKey]:
        """The services lvsd owns in the kernel (configured, or awaiting deletion)."""
        return self.reconciler.managed

    # ------------------------------------------------------------------ requests (any context)

    def request_reload(self) -> asyncio.Future[tuple[bool, str]]:
        """Ask for a reload; the future resolves to (ok, message) once it is done."""
        fut: asyncio.Future[tuple[bool, str]] = asyncio.get_running_loop().create_future()
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
        health = self.reconciler.health
        prev = health.get(sid)
        health[sid] = h
        name = sid[0]
        if prev is not None and prev.state is h.state and prev.weight == h.weight:
            return
        why = f"{h.state.name}" + (f" weight {h.weight}" if h.weight is not None else "")
        if h.reason:
            why += f": {h.reason}"
        self._dirty.setdefault(name, {})[str(sid[1])] = f"{name} {sid[1]} {why}"
        self._runner.request()
        self._kick()
        if prev is None or prev.state is not h.state:
            self._notify_server(sid, h)

    def _notify_server(self, sid: ServerId, h: ServerHealth) -> None:
        """Run the server's notify_up/notify_down hook for a transition into UP or DOWN."""
        svc = self.reconciler.by_name.get(sid[0])
        if svc is None or h.state is Health.UNKNOWN:
            return
        srv = next((x for x in svc.servers if x.key == sid[1]), None)
        if srv is None:
            return
        argv = srv.notify_up if h.state is Health.UP else srv.notify_down
        self.hooks.run(
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

    def request_services(self, changes: dict[str, str]) -> None:
        """Schedule the named services' pass (an override changed them: name -> why)."""
        for name, why in changes.items():
            self._dirty.setdefault(name, {})["override"] = why
        if changes:
            self._runner.request()
            self._kick()

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
            loop.set_exception_handler(loop_exception_handler)  # out of descriptors: throttled lines
            loop.add_signal_handler(signal.SIGHUP, self._sighup)
            loop.add_signal_handler(signal.SIGTERM, self.request_stop)
            loop.add_signal_handler(signal.SIGINT, self.request_stop)
            if early.take():  # a SIGHUP before the loop ran: reload once started
                self._sighup()
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
                early.install()  # a SIGHUP while stopping is ignored, not fatal
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
        if not cfg.services and not cfg.daemon.allow_empty:  # would it delete what lvsd recorded?
            from lvsd.config.load import refuse_empty
            from lvsd.core.plan import retired

            rc = self.reconciler
            why = refuse_empty(cfg, retired(rc.managed, rc.recorded(), self.backend.dump()))
            if why:
                err = StartError(why)
                err.exit_status = 78  # EX_CONFIG: systemd must not restart into the same file
                raise err
        self.overrides.load()  # before the first plan: a restart keeps disabled servers out
        self.overrides.reloaded(cfg, cfg, why="the config no longer has the server")
        self.reconciler.adopt()
        await self._start_checks(cfg)
        self._tasks.append(
            asyncio.create_task(self.overrides.watch(lambda: self.config, self.backend, self.request_services))
        )
        _freeze_heap(collect=False)  # before the first pass: its 50,000 ops need no walk of the config
        self._reconcile(full=True, cause="start")
        await self._start_ha(cfg)
        if self._want_api:
            await self._start_api(cfg)
        self.state = "running"
        _freeze_heap(collect=False)

    async def _start_checks(self, cfg: Config) -> None:
        if not any(srv.checks for s in cfg.services for srv in s.servers):
            return
        factory = self._checks_factory or _optional_class(
            "lvsd.checks.manager", "CheckManager", logging.ERROR,
            "health checks configured but unavailable (%s): checked servers stay out",
        )
        if factory is None:
            return
        self.checks = factory(self._on_health)
        await self.checks.start(cfg)
        self.reconciler.health_source = self.checks.snapshot
        self.reconciler.health.update(self.checks.snapshot())

    async def _start_ha(self, cfg: Config) -> None:
        factory = self._ha_factory or _optional_class(
            "lvsd.daemon.ha", "HAManager", logging.WARNING, "HA unavailable (%s): no role, no sync daemon"
        )
        if factory is None:
            return
        self.ha = factory(cfg, self.backend, self._on_role)
        try:
            await self.ha.start()
        except Exception as e:
            if type(e).__name__ != "HAError":
                raise
            raise StartError(f"HA: {e}") from None
        await self._announce()

    async def _announce(self) -> None:
        """bgp mode: the announcer decides again from the last pass's quorum verdicts and repairs
        its interface (after every reconcile, the periodic resync included)."""
        if getattr(self.ha, "announcer", None) is not None:
            await self._guard("announcing", self.ha.announce_update(self.reconciler.announce_inputs()))
        if getattr(self.ha, "vrrp", None) is not None:  # vrrp track_services: the same verdicts move the priority
            r = self.reconciler
            self.ha.track_services(r.config, r.health, r.quorum)

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
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
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
        if on_stop == "remove" and getattr(self.ha, "announcer", None) is not None:
            try:  # bgp mode: withdraw first, let the routers move the flows, then remove
                await self.ha.before_remove()
            except Exception as e:
                log.error("withdrawing the VIPs failed: %s", e)
        if on_stop == "remove":
            try:
                self.reconciler.remove_managed("on_stop=remove")
            except (IPVSError, OSError) as e:
                log.error("on_stop=remove failed: %s", e)
        if self.ha is not None:
            await self._guard("stopping HA", self.ha.stop(on_stop))
        if self.api is not None:
            await self._guard("stopping the API", self.api.stop())
            self.api = None
        await self.hooks.drain()  # let running hooks finish (each has its own timeout)
        for fut in self._reload_waiters:
            if not fut.done():
                fut.set_result((False, "daemon stopping"))
        self._reload_waiters.clear()
        self.state = "stopped"
        gc.unfreeze()  # what the daemon held is ordinary garbage again
        log.info("stopped")

    @staticmethod
    async def _guard(what: str, coro: Coroutine[Any, Any, Any]) -> None:
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
                try:
                    result = await self.reload()
                except Exception as e:  # a bug past the loader must not end health checking
                    log.error("reload: unexpected error", exc_info=True)
                    result = self._reload_failed(f"reload failed: {type(e).__name__}: {e}")
                for fut in waiters:
                    if not fut.done():
                        fut.set_result(result)
                continue
            delay = self._runner.delay(loop.time())
            if delay > 0:
                sleep: asyncio.Future[None] = loop.create_future()
                self._waiter = sleep
                timer = loop.call_later(delay, _resolve, sleep)
                try:
                    await sleep
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
            await self._announce()
            await asyncio.sleep(0)  # let checks and the API run between reconciles

    def _reconcile(self, full: bool, cause: str = "") -> bool:
        """One reconcile pass (the reconciler's), timed by the schedule; never raises."""
        loop = asyncio.get_running_loop()
        self._runner.started(loop.time())
        dirty, self._dirty = self._dirty, {}
        if full:
            self._full = False
        rec = self.reconciler
        ok = rec.reconcile(full, dirty, cause)
        if not ok:
            self._full = True
        self._runner.finished(loop.time(), ok)
        self._schedule_retry(loop)
        st = self.stats
        complete = ok and not rec.refused  # every op the plan wanted is in the kernel
        if complete != st.last_reconcile_ok:
            refused = sum(st.op_errors.values())
            self.notifier.status(
                self.status_line() if complete else f"kernel update failing ({refused} ops refused so far), retrying"
            )
        st.last_reconcile_ok = complete
        if not ok:
            log.info("retrying in %.1fs", self._runner.backoff)
        waiters, self._reconcile_waiters = self._reconcile_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(ok)
        return ok

    def _schedule_retry(self, loop: asyncio.AbstractEventLoop) -> None:
        """A full pass when the earliest refused op's backoff ends (its own retry: health changes
        of every service keep being applied in between)."""
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        at = self.reconciler.retry_at()
        if at is None:
            return
        delay = max(0.0, at - time.monotonic())
        self._retry = loop.call_later(delay, self.request_resync)

    async def wait_reconciled(self) -> bool:
        """Wait for the end of the next reconcile pass; its result (for tests and tools)."""
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._reconcile_waiters.append(fut)
        return await fut

    # ------------------------------------------------------------------ reload

    async def reload(self) -> tuple[bool, str]:
        """Re-read the config file; keep the running config if it is invalid. Returns (ok, message)."""
        from lvsd.config import ConfigError

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
        except Exception as e:  # a loader bug must not end the daemon: log it once, keep running
            log.error("reload: unexpected error reading %s", path, exc_info=True)
            return self._reload_failed(f"reload failed, keeping the running config: {path}: {type(e).__name__}: {e}")
        from lvsd.config.load import refuse_empty

        why = refuse_empty(new, self.reconciler.managed)  # an emptied or truncated file
        if why:
            return self._reload_failed(f"reload refused, keeping the running config: {why}")
        old = self.config
        change = summarize_change(old, new)  # compares each service once: it is the no-op test too
        if change == NO_CHANGE:
            st.reloads["noop"] += 1
            st.last_reload_ok = True
            st.last_reload_error = ""
            log.info("reload: %s unchanged", path)
            self.notifier.ready(self.status_line())
            return True, "unchanged"
        log.info("reload: %s", change)
        self.reconciler.set_config(new)  # keeps the old keys managed until their deletion succeeds
        self.overrides.path = overrides_path(new)
        self.overrides.reloaded(old, new)  # drops removed servers' overrides, drains drain_on_remove ones
        self.hooks.timeout = new.daemon.hook_timeout
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
            await self._announce()
        if self.api is not None and new.api != old.api:
            log.warning("reload: [api] changes take effect at the next restart")
        _freeze_heap(collect=True)  # and, now and then, a full collection: stopped probes' cycles
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
        if self.reconciler.refused:
            parts.append(f"{len(self.reconciler.refused)} kernel ops refused")
        return "; ".join(parts)

    def server_states(self, services: Iterable[ServiceConfig] | None = None) -> list[dict[str, Any]]:
        """Per service (every configured one, or only ``services``: the API's filtered page): its
        servers with configured weight, health and reason (for the API)."""
        out = []
        for svc in self.config.services if services is None else services:
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


#: objects frozen at start or right after the last full collection (see _freeze_heap)
_frozen_after_collect = 0


def _freeze_heap(collect: bool) -> None:
    """Move every live object out of the cyclic collector's reach (``gc.freeze``): the config, the
    tables and the check engine live as long as the daemon, and each full collection walked all
    of them, 0.8 s with the event loop blocked at 50,000 servers (docs/performance.md, "memory
    per server"). Garbage in reference cycles that was frozen is only found by a full collection
    after ``gc.unfreeze``: with ``collect`` (a reload) one runs when the frozen heap has grown by a
    quarter since the last one (CPython's own rule for full collections), so such garbage stays
    bounded while a reload that only changes weights pays no collection (160 ms at 50,000)."""
    global _frozen_after_collect
    if collect and gc.get_freeze_count() > _frozen_after_collect * 5 // 4:
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        _frozen_after_collect = gc.get_freeze_count()
        return
    gc.freeze()
    if not collect:  # start: the heap as it starts is the measure
        _frozen_after_collect = gc.get_freeze_count()


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _optional_class(module: str, name: str, level: int, message: str) -> Any | None:
    """``module.name`` imported on first use, or None after logging ``message`` (its %s: the
    ImportError): checks and HA need optional packages the rest of the daemon runs without."""
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError as e:
        log.log(level, message, e)
        return None
