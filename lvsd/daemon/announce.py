"""The announcer of ``[ha] mode = "bgp"``: the dummy interface lvsd owns and the VIPs on it.

lvsd speaks no BGP: the routing daemon exports the /32 and /128 routes of ``announce_interface``
(default ``lvsd0``), so holding a VIP there IS announcing it. The announcer creates that dummy
link through the links port, keeps exactly the VIPs ``lvsd.core.announce`` decides on it (an
address removed by hand comes back, one that should not be there goes, at every update: the
daemon calls ``update`` after each reconcile, the periodic resync included), writes the sloppy
sysctls, keeps the drained state in a small file (written atomically; a corrupt one is reported
and ignored) and, at stop, keeps the VIPs (``on_stop = "keep"``: a restart moves no traffic) or
withdraws them and waits ``withdraw_grace`` before the services go (``"remove"``).
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable
from contextlib import suppress
from typing import Any

from lvsd.config.ha_bgp import BGPConfig, bgp_of, scheduler_warnings
from lvsd.config.model import Config
from lvsd.core import announce as core
from lvsd.core.announce import ServiceInput, VipStatus

from .links import Link, Links, in_netns

log = logging.getLogger("lvsd.announce")

SYSCTL_DIR = "/proc/sys/net/ipv4/vs"
CAP_NET_ADMIN = 12


class AnnounceError(Exception):
    """The announcer cannot work with this config on this system: one line ``path: what is wrong``."""


def has_net_admin() -> bool:
    """True if this process holds CAP_NET_ADMIN (what creating links and addresses needs)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_NET_ADMIN & 1)
    except (OSError, ValueError):
        pass
    return os.geteuid() == 0


def vips_of(config: Config) -> dict[str, list[str]]:
    """VIP address -> the services on it (fwmark services have no address to announce)."""
    out: dict[str, list[str]] = {}
    for s in config.services:
        if not s.key.fwmark and s.key.addr:
            out.setdefault(str(ipaddress.ip_address(s.key.addr)), []).append(s.name)
    return out


def _prefixlen(vip: str) -> int:
    return 32 if ipaddress.ip_address(vip).version == 4 else 128


def read_drain(path: str) -> tuple[bool, str]:
    """(drained, error) from the drain file; a missing file is not drained, a corrupt one is
    reported and ignored (not drained): a torn write must not keep a director out for good."""
    if not path:
        return False, ""
    try:
        with open(path) as f:
            data = json.load(f)
        if not isinstance(data, dict) or not isinstance(data.get("drained"), bool):
            raise ValueError('not {"drained": true|false}')
        return data["drained"], ""
    except FileNotFoundError:
        return False, ""
    except (OSError, ValueError) as e:
        return False, f"{path}: ignored, unreadable: {e}"


