"""Prometheus text exposition (format 0.0.4) of the daemon's state and the kernel's counters.

Written by hand: a few dozen lines beat a dependency, and the kernel counters are read with
one dump when a scrape asks, shared with the control API and at most once per IPVS's own
period (2 s: ``lvsd.daemon.kernel_stats``). The control API renders
in steps: ``Snapshot`` copies what the page shows (a few milliseconds for 10,000 servers), then
``render_steps`` formats it CHUNK lines at a time, the event loop free between chunks, so the
hundreds of milliseconds a page of 10,000 servers takes never hold the checks in one piece (a
thread would not do: it holds the GIL against the loop's many short I/O calls).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import Iterator
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from lvsd.core.desired import server_health
from lvsd.core.health import Health
from lvsd.ipvs.backend import IPVSError

if TYPE_CHECKING:
    from lvsd.daemon.daemon import Daemon
    from lvsd.daemon.kernel_stats import KernelStats

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_HEALTH_VALUE = {Health.UP: 1, Health.DOWN: 0, Health.UNKNOWN: -1}


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class _Out:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_: str) -> None:
        self.lines.append(f"# HELP {name} {help_}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, value: float, **labels: str) -> None:
        if labels:
            lab = ",".join(f'{k}="{_esc(str(v))}"' for k, v in labels.items())
            self.lines.append(f"{name}{{{lab}}} {_num(value)}")
        else:
            self.lines.append(f"{name} {_num(value)}")


def _num(v: float) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int):
        return str(v)
    return repr(float(v))


class _Table:
    """A kernel table read earlier, served as ``Backend.dump`` (or its error) to ``render``."""

    def __init__(self, table: Any, error: Exception | None) -> None:
        self.table, self.error = table, error

    def dump(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.table


class Snapshot:
    """What ``render`` reads of the daemon, copied at one instant, so that a render made in
    steps shows one state while the loop changes the originals in between. ``kernel``: the
    table (or the error reading it) from the API's shared ``KernelStats``; else read here."""

    def __init__(self, d: Daemon, kernel: tuple[Any, Exception | None] | None = None) -> None:
        st = d.stats
        self.stats = dataclasses.replace(
            st,
            reconciles=Counter(st.reconciles),
            ops=Counter(st.ops),
            op_errors=Counter(st.op_errors),
            reloads=Counter(st.reloads),
            refusals=Counter(st.refusals),
        )
        self.config = d.config
        self.role = d.role
        self.quorum = dict(d.quorum)
        self.health = dict(d.health)
        self.reconciler = SimpleNamespace(refused=dict(d.reconciler.refused))
        self.announce = announce_state(d)
        self.overrides = dict(d.overrides.active)
        if kernel is not None:
            self.backend = _Table(*kernel)
            return
        try:
            self.backend = _Table(d.backend.dump(), None)
        except (IPVSError, OSError) as e:
            self.backend = _Table(None, e)


#: lines rendered between two yields of ``render_steps`` (a few milliseconds of work)
CHUNK = 1000


def render(d: Daemon | Snapshot) -> str:
    """The whole exposition for one scrape (of the daemon, or of a Snapshot of it)."""
    o = _Out()
    for _ in render_steps(d, o):
        pass
    return "\n".join(o.lines) + "\n"


async def render_page(d: Daemon, stats: KernelStats | None = None) -> bytes:
    """The page of a snapshot of ``d``, rendered in steps: the event loop runs between them.
    The kernel's counters come from ``stats`` (the cache the control API shares) if given."""
    kernel: tuple[Any, Exception | None] | None = None
    if stats is not None:
        try:
            kernel = (await stats.table(), None)
        except Exception as e:  # the page says lvsd_kernel_up 0, as for a read made here
            kernel = (None, e)
    o = _Out()
    for _ in render_steps(Snapshot(d, kernel), o):
        await asyncio.sleep(0)  # checks and reconciles run between chunks
    return ("\n".join(o.lines) + "\n").encode()


