"""The director's HA role and what follows from it: the kernel sync daemons, sysctls, hooks.

The role (master, backup, fault) comes from one source, ``[ha] mode``: ``static`` (the config
says), ``external`` (``lvsctl role`` / ``set_role``, for keepalived or Pacemaker notify scripts)
or ``vrrp`` (lvsd's own VRRPv3, ``lvsd.daemon.vrrp``). On each role change the kernel's sync
daemons are made what ``[sync]`` wants for that role (through the Backend, never ipvsadm), then
``on_role`` is called and the ``notify_<role>`` hook runs in the background with a timeout.

At start the ``net.ipv4.vs`` sync sysctls are written (default threshold "3 0", refresh period
10 s) so that every connection, handshake-only and idle ones included, reaches the backup.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import time
from collections.abc import Callable, Mapping
from contextlib import suppress
from typing import Any

from lvsd.config.model import ROLES, Config, HAConfig, ServerId, SyncConfig
from lvsd.core import vrrp as core
from lvsd.core.health import ServerHealth
from lvsd.core.service_health import service_verdicts
from lvsd.ipvs.backend import Backend, IPVSError
from lvsd.ipvs.model import DaemonState, SyncDaemon, ValueInvalid

from .hooks import run_hook
from .links import Links, in_netns, open_links
from .vrrp import SocketFactory, VRRPError, VRRPInstance, open_advert_socket, open_xmit_socket

log = logging.getLogger("lvsd.ha")

SYSCTL_DIR = "/proc/sys/net/ipv4/vs"

_VRRP_ROLE = {
    core.State.MASTER: "master",
    core.State.BACKUP: "backup",
    core.State.FAULT: "fault",
    core.State.INITIALIZE: "backup",
}


class HAError(Exception):
    """A role request that cannot be honoured (wrong mode, unknown role); one line for the user."""


def daemon_matches(want: SyncDaemon, have: SyncDaemon) -> bool:
    """True if a running daemon is the one wanted; a 0/"" field in ``want`` means the kernel
    default, which the kernel reports as its actual value (224.0.0.81, 8848, ...)."""
    if (want.state, want.mcast_ifn, want.syncid) != (have.state, have.mcast_ifn, have.syncid):
        return False
    for f in ("sync_maxlen", "mcast_group", "mcast_port", "mcast_ttl"):
        w = getattr(want, f)
        if w and w != getattr(have, f):
            return False
    return True


def describe_daemon(d: SyncDaemon) -> dict:
    """A sync daemon as status() shows it."""
    return {
        "state": DaemonState(d.state).name.lower(),
        "interface": d.mcast_ifn,
        "syncid": d.syncid,
        "maxlen": d.sync_maxlen,
        "group": d.mcast_group,
        "port": d.mcast_port,
        "ttl": d.mcast_ttl,
    }


class HAManager:
    """Holds the role and keeps the sync daemons, sysctls and hooks in step with it.

    ``netns`` (optional) names a network namespace whose sysctls and interfaces are meant: tests
    run two directors in one process. The backend must already be opened in that namespace.

    In vrrp mode the links port is opened on first need with ``open_links(netns)`` (pyroute2,
    imported then) unless ``links`` is given; ``socket_factory`` opens the VRRP advert socket.
    Unit tests pass ``MemoryLinks`` and a fake socket factory: no root, no kernel."""

    def __init__(
        self,
        config: Config,
        backend: Backend,
        on_role: Callable[[str], None],
        *,
        netns: str | None = None,
        sysctl_dir: str = SYSCTL_DIR,
        links: Links | None = None,
        socket_factory: SocketFactory = open_advert_socket,
        xmit_factory: SocketFactory = open_xmit_socket,
    ) -> None:
        self.config = config
        self.backend = backend
        self.on_role = on_role
        self.netns = netns
        self.sysctl_dir = sysctl_dir
        self.role = ""
        self.role_since = 0.0
        self.role_reason = ""
        self.transitions = 0
        self.vrrp: VRRPInstance | None = None  # the first (or only) instance
        #: every VRRP instance by its label (``[[ha.instance]]`` name, or VI_<vrid>), and its state
        self.vrrps: dict[str, VRRPInstance] = {}
        self.vrrp_states: dict[str, core.State] = {}
        self._last_instance = ""
        self.links = links
        self.socket_factory = socket_factory
        self.xmit_factory = xmit_factory  # the virtual MAC's send-only advert socket
        self._own_links = links is None  # opened here, so closed here
        self.sync_error = ""
        self.sysctl_values: dict[str, str] = {}
        self.sysctl_errors: dict[str, str] = {}
        self.hook_results: dict[str, str] = {}
        self.sync_switch_seconds = 0.0  # how long the last daemon start/stop took in the kernel
        self._hooks: asyncio.Queue[tuple[str, str, str]] | None = None
        self._hook_worker: asyncio.Task | None = None
        self._started = False
        self._stopping = False
        self.announcer: Any = None  # bgp mode's lvsd.daemon.announce.Announcer
        self.announcer_options: dict[str, Any] = {}  # tests: clock, net_admin, sysctl_dir

    # --- life cycle ---
    async def start(self) -> None:
        """Write the sync sysctls, take the initial role, start VRRP in vrrp mode.
        Raises HAError if VRRP cannot start (no such interface, no address)."""
        self._hooks = asyncio.Queue()
        self._hook_worker = asyncio.create_task(self._run_hooks(), name="ha-hooks")
        self._write_sysctls(self.config.sync)
        self._started = True
        await self._start_source(self.config.ha)

    async def _start_source(self, ha: HAConfig) -> None:
        if ha.mode == "vrrp":
            self._set("backup", "vrrp starting")
            self.vrrp_states = {}
            cur = ha
            try:
                if self.links is None:
                    self.links = await open_links(self.netns)
                for cur in ha.vrrp_instances():
                    label = cur.label
                    inst = VRRPInstance(
                        cur,
                        self.links,
                        lambda st, label=label: self._on_vrrp(st, label),  # type: ignore[misc]  # bound per instance
                        socket_factory=self.socket_factory,
                        netns=self.netns,
                        xmit_factory=self.xmit_factory,
                    )
                    for other in self._group_of(label):
                        inst.tracked[f"group:{other}"] = (0, None)  # weight 0: fault while it is in fault
                    if self._group_of(label):
                        inst.may_master = lambda label=label: self._group_may_master(label)
                    inst.on_change = self._sync_groups
                    self.vrrps[label] = inst
                    self.vrrp = self.vrrp or inst
                    await inst.start()
            except (VRRPError, OSError, ValueError) as e:
                for inst in self.vrrps.values():
                    with suppress(Exception):
                        await inst.stop(resign=False)
                self.vrrp, self.vrrps = None, {}
                self._set("fault", f"vrrp cannot start: {e}")
                raise HAError(f"ha: VRRP cannot start on {cur.interface!r}: {e}") from None
        elif ha.mode == "bgp":
            await self._start_bgp()
        else:
            self._set(ha.role, f"{ha.mode} mode, from the config")

    # --- bgp mode (lvsd.daemon.announce): every director active, healthy VIPs announced ---
    async def _start_bgp(self) -> None:
        from .announce import AnnounceError, Announcer

        self._set("master", "bgp mode: every director active")
        try:
            if self.links is None:
                self.links = await open_links(self.netns)
            self.announcer = Announcer(self.links, self.config, netns=self.netns, **self.announcer_options)
            await self.announcer.start()
        except (AnnounceError, OSError) as e:
            self.announcer = None
            await self._close_links()
            raise HAError(str(e)) from None

    async def announce_update(self, inputs: list) -> None:
        """bgp mode: decide again from the services' quorum verdicts and repair the interface."""
        if self.announcer is not None:
            await self.announcer.update(inputs)

    async def set_drained(self, drained: bool) -> None:
        """lvsctl drain-director / undrain-director (HAError outside bgp mode)."""
        if self.announcer is None:
            raise HAError(
                f'drain-director: ha.mode is {self.config.ha.mode!r}; only mode "bgp" announces VIPs'
            )
        await self.announcer.set_drained(drained)

    async def before_remove(self) -> None:
        """on_stop = "remove" in bgp mode: withdraw every VIP and wait withdraw_grace first."""
        if self.announcer is not None:
            await self.announcer.withdraw_all("stopping (on_stop=remove)", self.announcer.bgp.withdraw_grace)

    async def reload(self, config: Config) -> None:
        """Apply a new config: the role source, VRRP parameters, sync daemon settings, sysctls.
        An unchanged VRRP instance keeps its state; an external role survives the reload."""
        old = self.config
        self.config = config
        if config.sync != old.sync:
            self._write_sysctls(config.sync)
        oh, nh = old.ha, config.ha

        def ident(h: HAConfig) -> list[tuple[str, str, int, int, int]]:
            return [
                (
                    i.label,
                    i.interface,
                    i.vrid,
                    i.version,
                    core.family_of([v.address for v in i.vips]) if i.vips else 0,
                )
                for i in h.vrrp_instances()
            ]

        same_instance = (
            oh.mode == nh.mode == "vrrp"
            and self.vrrp is not None
            and ident(oh) == ident(nh)
            and oh.groups == nh.groups
        )
        if same_instance:
            for inst_cfg in nh.vrrp_instances():
                await self.vrrps[inst_cfg.label].update(inst_cfg)
            self._apply_sync()
        elif oh.mode == nh.mode == "bgp" and self.announcer is not None:
            from .announce import AnnounceError

            try:
                await self.announcer.reload(config)
            except AnnounceError as e:
                log.error("ha: %s", e)
            self._apply_sync()
        elif oh.mode == nh.mode == "external":
            self._apply_sync()
        elif oh.mode == nh.mode == "static" and oh.role == nh.role:
            self._apply_sync()
        else:
            if self.vrrps:
                old_instances, self.vrrp, self.vrrps = list(self.vrrps.values()), None, {}
                self._stopping = True
                try:
                    for vr in old_instances:
                        await vr.stop(resign=True)
                finally:
                    self._stopping = False
            if self.announcer is not None:
                an, self.announcer = self.announcer, None
                await an.stop("remove")  # leaving bgp mode: withdraw, the interface goes
            if nh.mode not in ("vrrp", "bgp"):
                await self._close_links()
            await self._start_source(nh)

    async def stop(self, on_stop: str) -> None:
        """Leave: VRRP resigns (priority 0, addresses removed); sync daemons stay running with
        ``on_stop = "keep"`` and are stopped with ``"remove"``. Pending hooks get their timeout."""
        self._stopping = True
        for inst in self.vrrps.values():
            await inst.stop(resign=True)
        self._notify("stop", self.role)
        if self.announcer is not None:
            await self.announcer.stop(on_stop)
        await self._close_links()
        if on_stop == "remove" and self.config.sync is not None:
            self._set_daemons(())
        if self._hooks is not None and self._hook_worker is not None:
            with suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._hooks.join(), self.config.daemon.hook_timeout + 1)
            self._hook_worker.cancel()
            with suppress(asyncio.CancelledError):
                await self._hook_worker
        self._started = False

    async def hooks_done(self) -> None:
        """Wait until the notify hooks queued so far have finished (or been killed at their timeout)."""
        if self._hooks is not None:
            await self._hooks.join()

    async def _close_links(self) -> None:
        if self.links is not None and self._own_links:
            links, self.links = self.links, None
            await links.close()

    # --- role ---
    def set_role(self, role: str) -> None:
        """External mode: switch to ``role`` (master, backup or fault). HAError otherwise."""
        if role not in ROLES:
            raise HAError(f"role: must be master, backup or fault, got {role!r}")
        mode = self.config.ha.mode
        if mode != "external":
            raise HAError(f'role: ha.mode is {mode!r}; only mode "external" takes its role from lvsctl')
        self._set(role, "set by lvsctl role")

    def _sync_groups(self) -> None:
        """Each member of a sync group tracks the others' own fault with weight 0: one fails, all do."""
        for _name, members in self.config.ha.groups:
            for a in members:
                for b in members:
                    ia, ib = self.vrrps.get(a), self.vrrps.get(b)
                    if a != b and ia is not None and ib is not None:
                        ia.set_tracked(f"group:{b}", not ib.own_fault())

    def _group_of(self, label: str) -> list[str]:
        """The other members of ``label``'s sync group (``[[ha.group]]``)."""
        for _name, members in self.config.ha.groups:
            if label in members:
                return [m for m in members if m != label]
        return []

    def _group_may_master(self, label: str) -> bool:
        """A sync group member's gate (``core.group_may_master`` over the other members)."""
        others = [self.vrrps[m].state for m in self._group_of(label) if m in self.vrrps]
        return core.group_may_master(others)

    def _on_vrrp(self, state: core.State, label: str = "") -> None:
        """An instance changed state: its sync group follows it (to master, from master to
        backup, into and out of fault), and the director's role is master if any instance is
        master, fault if all are, else backup."""
        if self._stopping:
            return
        before = self.vrrp_states.get(label)
        self.vrrp_states[label] = state
        self._last_instance = label
        if (before is core.State.FAULT) != (state is core.State.FAULT):
            self._sync_groups()
        members = self._group_of(label)
        if members and before is not None:
            others = {m: self.vrrps[m].state.state for m in members if m in self.vrrps}
            for m, ev in core.group_orders(before, state, others).items():
                log.info("ha: sync group: %s follows %s to %s", m, label, state.value)
                self.vrrps[m].follow(ev)
        states = list(self.vrrp_states.values())
        if len(self.vrrps) <= 1:
            self._set(_VRRP_ROLE[state], f"vrrp {state.value}")
        elif core.State.MASTER in states:
            masters = sorted(k for k, v in self.vrrp_states.items() if v is core.State.MASTER)
            self._set("master", f"vrrp: master of {', '.join(masters)}")
        elif len(states) == len(self.vrrps) and all(s is core.State.FAULT for s in states):
            self._set("fault", "vrrp: every instance in fault")
        else:
            self._set("backup", f"vrrp {label} {state.value}")

    def _set(self, role: str, reason: str) -> None:
        prev = self.role
        changed = role != prev
        self.role = role
        self.role_reason = reason
        if changed:
            self.role_since = time.time()
            self.transitions += 1
            log.info("ha: role %s -> %s (%s)", prev or "none", role, reason)
        self._apply_sync()
        if changed:
            try:
                self.on_role(role)
            except Exception:  # a broken observer must not stop the role change
                log.exception("ha: on_role callback failed")
            self._notify(role, prev)

    def _notify(self, role: str, prev: str) -> None:
        """Queue the hooks of a role change (or "stop"): ``notify_<role>``, the generic ``notify``
        and the FIFO line, in that order, with the priority of the moment."""
        ha = self.config.ha
        if self._hooks is not None and (
            bool(getattr(ha, f"notify_{role}", ())) or ha.notify or ha.notify_fifo
        ):
            inst = self.vrrps.get(self._last_instance) or self.vrrp
            prio = inst.params.priority if inst is not None else 0
            self._hooks.put_nowait((role, prev, str(prio)))

    def instance_name(self) -> str:
        """What ``notify`` and the FIFO call the instance: ``VI_<vrid>`` in vrrp mode (keepalived's
        habit for an unnamed instance), else ``lvsd``."""
        ha = self.config.ha
        if ha.mode != "vrrp":
            return "lvsd"
        return self._last_instance or ha.vrrp_instances()[0].label

    def track_services(
        self, config: Config, health: Mapping[ServerId, ServerHealth], quorum: Mapping[str, bool]
    ) -> None:
        """vrrp ``track_services``: the services' health (the planner's quorum verdicts, one rule
        with bgp's announce) moves the priority. Called after every reconcile pass."""
        tracked = [i for i in self.config.ha.vrrp_instances() if i.track_services and i.label in self.vrrps]
        if not tracked:
            return
        names = {t.service for i in tracked for t in i.track_services}
        verdicts = service_verdicts(config, health, quorum, names)
        for i in tracked:
            self.vrrps[i.label].set_services(verdicts)

    # --- sync daemons ---
    def _apply_sync(self) -> None:
        sync = self.config.sync
        if sync is None or not self.role:
            return
        self._set_daemons(sync.daemons_for(self.role))

    def _set_daemons(self, wanted: tuple[SyncDaemon, ...]) -> None:
        """Make the kernel run exactly ``wanted`` (at most one master, one backup): start what is
        missing first, then stop what is not wanted, so a master never goes a moment without."""
        try:
            running = {d.state: d for d in self.backend.daemons()}
        except (IPVSError, OSError) as e:
            self.sync_error = f"reading the sync daemons: {e}"
            log.error("ha: %s", self.sync_error)
            return
        errors = []
        t0 = time.monotonic()
        want = {d.state: d for d in wanted}
        for state, d in want.items():
            have = running.get(state)
            if have is not None and daemon_matches(d, have):
                continue
            try:
                if have is not None:
                    self.backend.stop_daemon(state)
                self.backend.start_daemon(d)
                log.info(
                    "ha: started the %s sync daemon on %s, syncid %d",
                    DaemonState(state).name.lower(),
                    d.mcast_ifn,
                    d.syncid,
                )
            except (IPVSError, ValueInvalid) as e:
                errors.append(f"starting the {DaemonState(state).name.lower()} sync daemon: {e}")
        for state in running:
            if state in want:
                continue
            try:
                self.backend.stop_daemon(state)
                log.info("ha: stopped the %s sync daemon", DaemonState(state).name.lower())
            except IPVSError as e:
                errors.append(f"stopping the {DaemonState(state).name.lower()} sync daemon: {e}")
        self.sync_error = "; ".join(errors)
        self.sync_switch_seconds = time.monotonic() - t0
        for err in errors:
            log.error("ha: %s", err)

    # --- sysctls ---
    def _write_sysctls(self, sync: SyncConfig | None) -> None:
        self.sysctl_values, self.sysctl_errors = {}, {}
        if sync is None:
            return
        wanted = sync.sysctls()
        with in_netns(self.netns):
            for name, value in wanted.items():
                path = os.path.join(self.sysctl_dir, name)
                try:
                    with open(path, "w") as f:
                        f.write(value + "\n")
                    with open(path) as f:
                        self.sysctl_values[name] = " ".join(f.read().split())
                except OSError as e:
                    self.sysctl_errors[name] = e.strerror or str(e)
        if self.sysctl_values:
            log.info(
                "ha: sync sysctls net.ipv4.vs: %s",
                ", ".join(f"{k}={v}" for k, v in self.sysctl_values.items()),
            )
        for k, err in self.sysctl_errors.items():
            log.error("ha: cannot set net.ipv4.vs.%s: %s", k, err)

    # --- hooks ---
    async def _run_hooks(self) -> None:
        assert self._hooks is not None
        while True:
            role, prev, prio = await self._hooks.get()
            try:
                ha = self.config.ha
                argv = getattr(ha, f"notify_{role}", ())
                if argv:
                    await self._run_hook(role, prev, argv)
                if ha.notify:
                    await self._run_hook(
                        role, prev, (*ha.notify, self.instance_name(), role.upper(), prio), "notify"
                    )
                if ha.notify_fifo:
                    self._write_fifo(
                        ha.notify_fifo, f'INSTANCE "{self.instance_name()}" {role.upper()} {prio}\n'
                    )
            except Exception:
                log.exception("ha: notify_%s failed", role)
            finally:
                self._hooks.task_done()

    def _write_fifo(self, path: str, line: str) -> None:
        """One line to keepalived's notify FIFO format; nobody reading (ENXIO) is skipped, never waited for."""
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            self.hook_results["notify_fifo"] = f"cannot open {path}: {e.strerror}"
            if e.errno != errno.ENXIO:
                log.warning("ha: notify_fifo %s: %s", path, e.strerror)
            return
        try:
            os.write(fd, line.encode())
            self.hook_results["notify_fifo"] = "ok"
        except OSError as e:
            self.hook_results["notify_fifo"] = f"write failed: {e.strerror}"
        finally:
            os.close(fd)

    async def _run_hook(self, role: str, prev: str, argv: tuple[str, ...], name: str = "") -> None:
        name = name or f"notify_{role}"
        result = await run_hook(
            argv, {"LVSD_ROLE": role, "LVSD_PREVIOUS_ROLE": prev}, self.config.daemon.hook_timeout
        )
        self.hook_results[name] = result
        if result == "ok":
            log.info("ha: %s ran: exit 0", name)
        elif result.startswith("exit "):
            log.warning("ha: %s: %s", name, result)
        else:
            log.error("ha: %s (%s) %s", name, argv[0], result)

    # --- status ---
    def status(self) -> dict:
        """Role, mode, VRRP state, sync daemons (wanted and running), sysctls, hook results."""
        sync = self.config.sync
        running: list[dict] = []
        try:
            running = [describe_daemon(d) for d in self.backend.daemons()]
        except (IPVSError, OSError) as e:
            self.sync_error = f"reading the sync daemons: {e}"
        return {
            "mode": self.config.ha.mode,
            "role": self.role,
            "since": self.role_since,
            "reason": self.role_reason,
            "transitions": self.transitions,
            "vrrp": self.vrrp.status() if self.vrrp is not None else None,
            "instances": {k: v.status() for k, v in self.vrrps.items()} if len(self.vrrps) > 1 else None,
            "sync": {
                "configured": sync is not None,
                "wanted": [describe_daemon(d) for d in sync.daemons_for(self.role)]
                if sync and self.role
                else [],
                "running": running,
                "error": self.sync_error,
                "last_switch_seconds": round(self.sync_switch_seconds, 4),
                "on_fault": sync.on_fault if sync else None,
                "backup_always": sync.backup_always if sync else None,
            },
            "sysctls": dict(self.sysctl_values),
            "sysctl_errors": dict(self.sysctl_errors),
            "hooks": dict(self.hook_results),
            "announce": self.announcer.status() if self.announcer is not None else None,
        }