def write_drain(path: str, drained: bool) -> None:
    """Write the drain file atomically (a temporary file renamed over it). Raises OSError."""
    d = os.path.dirname(path)
    if d:
        os.makedirs(d, exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump({"drained": drained, "since": time.time()}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Announcer:
    """Owns ``announce_interface`` and keeps the announced VIPs on it (see the module docstring).

    ``clock`` is monotonic seconds (tests step it); ``net_admin`` says whether the process may
    create links (tests pass a function)."""

    def __init__(
        self,
        links: Links,
        config: Config,
        *,
        netns: str | None = None,
        sysctl_dir: str = SYSCTL_DIR,
        clock: Callable[[], float] = time.monotonic,
        net_admin: Callable[[], bool] = has_net_admin,
    ) -> None:
        bgp = bgp_of(config)
        assert bgp is not None, "the announcer runs in bgp mode only"
        self.links = links
        self.config = config
        self.bgp: BGPConfig = bgp
        self.netns = netns
        self.sysctl_dir = sysctl_dir
        self.clock = clock
        self.net_admin = net_admin
        self.link: Link | None = None
        self.statuses: dict[str, VipStatus] = {}
        self.inputs: list[ServiceInput] = []
        self.drained = False
        self.drain_error = ""
        self.sysctl_values: dict[str, str] = {}
        self.sysctl_errors: dict[str, str] = {}
        self.repairs = 0  # addresses added or removed that the last decision had not asked for
        self.changes = 0  # announce/withdraw transitions
        self.last_error = ""
        self.warnings: list[str] = scheduler_warnings(config.services)
        self._timer: asyncio.TimerHandle | None = None
        self._lock = asyncio.Lock()
        self._held: set[str] = set()  # what the last sync left on the link
        self.bgp_sessions: dict[str, Any] | None = None  # BIRD's, as refresh_sessions last read them

    # --- life cycle ---
    async def start(self) -> None:
        """Check the system (rights, a non-dummy link of that name, a VIP on another link), take
        or create the dummy link, read the drained state, write the sloppy sysctls.
        Raises AnnounceError with one line."""
        if not self.net_admin():
            raise AnnounceError(
                f'ha.mode: "bgp" needs CAP_NET_ADMIN to own {self.bgp.announce_interface} and its addresses'
            )
        await self._check(self.config)
        name = self.bgp.announce_interface
        try:
            self.link = await self.links.link(name)
        except OSError as e:
            if e.errno != errno.ENODEV:
                raise AnnounceError(f"ha.announce_interface: reading {name}: {e.strerror or e}") from None
            try:
                self.link = await self.links.create_link(name, "dummy")
                log.info("announce: created dummy interface %s", name)
            except OSError as e2:
                raise AnnounceError(f"ha.announce_interface: cannot create {name}: {e2.strerror or e2}") from None
        if not self.link.up:
            await self.links.set_link_up(self.link.index, True)
            self.link = await self.links.link(self.link.index)
        self._held = {a.address for a in await self.links.addresses(index=self.link.index) if a.scope == 0}
        self.drained, self.drain_error = read_drain(self.bgp.drain_file)
        if self.drain_error:
            log.error("announce: %s", self.drain_error)
        elif self.drained:
            log.warning("announce: director drained (from %s): no VIP announced", self.bgp.drain_file)
        self._write_sysctls()

    async def _check(self, config: Config) -> None:
        bgp = bgp_of(config)
        assert bgp is not None
        name = bgp.announce_interface
        links = await self.links.links()
        ours = next((lk for lk in links if lk.name == name), None)
        if ours is not None and ours.kind != "dummy":
            raise AnnounceError(
                f"ha.announce_interface: {name!r} exists and is a {ours.kind or 'physical'} link, not a dummy: "
                "lvsd owns its announce interface (pick another name)"
            )
        names = {lk.index: lk.name for lk in links}
        vips = vips_of(config)
        for a in await self.links.addresses():
            if a.index == (ours.index if ours else -1) or names.get(a.index) == name:
                continue
            if a.address in vips:
                svc = vips[a.address][0]
                raise AnnounceError(
                    f"service[{svc}].vip: {a.address} is also on {names.get(a.index, a.index)}: in bgp mode "
                    f"only {name} may hold it (the route would be announced whatever the service's health)"
                )

    async def reload(self, config: Config) -> None:
        """Take a new config (same interface: a different one is a restart's business); the
        next ``update`` applies it. Raises AnnounceError for a VIP another link holds."""
        bgp = bgp_of(config)
        assert bgp is not None
        if bgp.announce_interface != self.bgp.announce_interface:
            log.warning("reload: [ha] announce_interface changes take effect at the next restart")
            bgp = BGPConfig(**{**_fields(bgp), "announce_interface": self.bgp.announce_interface})
        old = self.bgp
        self.config, self.bgp = config, bgp
        self.warnings = scheduler_warnings(config.services)
        if (bgp.sloppy_tcp, bgp.sloppy_sctp) != (old.sloppy_tcp, old.sloppy_sctp):
            self._write_sysctls()
        await self._check(config)
        await self.update(self.inputs)  # announce = false, withdraw_delay: at once

    async def stop(self, on_stop: str) -> None:
        """``keep``: leave the VIPs announced. ``remove``: withdraw them (if ``withdraw`` has not
        already) and delete the link."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if on_stop != "remove" or self.link is None:
            return
        await self.withdraw_all("stopping (on_stop=remove)")
        with suppress(OSError):
            await self.links.delete_link(self.link.index)
            log.info("announce: removed %s", self.bgp.announce_interface)
        self.link = None

    async def withdraw_all(self, why: str, grace: float = 0.0) -> None:
        """Withdraw every VIP now, then wait ``grace`` seconds (the routers move the flows)."""
        async with self._lock:
            if self.link is None:
                return
            held = set(self._held)
            for vip in sorted(held):
                with suppress(OSError):
                    await self.links.delete_address(self.link.index, vip, _prefixlen(vip))
                log.info("announce: withdrew %s (%s)", vip, why)
            self._held = set()
            self.statuses = {
                v: VipStatus(v, False, s.reason if not s.announced else "stopping", why, s.services)
                for v, s in self.statuses.items()
            }
        if held and grace > 0:
            log.info("announce: waiting %.1fs (withdraw_grace) before stopping", grace)
            await asyncio.sleep(grace)

    # --- drain ---
    async def set_drained(self, drained: bool) -> None:
        """lvsctl drain-director / undrain-director: record it (kept across restarts) and apply it."""
        self.drained = drained
        if self.bgp.drain_file:
            try:
                write_drain(self.bgp.drain_file, drained)
                self.drain_error = ""
            except OSError as e:
                self.drain_error = f"{self.bgp.drain_file}: cannot write: {e.strerror or e}"
                log.error("announce: %s (the state holds until the next restart)", self.drain_error)
        log.warning("announce: director %s", "drained: withdrawing every VIP" if drained else "undrained")
        await self.update(self.inputs)

    # --- the decision and the link ---
    async def update(self, inputs: Iterable[ServiceInput]) -> None:
        """Decide again with these service verdicts and make the link hold exactly the VIPs to
        announce (repairing outside edits). Never raises: an error is logged and kept for status."""
        self.inputs = list(inputs)
        async with self._lock:
            if self.link is None:
                return
            prev = self.statuses
            now = self.clock()
            new = core.decide(
                self.inputs,
                prev,
                now,
                withdraw_delay=self.bgp.withdraw_delay,
                drained=self.drained,
                enabled=self.bgp.announce,
                present=frozenset(self._held),
            )
            for vip, s in new.items():
                p = prev.get(vip)
                if p is None or p.announced != s.announced or p.reason != s.reason:
                    if p is not None and p.announced != s.announced:
                        self.changes += 1
                    lvl = logging.INFO if s.reason != core.DELAY else logging.WARNING
                    log.log(lvl, "announce: %s %s (%s: %s)", vip, "announced" if s.announced else "withdrawn", s.reason, s.detail)
            self.statuses = new
            try:
                await self._sync(core.announced(new))
                self.last_error = ""
            except OSError as e:
                self.last_error = f"{self.bgp.announce_interface}: {e.strerror or e}"
                log.error("announce: %s", self.last_error)
            self._arm(core.next_change(new))

    async def _sync(self, want: frozenset[str]) -> None:
        assert self.link is not None
        idx = self.link.index
        try:
            link = await self.links.link(idx)
        except OSError as e:
            if e.errno != errno.ENODEV:
                raise
            log.warning("announce: %s was deleted: creating it again", self.bgp.announce_interface)
            link = await self.links.create_link(self.bgp.announce_interface, "dummy")
            self.repairs += 1
        if not link.up:
            await self.links.set_link_up(link.index, True)
            self.repairs += 1
        self.link = link
        have = {a.address: a.prefixlen for a in await self.links.addresses(index=link.index) if a.scope == 0}
        for vip in sorted(want - have.keys()):
            await self.links.add_address(link.index, vip, _prefixlen(vip))
            if vip in self._held:
                self.repairs += 1
                log.warning("announce: %s was removed from %s by hand: added again", vip, link.name)
        for vip in sorted(have.keys() - want):
            await self.links.delete_address(link.index, vip, have[vip])
            if vip not in self._held:
                self.repairs += 1
                log.warning("announce: %s was added to %s by hand: removed", vip, link.name)
        self._held = set(want)

    def _arm(self, at: float | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if at is None:
            return
        loop = asyncio.get_running_loop()
        delay = max(0.0, at - self.clock()) + 0.01
        self._timer = loop.call_later(delay, lambda: loop.create_task(self.update(self.inputs)))

    # --- sysctls ---
    def _write_sysctls(self) -> None:
        self.sysctl_values, self.sysctl_errors = {}, {}
        with in_netns(self.netns):
            for name, value in self.bgp.sysctls().items():
                path = os.path.join(self.sysctl_dir, name)
                try:
                    with open(path, "w") as f:
                        f.write(value + "\n")
                    with open(path) as f:
                        self.sysctl_values[name] = f.read().strip()
                except OSError as e:
                    self.sysctl_errors[name] = e.strerror or str(e)
                    log.error("announce: cannot set net.ipv4.vs.%s: %s", name, self.sysctl_errors[name])
        if self.sysctl_values:
            log.info("announce: net.ipv4.vs: %s", ", ".join(f"{k}={v}" for k, v in self.sysctl_values.items()))

    # --- status ---
    def status(self) -> dict[str, Any]:
        """Per VIP: announced or not and why; the interface, drain state, sysctls, BGP sessions."""
        return {
            "interface": self.bgp.announce_interface,
            "present": self.link is not None,
            "drained": self.drained,
            "drain_error": self.drain_error,
            "announce": self.bgp.announce,
            "withdraw_delay": self.bgp.withdraw_delay,
            "vips": [
                {
                    "vip": s.vip,
                    "announced": s.announced,
                    "reason": s.reason,
                    "detail": s.detail,
                    "services": list(s.services),
                }
                for s in self.statuses.values()
            ],
            "repairs": self.repairs,
            "changes": self.changes,
            "error": self.last_error,
            "sysctls": dict(self.sysctl_values),
            "sysctl_errors": dict(self.sysctl_errors),
            "warnings": list(self.warnings),
            "bgp_sessions": self.bgp_sessions,
        }

    async def refresh_sessions(self) -> None:
        """Read BIRD's sessions again (in a thread: birdc is a process) for the next status."""
        self.bgp_sessions = await asyncio.to_thread(bird_sessions, self.bgp.bird_socket)


def _fields(b: BGPConfig) -> dict[str, Any]:
    return {k: getattr(b, k) for k in b.__slots__}


def bird_sessions(sock: str, timeout: float = 2.0) -> dict[str, Any] | None:
    """BIRD's BGP sessions through ``birdc -s SOCK show protocols`` (None when not configured):
    {"established": n, "sessions": [{"name", "state", "info"}], "error": ...}. Not lvsd's failure
    when BIRD is down: status says it sees no session."""
    if not sock:
        return None
    birdc = shutil.which("birdc")
    if birdc is None:
        return {"established": 0, "sessions": [], "error": "birdc not found"}
    import subprocess

    try:
        out = subprocess.run(
            [birdc, "-s", sock, "show", "protocols"], capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"established": 0, "sessions": [], "error": str(e)}
    return parse_bird_protocols(out.stdout + out.stderr)


def parse_bird_protocols(text: str) -> dict[str, Any]:
    """The BGP rows of ``birdc show protocols`` output (name, proto, table, state, since, info)."""
    sessions = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[1] == "BGP":
            info = " ".join(parts[5:]) if len(parts) > 5 else ""
            sessions.append({"name": parts[0], "state": parts[3], "info": info})
    est = sum(1 for s in sessions if "Established" in s["info"])
    err = "" if sessions or "BIRD" in text else (text.strip().splitlines() or ["no answer"])[-1]
    return {"established": est, "sessions": sessions, "error": "" if est else (err or "no BGP session established")}