def render_steps(d: Daemon | Snapshot, o: _Out) -> Iterator[None]:
    """Render into ``o``, yielding every CHUNK lines or so: the control API resumes it from the
    event loop between other work, so a page of 10,000 servers never holds the loop for more
    than a few milliseconds at a time."""
    st = d.stats
    cfg = d.config
    o.family("lvsd_start_time_seconds", "gauge", "Unix time the daemon started.")
    o.sample("lvsd_start_time_seconds", round(st.started, 3))
    o.family("lvsd_reconciles_total", "counter", "Reconcile passes by result.")
    for r in ("ok", "error"):
        o.sample("lvsd_reconciles_total", st.reconciles[r], result=r)
    o.family("lvsd_reconcile_seconds_total", "counter", "Time spent reconciling.")
    o.sample("lvsd_reconcile_seconds_total", round(st.reconcile_seconds, 6))
    o.family("lvsd_last_reconcile_duration_seconds", "gauge", "Duration of the last reconcile.")
    o.sample("lvsd_last_reconcile_duration_seconds", round(st.last_reconcile_duration, 6))
    o.family("lvsd_last_reconcile_success", "gauge", "1 if the last reconcile applied everything.")
    o.sample("lvsd_last_reconcile_success", st.last_reconcile_ok)
    o.family("lvsd_kernel_ops_total", "counter", "IPVS writes applied, by kind.")
    for k, n in sorted(st.ops.items()):
        o.sample("lvsd_kernel_ops_total", n, kind=k)
    o.family("lvsd_kernel_op_errors_total", "counter", "IPVS writes the kernel refused, by kind.")
    for k, n in sorted(st.op_errors.items()):
        o.sample("lvsd_kernel_op_errors_total", n, kind=k)
    o.family("lvsd_kernel_op_refusals_total", "counter", "IPVS writes the kernel refused, by service and kind.")
    for (svc, k), n in sorted(st.refusals.items()):
        o.sample("lvsd_kernel_op_refusals_total", n, service=svc, kind=k)
    o.family("lvsd_kernel_ops_refused", "gauge", "IPVS writes refused and awaiting their retry, by service.")
    waiting: dict[str, int] = {}
    for refusal in d.reconciler.refused.values():
        waiting[refusal.service] = waiting.get(refusal.service, 0) + 1
    for svc, n in sorted(waiting.items()):
        o.sample("lvsd_kernel_ops_refused", n, service=svc)
    o.family("lvsd_resync_repairs_total", "counter", "Reconciles (periodic resyncs, or a refused health change) that found and repaired outside edits.")
    o.sample("lvsd_resync_repairs_total", st.repairs)
    o.family("lvsd_reloads_total", "counter", "Config reloads by result.")
    for r in ("ok", "noop", "error"):
        o.sample("lvsd_reloads_total", st.reloads[r], result=r)
    o.family("lvsd_config_last_reload_successful", "gauge", "0 if the last reload was refused.")
    o.sample("lvsd_config_last_reload_successful", st.last_reload_ok)
    o.family("lvsd_role", "gauge", "1 for the director's current role.")
    for r in ("master", "backup", "fault"):
        o.sample("lvsd_role", d.role == r, role=r)
    o.family("lvsd_service_below_quorum", "gauge", "1 while a service is below its quorum.")
    for s in cfg.services:
        o.sample("lvsd_service_below_quorum", d.quorum.get(s.name, False), service=s.name)
    an = d.announce if isinstance(d, Snapshot) else announce_state(d)
    if an is not None:  # bgp mode
        o.family("lvsd_vip_announced", "gauge", "bgp mode: 1 while the VIP is on the announce interface; reason: why (quorum, delay, below-quorum, pending, drain, disabled).")
        for vip, announced, reason in an["vips"]:
            o.sample("lvsd_vip_announced", announced, vip=vip, reason=reason)
        o.family("lvsd_director_drained", "gauge", "bgp mode: 1 while the director is drained (lvsctl drain-director).")
        o.sample("lvsd_director_drained", an["drained"])
        o.family("lvsd_announce_changes_total", "counter", "bgp mode: VIPs announced or withdrawn since start.")
        o.sample("lvsd_announce_changes_total", an["changes"])
        o.family("lvsd_announce_repairs_total", "counter", "bgp mode: announce-interface edits from outside lvsd put right.")
        o.sample("lvsd_announce_repairs_total", an["repairs"])
    o.family("lvsd_server_health", "gauge", "Server health: 1 up, 0 down, -1 unknown.")
    o.family("lvsd_server_configured_weight", "gauge", "Weight from the config.")
    # Per server: its label text made once and written into each family's line, not formatted
    # from keyword arguments per line: a render of 50,000 servers went from 2.3 s to about 0.3 s
    # (tests/bench/api_bench.py). A server's address:port needs no escaping (no quote, backslash
    # or newline can be in it); a service name is escaped once.
    # Columns, not a list of tuples: strings and ints are not tracked by the garbage collector,
    # so a render adds no collections, each of which walks the whole heap (half of a 50,000-server
    # render's time when the lines were tuples).
    labs: list[str] = []
    hvs: list[int] = []
    weights: list[int] = []
    for s in cfg.services:
        head = f'service="{_esc(s.name)}",server="'
        for srv in s.servers:
            labs.append(f'{head}{srv.key}"')
            hvs.append(_HEALTH_VALUE[server_health(s, srv, d.health).state])
            weights.append(srv.dest.weight)
        if len(labs) % CHUNK < len(s.servers):
            yield
    lines = o.lines
    for i, (lab, hv) in enumerate(zip(labs, hvs, strict=True), 1):
        lines.append(f"lvsd_server_health{{{lab}}} {hv}")
        if i % CHUNK == 0:
            yield
    for i, (lab, w) in enumerate(zip(labs, weights, strict=True), 1):
        lines.append(f"lvsd_server_configured_weight{{{lab}}} {w}")
        if i % CHUNK == 0:
            yield
    _overrides(o, d.overrides if isinstance(d, Snapshot) else d.overrides.active)
    yield from _kernel(o, d)


def _overrides(o: _Out, active: Any) -> None:
    """One sample per operator override: its kind, who set it and why; the value is when."""
    o.family(
        "lvsd_server_override", "gauge",
        "Unix time an override was set (lvsctl disable/drain/weight, drain_on_remove), by kind "
        "(disable, drain, drained, weight), who set it and why.",
    )
    for (name, key), ov in sorted(active.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        kind = "drained" if ov.drained else ov.kind
        o.sample("lvsd_server_override", round(ov.at, 3), service=name, server=str(key), kind=kind, by=ov.by,
                 reason=ov.reason)


def announce_state(d: Daemon) -> dict[str, Any] | None:
    """bgp mode's announcer state, copied: (vip, announced, reason) per VIP, drained, counters."""
    an = getattr(getattr(d, "ha", None), "announcer", None)
    if an is None:
        return None
    return {
        "vips": [(s.vip, s.announced, s.reason) for s in an.statuses.values()],
        "drained": an.drained,
        "changes": an.changes,
        "repairs": an.repairs,
    }


def _kernel(o: _Out, d: Daemon | Snapshot) -> Iterator[None]:
    names = {s.key: s.name for s in d.config.services}
    try:
        table = d.backend.dump()
    except Exception:  # IPVSError, OSError, BackendUnavailable, or the shared cache's remembered error
        o.family("lvsd_kernel_up", "gauge", "1 if the IPVS table could be read.")
        o.sample("lvsd_kernel_up", 0)
        return
    yield
    o.family("lvsd_kernel_up", "gauge", "1 if the IPVS table could be read.")
    o.sample("lvsd_kernel_up", 1)
    svc_fams = (
        ("lvsd_ipvs_service_connections_total", "conns", "Connections scheduled to the service."),
        ("lvsd_ipvs_service_in_packets_total", "inpkts", "Packets in."),
        ("lvsd_ipvs_service_out_packets_total", "outpkts", "Packets out."),
        ("lvsd_ipvs_service_in_bytes_total", "inbytes", "Bytes in."),
        ("lvsd_ipvs_service_out_bytes_total", "outbytes", "Bytes out."),
    )
    managed = [(names[k], e) for k, e in table.items() if k in names]
    for fam, attr, help_ in svc_fams:
        o.family(fam, "counter", help_)
        for name, e in managed:
            o.sample(fam, getattr(e.service.stats, attr), service=name)
    dest_fams = (
        ("lvsd_ipvs_server_weight", "gauge", "Weight in the kernel.", lambda x: x.weight),
        ("lvsd_ipvs_server_active_connections", "gauge", "Active connections.", lambda x: x.active_conns),
        ("lvsd_ipvs_server_inactive_connections", "gauge", "Inactive connections.", lambda x: x.inact_conns),
        ("lvsd_ipvs_server_connections_total", "counter", "Connections scheduled.", lambda x: x.stats.conns),
        ("lvsd_ipvs_server_in_bytes_total", "counter", "Bytes in.", lambda x: x.stats.inbytes),
        ("lvsd_ipvs_server_out_bytes_total", "counter", "Bytes out.", lambda x: x.stats.outbytes),
    )
    labs: list[str] = []  # each destination's label made once for the six families (see render_steps)
    dests: list[Any] = []
    for name, e in managed:
        head = f'service="{_esc(name)}",server="'
        for dest in e.dests.values():
            labs.append(f'{head}{dest.key}"')
            dests.append(dest)
        if len(labs) % CHUNK < len(e.dests):
            yield
    lines = o.lines
    for fam, kind, help_, get in dest_fams:
        o.family(fam, kind, help_)
        for i, (lab, dest) in enumerate(zip(labs, dests, strict=True), 1):
            lines.append(f"{fam}{{{lab}}} {get(dest)}")  # kernel values are ints
            if i % CHUNK == 0:
                yield
