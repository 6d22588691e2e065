"""VRRPv3 on the wire: the asyncio I/O around the pure state machine of ``lvsd.core.vrrp``.

One ``VRRPInstance`` per ``[ha]`` section. It is given two things and opens nothing else itself:

* a links port (``lvsd.daemon.links.Links``): link state and events, addresses, announcements.
  On takeover the virtual addresses are added through it and announced (gratuitous ARP for IPv4,
  unsolicited neighbour advertisements for IPv6); on release they are removed. A link without
  carrier is FAULT; a virtual address removed by hand from a master is put back.
* a socket factory for the advert socket: ``open_advert_socket`` by default, a raw IP socket
  (protocol 112) bound to the interface and joined to 224.0.0.18 / ff02::12, TTL/hop limit 255
  out and required in; unit tests pass a fake and inject adverts as bytes.

The state machine is stepped synchronously (timers, adverts, events); the link work its actions
ask for (add, remove, announce) runs in order in one task, and ``on_state`` is called after it,
so a role change is reported once the addresses are where the new role wants them.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import socket
import struct
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any, Protocol

from lvsd.config.ha import TrackScript
from lvsd.config.model import HAConfig
from lvsd.core import vrrp as core

from .hooks import run_hook
from .links import (
    AddressChanged,
    EventsLost,
    Link,
    LinkChanged,
    LinkEvent,
    Links,
    garp_frame,
    in_netns,
    unsolicited_na,
)

__all__ = ["VRRPError", "VRRPInstance", "garp_frame", "in_netns", "open_advert_socket", "unsolicited_na"]

log = logging.getLogger("lvsd.vrrp")

# Linux constants the socket module does not always export
IP_PKTINFO = 8
IP_MULTICAST_ALL = 49
IPV6_RECVPKTINFO = 49
IPV6_PKTINFO = 50
IPV6_RECVHOPLIMIT = 51
IPV6_HOPLIMIT = 52
IPV6_MULTICAST_ALL = 29
SO_BINDTODEVICE = 25
IPV6_TCLASS = 67
#: IP precedence "network control" (DSCP CS6), as keepalived sends adverts: congested links keep them
TOS_NETWORK_CONTROL = 0xC0


class VRRPError(Exception):
    """VRRP cannot run (no such interface, no address to send from, no permission)."""


class AdvertSocket(Protocol):
    """What the instance needs of its advert socket (a non-blocking raw socket, or a test fake)."""

    def fileno(self) -> int: ...

    def recvmsg(self, bufsize: int, ancbufsize: int, /) -> tuple[bytes, list[Any], int, Any]: ...

    def sendmsg(self, buffers: Any, ancdata: Any, flags: int, address: Any, /) -> int: ...

    def close(self) -> None: ...


#: opens the advert socket: (address family, interface name, interface index) -> socket
SocketFactory = Callable[[int, str, int], AdvertSocket]


def open_advert_socket(af: int, ifname: str, ifindex: int) -> AdvertSocket:
    """A raw VRRP socket on one interface: bound to it, joined to the VRRP group, TTL/hop limit
    255, no multicast loop, TOS/traffic class network control (0xc0), packet info (and IPv6 hop
    limit) delivered with each packet. Unicast peers use the same socket (sent to each peer)."""
    group = core.VRRP_GROUP4 if af == core.AF_INET else core.VRRP_GROUP6
    if af == core.AF_INET:
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, core.VRRP_PROTO)
        try:
            s.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, ifname.encode())
            s.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
            s.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
            mreqn = struct.pack("=4s4si", socket.inet_aton(group), b"\0" * 4, ifindex)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, core.VRRP_TTL)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, core.VRRP_TTL)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, TOS_NETWORK_CONTROL)
        except OSError:
            s.close()
            raise
    else:
        s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, core.VRRP_PROTO)
        try:
            s.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, ifname.encode())
            s.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
            s.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVHOPLIMIT, 1)
            s.setsockopt(socket.IPPROTO_IPV6, IPV6_MULTICAST_ALL, 0)
            mreq = socket.inet_pton(socket.AF_INET6, group) + struct.pack("=I", ifindex)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifindex)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, core.VRRP_TTL)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, core.VRRP_TTL)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
            s.setsockopt(socket.IPPROTO_IPV6, IPV6_TCLASS, TOS_NETWORK_CONTROL)
        except OSError:
            s.close()
            raise
    s.setblocking(False)
    return s


def open_xmit_socket(af: int, ifname: str, ifindex: int) -> AdvertSocket:
    """A send-only VRRP socket on the virtual MAC interface (IPv4): like ``open_advert_socket``
    but joined to no group, since a backup's IGMP report from the shared virtual MAC would teach
    the switches that the MAC is at the backup."""
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, core.VRRP_PROTO)
    try:
        s.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, ifname.encode())
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)  # never read: keep nothing
        s.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
        mreqn = struct.pack("=4s4si", b"\0" * 4, b"\0" * 4, ifindex)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, core.VRRP_TTL)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, core.VRRP_TTL)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, TOS_NETWORK_CONTROL)
    except OSError:
        s.close()
        raise
    s.setblocking(False)
    return s


#: per-link settings of the virtual MAC interface and of the interface it sits on (keepalived's,
#: plus arp_announce): the macvlan answers ARP only for its own addresses (the VIPs) and hears its
#: peers; the lower interface no longer answers ARP for the VIPs (with its own MAC) nor for
#: addresses it would not route through itself, and asks for neighbours from its own address
#: (replies to clients leave from a VIP through it, and an ARP request for a client sent from the
#: VIP taught the client the lower interface's MAC for the VIP in the VM test). IPv6 is off on an
#: IPv4 instance's macvlan, so a backup never sends from the shared MAC (no link-local address, no
#: neighbour discovery, no MLD).
VMAC_MODE = "bridge"  # why not private: VRRPInstance._open_vmac
VMAC_CONF = {"ipv4/arp_ignore": "1", "ipv4/accept_local": "1", "ipv4/rp_filter": "0"}
VMAC_CONF4 = {"ipv6/disable_ipv6": "1"}
PARENT_CONF = {"ipv4/arp_ignore": "1", "ipv4/arp_filter": "1", "ipv4/arp_announce": "2"}
#: lower interfaces whose settings lvsd changed: (links port id, name) -> (users, values before)
_parents: dict[tuple[int, str], tuple[int, dict[str, str]]] = {}


def _vips(ha: HAConfig) -> list[tuple[str, int]]:
    return [(str(ipaddress.ip_address(v.address)), v.prefixlen) for v in ha.vips]


def _advert_int(seconds: float) -> int:
    return max(1, min(core.MAX_ADVER_INT_CS, round(seconds * 100)))


def garp_delays(repeat: int) -> list[float]:
    """When the announcements after the first one go on takeover: 0.5, 2 and 5 s, then every 5 s
    (``garp_repeat`` counts them all, the first one included)."""
    fixed = [0.5, 2.0, 5.0]
    return (fixed + [5.0 * (i + 2) for i in range(max(0, repeat - 4))])[: max(0, repeat - 1)]


# --- the instance ---------------------------------------------------------------------------------


class VRRPInstance:
    """One VRRP router on one interface, configured by ``ha`` (an ``[ha]`` section in vrrp mode).
    ``on_state(state)`` is called after each state change, once the addresses have been added or
    removed. ``netns`` names the network namespace the advert socket is opened in."""

    def __init__(
        self,
        ha: HAConfig,
        links: Links,
        on_state: Callable[[core.State], None],
        *,
        socket_factory: SocketFactory = open_advert_socket,
        netns: str | None = None,
        xmit_factory: SocketFactory = open_xmit_socket,
    ) -> None:
        vips = _vips(ha)
        if not vips:
            raise VRRPError("ha.vips: VRRP needs at least one virtual address")
        self.interface = ha.interface
        self.links = links
        self.socket_factory = socket_factory
        self.netns = netns
        self.on_state = on_state
        self.af = core.family_of([a for a, _ in vips])
        self.vips = vips
        self.params = core.Params(
            vrid=ha.vrid,
            priority=ha.priority,
            advert_int=_advert_int(ha.advert_interval),
            primary="",
            vips=tuple(a for a, _ in vips),
            preempt=ha.preempt,
            preempt_delay=ha.preempt_delay,
            version=ha.version,
            auth=ha.auth_pass.encode(),
        )
        self.base_priority = ha.priority
        self.peers: tuple[str, ...] = tuple(ha.unicast_peers)
        self.unicast_src = ha.unicast_src
        self.garp_refresh = ha.garp_refresh
        self.garp_repeat = ha.garp_repeat
        #: tracked objects -> (weight, ok): ok None = no verdict yet; keys "interface:eth1",
        #: "service:web", "script:0"
        self.tracked: dict[str, tuple[int, bool | None]] = {}
        self._track_ifaces = {t.name: t.weight for t in ha.track_interfaces}
        self._track_scripts = ha.track_scripts
        self._script_tasks: list[asyncio.Task[None]] = []
        self._track_services = {t.service: t.weight for t in ha.track_services}
        for ti in ha.track_interfaces:
            self.tracked[f"interface:{ti.name}"] = (ti.weight, None)
        for ts in ha.track_services:
            self.tracked[f"service:{ts.service}"] = (ts.weight, None)
        for i, sc in enumerate(ha.track_scripts):
            self.tracked[f"script:{i}"] = (sc.weight, None)
        self._link_running = False
        self._refresh: asyncio.TimerHandle | None = None
        #: the virtual MAC (use_vmac): its interface's name, index once made, and whether adverts
        #: go out through it (multicast, not vmac_xmit_base) on the send-only ``_xsock``
        self.use_vmac = ha.use_vmac
        self.vmac_name = ha.vmac_ifname
        self.vmac_xmit_base = ha.vmac_xmit_base
        self.vmac_index = 0
        self.xmit_factory = xmit_factory
        self._xsock: AdvertSocket | None = None
        #: a sync group's gate: may this backup become master now (``core.group_may_master``)?
        self.may_master: Callable[[], bool] | None = None
        #: called when what ``own_fault`` depends on may have changed (a sync group follows it)
        self.on_change: Callable[[], None] | None = None
        if ha.version == 2 and self.af != core.AF_INET:
            raise VRRPError("ha.version: VRRPv2 is IPv4 only")
        self.state = core.VRRPState()
        self.group = core.VRRP_GROUP4 if self.af == core.AF_INET else core.VRRP_GROUP6
        self.ifindex = 0
        self.vip_ifindex: dict[str, int] = {}  # where each virtual address goes
        self.counters: Counter[str] = Counter()
        self.last_warning = ""
        self.master_seen = ""
        self.became_master_at: float | None = None
        self.last_advert_at: float | None = None  # loop time of the last accepted advert
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sock: AdvertSocket | None = None
        self._unwatch: Callable[[], None] | None = None
        self._vip_links: dict[int, Link] = {}  # the links virtual addresses go on, by index
        self._timer: asyncio.TimerHandle | None = None
        self._garp_handles: list[asyncio.TimerHandle] = []
        self._last_reannounce = float("-inf")
        self._running = False
        self._work: asyncio.Queue[Callable[[], Awaitable[None]]] | None = None
        self._worker: asyncio.Task[None] | None = None

    @property
    def fam(self) -> int:
        """The socket address family of the virtual addresses."""
        return socket.AF_INET if self.af == core.AF_INET else socket.AF_INET6

    # --- life cycle ---
    async def start(self) -> None:
        """Watch the links, open the advert socket, remove left-over virtual addresses, start as
        Backup (or FAULT if the link is down or has no address to send from). Raises VRRPError if
        the interface is missing; OSError if the socket cannot be opened."""
        self._loop = asyncio.get_running_loop()
        self._work = asyncio.Queue()
        self._worker = self._loop.create_task(self._run_work(), name=f"vrrp-{self.params.vrid}")
        self._unwatch = await self.links.watch(self._on_link_event)
        try:
            link = await self.links.link(self.interface)
        except OSError:
            raise VRRPError(f"ha.interface: no interface {self.interface!r}") from None
        self.ifindex = link.index
        with in_netns(self.netns):
            self._sock = self.socket_factory(self.af, self.interface, self.ifindex)
        if self.use_vmac:
            await self._open_vmac()
        await self._place_vips()
        self._running = True
        for addr, plen in self.vips:  # a crashed predecessor may have left them
            for idx in {self.vip_ifindex[addr], self.ifindex}:
                try:
                    await self.links.delete_address(idx, addr, plen)
                    log.warning("vrrp: removed left-over virtual address %s/%d", addr, plen)
                except OSError as e:
                    if e.errno not in (errno.EADDRNOTAVAIL, errno.ENOENT):
                        raise
        self._loop.add_reader(self._sock.fileno(), self._on_readable)
        for lk in await self.links.links():
            if lk.name in self._track_ifaces:
                self.tracked[f"interface:{lk.name}"] = (self._track_ifaces[lk.name], lk.running)
        for name in self._track_ifaces:  # a tracked interface that does not exist is down
            w, ok = self.tracked[f"interface:{name}"]
            if ok is None:
                log.warning("vrrp: tracked interface %s does not exist: counted as down", name)
                self.tracked[f"interface:{name}"] = (w, False)
        self._apply_priority()
        self._link_running = link.running
        if link.running and await self._find_primary() and self._tracked_priority() is not None:
            self._event(core.Startup())
        else:
            self._event(core.InterfaceDown())
        self._script_tasks = [
            self._loop.create_task(self._run_script(i, sc), name=f"vrrp-track-{i}")
            for i, sc in enumerate(self._track_scripts)
        ]
        await self.settle()

    async def stop(self, resign: bool = True) -> None:
        """Leave: a master sends priority 0 (the backup takes over after its skew time) and removes
        the addresses. ``resign=False`` leaves the addresses where they are. Idempotent; also
        releases what a failed start() had opened. The links port stays open (its owner closes it)."""
        if self._running and resign:
            self._event(core.Shutdown())
        self._running = False
        if self._worker is not None:
            await self.settle()
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        if self._timer:
            self._timer.cancel()
            self._timer = None
        for t in self._script_tasks:
            t.cancel()
        for t in self._script_tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._script_tasks = []
        if self._refresh is not None:
            self._refresh.cancel()
            self._refresh = None
        for h in self._garp_handles:
            h.cancel()
        self._garp_handles = []
        if self._sock is not None:
            if self._loop is not None:
                self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        await self._close_vmac()

    async def settle(self) -> None:
        """Wait until the link work asked for so far (addresses, announcements, state reports) is
        done: after an advert, an event or a reload, this is when the outcome can be seen."""
        while self._work is not None and self._worker is not None and not self._worker.done():
            await self._work.join()
            await asyncio.sleep(0)  # events the work caused are delivered on the next loop turn
            if self._work.empty():
                return

    async def update(self, ha: HAConfig) -> None:
        """Apply a reload that keeps the interface, VRID and family: priority, interval, preempt,
        the virtual addresses, unicast peers and source, the password, ARP refresh and tracking
        (objects kept keep their state; scripts restart if they changed); a master moves its
        addresses at once."""
        new_vips = _vips(ha)
        if core.family_of([a for a, _ in new_vips]) != self.af:
            raise VRRPError("ha.vips: cannot change the address family on reload")
        vmac = (ha.use_vmac, ha.vmac_ifname if ha.use_vmac else "", ha.vmac_xmit_base)
        if vmac != (self.use_vmac, self.vmac_name if self.use_vmac else "", self.vmac_xmit_base):
            if self._running:
                self._queue(lambda: self._switch_vmac(ha.use_vmac, ha.vmac_ifname, ha.vmac_xmit_base))
                await self.settle()
            else:
                self.use_vmac, self.vmac_name, self.vmac_xmit_base = vmac[0], ha.vmac_ifname, vmac[2]
        old = set(self.vips)
        old_place = dict(self.vip_ifindex)
        self.vips = new_vips
        if self._running:
            await self._place_vips()
        self.base_priority = ha.priority
        self.garp_refresh = ha.garp_refresh
        self.garp_repeat = ha.garp_repeat
        self.peers = tuple(ha.unicast_peers)
        if ha.unicast_src != self.unicast_src:
            self.unicast_src = ha.unicast_src
            if self._running:
                await self._find_primary()
        await self._update_tracking(ha)
        self.params = replace(
            self.params,
            auth=ha.auth_pass.encode(),
            priority=self._tracked_priority() or ha.priority,
            advert_int=_advert_int(ha.advert_interval),
            vips=tuple(a for a, _ in new_vips),
            preempt=ha.preempt,
            preempt_delay=ha.preempt_delay,
        )
        if self._running:
            self._apply_priority()  # a weight-0 object failing now: fault
        if self.state.state is core.State.MASTER and self._running:
            gone = [(a, plen, old_place.get(a, self.home)) for a, plen in old - set(new_vips)]
            added = [v for v in new_vips if v not in old]

            async def move() -> None:
                for a, plen, idx in gone:
                    await self._delete(idx, a, plen)
                for a, plen in added:
                    await self._add(a, plen)
                self._announce_vips([a for a, _ in added])

            self._queue(move)
            self._send(self.params.priority)
            await self.settle()

    def status(self) -> dict:
        """State, timers and packet counters for ``lvsctl status``."""
        p = self.params
        names = {i: lk.name for i, lk in self._vip_links.items()}
        return {
            "state": self.state.state.value,
            "interface": self.interface,
            "vrid": p.vrid,
            "version": p.version,
            "priority": p.priority,
            "advert_interval": p.advert_int / 100.0,
            "master_down_interval": round(
                p.master_down_interval(self.state.master_adver_int or p.advert_int), 4
            ),
            "primary": p.primary,
            "master": p.primary if self.state.state is core.State.MASTER else self.state.master_addr,
            "vips": [f"{a}/{plen}" for a, plen in self.vips],
            "vip_interfaces": {a: names.get(i, str(i)) for a, i in self.vip_ifindex.items()},
            "preempt": p.preempt,
            "preempt_delay": p.preempt_delay,
            "counters": dict(self.counters),
            "last_warning": self.last_warning,
            "base_priority": self.base_priority,
            "unicast_peers": list(self.peers),
            "tracked": {k: {"weight": w, "ok": ok} for k, (w, ok) in self.tracked.items()},
            "wants_master": self.state.wants_master,
            "vmac": {
                "interface": self.vmac_name,
                "mac": core.vmac_address(p.vrid, self.af).hex(":"),
                "adverts_via": self.vmac_name
                if self._xsock is not None and not self.peers
                else self.interface,
            }
            if self.vmac_index
            else None,
        }

    # --- sync groups ---
    def follow(self, ev: core.GroupMaster | core.GroupBackup) -> None:
        """A member of our sync group changed role: follow it (``core.group_orders``)."""
        if self._running:
            self._event(ev)

    # --- the virtual MAC (use_vmac) ---
    @property
    def home(self) -> int:
        """Where the virtual addresses go by default: the virtual MAC interface, or the VRRP one."""
        return self.vmac_index or self.ifindex

    async def _open_vmac(self) -> None:
        """Make (or take over, after a crash) the macvlan with the VRRP MAC on the VRRP interface,
        keepalived's way (IPv6 off, ARP settings on it and on its lower interface,
        up in every state: a backup's holds no address, so it answers and sends nothing) but in
        mode bridge, not private: adverts are received on the lower interface, and in private
        mode the kernel hands a multicast frame whose source is the macvlan's own MAC (the peer
        master's adverts, from the same virtual MAC) to the macvlan alone (keepalived listens
        there, joined to the VRRP group, so its backups send IGMP reports from the shared MAC).
        A link of that name with another MAC, lower interface or mode is made again; one of
        another kind is refused."""
        mac = core.vmac_address(self.params.vrid, self.af)
        name = self.vmac_name
        try:
            have: Link | None = await self.links.link(name)
        except OSError:
            have = None
        if have is not None and have.kind != "macvlan":
            raise VRRPError(
                f"ha.vmac_name: {name!r} exists and is a {have.kind or 'physical'} link, not a macvlan"
            )
        if have is not None and (have.mac, have.parent, have.mode) != (mac, self.ifindex, VMAC_MODE):
            log.warning("vrrp: %s has another MAC, lower interface or mode: making it again", name)
            await self.links.delete_link(have.index)
            have = None
        if have is None:
            have = await self.links.create_link(
                name, "macvlan", link=self.ifindex, macvlan_mode=VMAC_MODE, address=mac.hex(":")
            )
            log.info("vrrp: made %s (macvlan, %s) on %s", name, mac.hex(":"), self.interface)
        else:
            log.info("vrrp: took over %s (%s) left by a predecessor", name, mac.hex(":"))
        for setting, value in {**VMAC_CONF, **(VMAC_CONF4 if self.af == core.AF_INET else {})}.items():
            await self.links.link_conf(name, setting, value)
        key = (id(self.links), self.interface)
        users, saved = _parents.get(key, (0, {}))
        if not users:
            saved = {k: await self.links.link_conf(self.interface, k, v) for k, v in PARENT_CONF.items()}
        _parents[key] = (users + 1, saved)
        if not have.up:
            await self.links.set_link_up(have.index, True)
        self.vmac_index = have.index
        self._vip_links[have.index] = await self.links.link(have.index)
        if not self.vmac_xmit_base:
            with in_netns(self.netns):
                self._xsock = self.xmit_factory(self.af, name, have.index)

    async def _close_vmac(self) -> None:
        """Remove the virtual MAC interface (its addresses go with it) and put the lower
        interface's ARP settings back once no instance of ours uses it."""
        index, xsock, self.vmac_index, self._xsock = self.vmac_index, self._xsock, 0, None
        await self._drop_vmac(index, xsock, self.vmac_name)

    async def _drop_vmac(self, index: int, xsock: AdvertSocket | None, name: str) -> None:
        if xsock is not None:
            xsock.close()
        if not index:
            return
        self._vip_links.pop(index, None)
        try:
            await self.links.delete_link(index)
            log.info("vrrp: removed %s", name)
        except OSError as e:
            if e.errno != errno.ENODEV:
                log.error("vrrp: cannot remove %s: %s", name, e.strerror)
        key = (id(self.links), self.interface)
        users, saved = _parents.pop(key, (1, {}))
        if users > 1:
            _parents[key] = (users - 1, saved)
            return
        for k, v in saved.items():
            try:
                await self.links.link_conf(self.interface, k, v)
            except OSError as e:
                log.warning("vrrp: cannot restore %s on %s: %s", k, self.interface, e.strerror)

    async def _switch_vmac(self, on: bool, name: str, xmit_base: bool) -> None:
        """A reload turned the virtual MAC on or off, or renamed it: a master adds its addresses
        at their new home and announces them before removing them from the old one (the old
        link goes last), so it stays master and reachable throughout."""
        if on and self.vmac_index and name == self.vmac_name:  # only vmac_xmit_base changed
            self.vmac_xmit_base = xmit_base
            if xmit_base and self._xsock is not None:
                self._xsock.close()
                self._xsock = None
            elif not xmit_base and self._xsock is None:
                with in_netns(self.netns):
                    self._xsock = self.xmit_factory(self.af, name, self.vmac_index)
            return
        old_place = dict(self.vip_ifindex)
        old = (self.vmac_index, self._xsock, self.vmac_name)
        self.vmac_index, self._xsock = 0, None
        self.use_vmac, self.vmac_name, self.vmac_xmit_base = on, name, xmit_base
        if on:
            await self._open_vmac()
        await self._place_vips()
        if self.state.state is core.State.MASTER:
            for a, plen in self.vips:
                await self._add(a, plen)
            self._announce_vips([a for a, _ in self.vips])
            for a, plen in self.vips:
                if old_place.get(a, self.vip_ifindex[a]) != self.vip_ifindex[a]:
                    await self._delete(old_place[a], a, plen)
        await self._drop_vmac(*old)

    # --- placement and source address ---
    async def _place_vips(self) -> None:
        """Decide each virtual address's interface: the one that already has an address in the
        virtual address's subnet (e.g. a floating gateway on the real servers' side), else the
        VRRP interface."""
        vips = {a for a, _ in self.vips}
        nets = []
        for have in await self.links.addresses(self.fam):
            ip = ipaddress.ip_address(have.address)
            if have.address in vips or ip.is_link_local or ip.is_loopback:
                continue
            nets.append((have.index, ipaddress.ip_network(f"{have.address}/{have.prefixlen}", strict=False)))
        place = {}
        for a, _plen in self.vips:
            ip = ipaddress.ip_address(a)
            own = [idx for idx, net in nets if ip in net]
            place[a] = self.home if (not own or self.ifindex in own or self.home in own) else own[0]
        self.vip_ifindex = place
        for idx in sorted(set(place.values())):
            self._vip_links[idx] = await self.links.link(idx)
        for a, idx in place.items():
            if idx != self.home:
                log.info("vrrp: %s goes on %s, which holds its subnet", a, self._vip_links[idx].name)

    async def _find_primary(self) -> bool:
        """Pick the address adverts come from: the interface's first IPv4 address that is not a
        virtual one, or its IPv6 link-local address."""
        if self.unicast_src:
            self.params = replace(self.params, primary=self.unicast_src)
            return True
        vips = {a for a, _ in self.vips}
        # IPv6 multicast and link-local peers: the link-local address; global unicast peers: a global one
        want_ll = not self.peers or any(ipaddress.ip_address(a).is_link_local for a in self.peers)
        for have in await self.links.addresses(self.fam, self.ifindex):
            if have.address in vips:
                continue
            if self.af == core.AF_INET or ipaddress.ip_address(have.address).is_link_local == want_ll:
                self.params = replace(self.params, primary=have.address)
                return True
        log.error(
            "vrrp: %s has no %s address to send adverts from",
            self.interface,
            "IPv4" if self.af == core.AF_INET else "IPv6 link-local",
        )
        return False

    # --- the machine ---
    def _event(self, ev: core.Event) -> None:
        assert self._loop is not None
        before = self.state.state
        may = True
        if isinstance(ev, core.Tick) and before is core.State.BACKUP and self.may_master is not None:
            may = self.may_master()
        self.state, actions = core.step(self.params, self.state, self._loop.time(), ev, may_master=may)
        for act in actions:
            if isinstance(act, core.SendAdvert):
                self._send(act.priority)
            elif isinstance(act, core.TakeOver):
                self._queue(self._take_over)
            elif isinstance(act, core.Release):
                self._queue(self._release)
            elif isinstance(act, core.Announce):
                self._reannounce()
        if self._running:
            self._arm()
        after = self.state.state
        if after is not before:
            log.info("vrrp: %s vrid %d %s -> %s", self.interface, self.params.vrid, before.value, after.value)

            async def report() -> None:
                self.on_state(after)

            self._queue(report)

    def _queue(self, job: Callable[[], Awaitable[None]]) -> None:
        if self._work is not None:
            self._work.put_nowait(job)

    async def _run_work(self) -> None:
        assert self._work is not None
        while True:
            job = await self._work.get()
            try:
                await job()
            except Exception:
                log.exception("vrrp: link work failed")
            finally:
                self._work.task_done()

    def _arm(self) -> None:
        assert self._loop is not None
        if self._timer:
            self._timer.cancel()
            self._timer = None
        if self.state.deadline is not None:
            self._timer = self._loop.call_at(self.state.deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._running:
            self._event(core.Tick())

    def _send(self, priority: int) -> None:
        if self._sock is None or not self.params.primary:
            return
        adv = core.advert_for(self.params, priority)
        for dst in self.peers or (self.group,):
            self._send_to(adv, dst, priority)

    def _send_to(self, adv: core.Advert, dst: str, priority: int) -> None:
        assert self._sock is not None
        data = core.encode(adv, self.params.primary, dst)
        # multicast adverts leave through the virtual MAC interface, so they carry its MAC and
        # switches learn where it is; unicast ones through the interface itself (an ARP request
        # for the peer from the virtual MAC would teach the peer our own address at that MAC)
        sock, ifindex = self._sock, self.ifindex
        if self._xsock is not None and not self.peers:
            sock, ifindex = self._xsock, self.vmac_index
        if self.af == core.AF_INET:
            info = struct.pack("=i4s4s", ifindex, socket.inet_aton(self.params.primary), b"\0" * 4)
            anc = [(socket.IPPROTO_IP, IP_PKTINFO, info)]
        else:
            info = socket.inet_pton(socket.AF_INET6, self.params.primary) + struct.pack("=I", ifindex)
            anc = [(socket.IPPROTO_IPV6, IPV6_PKTINFO, info)]
        try:
            dest = (dst, 0) if self.af == core.AF_INET else (dst, 0, 0, ifindex)
            sock.sendmsg([data], anc, 0, dest)
            self.counters["sent"] += 1
            if priority == 0:
                self.counters["sent_priority_0"] += 1
        except OSError as e:
            self.counters["send_errors"] += 1
            if self.counters["send_errors"] in (1, 10, 100) or self.counters["send_errors"] % 1000 == 0:
                log.warning("vrrp: sending an advert on %s failed: %s", self.interface, e.strerror)

    # --- link work (run in order by _run_work) ---
    async def _add(self, addr: str, plen: int) -> None:
        idx = self.vip_ifindex.get(addr, self.home)
        try:
            await self.links.add_address(idx, addr, plen)
        except OSError as e:
            if e.errno != errno.EEXIST:
                log.error("vrrp: cannot add %s/%d to %s: %s", addr, plen, self._name(idx), e.strerror)

    async def _delete(self, idx: int, addr: str, plen: int) -> None:
        try:
            await self.links.delete_address(idx, addr, plen)
        except OSError as e:
            if e.errno not in (errno.EADDRNOTAVAIL, errno.ENOENT, errno.ENODEV):
                log.error("vrrp: cannot remove %s/%d from %s: %s", addr, plen, self._name(idx), e.strerror)

    def _name(self, idx: int) -> str:
        link = self._vip_links.get(idx)
        return link.name if link else str(idx)

    async def _take_over(self) -> None:
        if self.state.state is not core.State.MASTER:
            return  # the state moved on before the work ran: its own work follows
        for addr, plen in self.vips:
            await self._add(addr, plen)
        assert self._loop is not None
        self.became_master_at = self._loop.time()
        addrs = [a for a, _ in self.vips]
        self._announce_vips(addrs)
        for h in self._garp_handles:
            h.cancel()
        # repeat: a switch or a neighbour may have missed the first burst
        self._garp_handles = [
            self._loop.call_later(d, self._announce_if_master, addrs) for d in garp_delays(self.garp_repeat)
        ]
        self._arm_refresh()

    def _arm_refresh(self) -> None:
        """While master, announce every VIP again each ``garp_refresh`` (routers caching ARP for hours)."""
        if self._refresh is not None:
            self._refresh.cancel()
            self._refresh = None
        if self.garp_refresh > 0 and self._loop is not None and self._running:
            self._refresh = self._loop.call_later(self.garp_refresh, self._on_refresh)

    def _on_refresh(self) -> None:
        self._refresh = None
        if self._running and self.state.state is core.State.MASTER:
            self.counters["garp_refreshes"] += 1
            self._announce_vips([a for a, _ in self.vips])
            self._arm_refresh()

    async def _release(self) -> None:
        for h in self._garp_handles:
            h.cancel()
        self._garp_handles = []
        if self._refresh is not None:
            self._refresh.cancel()
            self._refresh = None
        self.became_master_at = None
        if self.state.state is core.State.MASTER:
            return  # master again before the work ran: keep the addresses
        for addr, plen in self.vips:
            await self._delete(self.vip_ifindex.get(addr, self.home), addr, plen)

    def _reannounce(self) -> None:
        """Announce again after meeting another master, at most once a second: a peer that never
        yields (one that rejects our adverts) must not make us flood the link."""
        assert self._loop is not None
        now = self._loop.time()
        if now - self._last_reannounce < 1.0:
            return
        self._last_reannounce = now
        self.counters["reannouncements"] += 1
        self._announce_vips([a for a, _ in self.vips])

    def _announce_if_master(self, addrs: list[str]) -> None:
        if self._running and self.state.state is core.State.MASTER:
            self._announce_vips(addrs)

    def _announce_vips(self, addrs: list[str]) -> None:
        for a in addrs:
            link = self._vip_links.get(self.vip_ifindex.get(a, self.home))
            if link is None:
                continue
            try:
                self.links.announce(link, a)
                self.counters["announcements"] += 1
            except OSError as e:
                self.counters["announce_errors"] += 1
                log.warning("vrrp: announcing %s on %s failed: %s", a, link.name, e.strerror)

    # --- input ---
    def _drop(self, what: str, detail: str, src: str) -> None:
        self.counters[what] += 1
        n = self.counters[what]
        if n in (1, 10, 100) or n % 1000 == 0:
            log.warning("vrrp: dropped advert from %s on %s: %s (%d so far)", src, self.interface, detail, n)

    def _on_readable(self) -> None:
        assert self._sock is not None
        for _ in range(64):
            try:
                data, anc, _flags, addr = self._sock.recvmsg(4096, 256)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                log.warning("vrrp: receive on %s failed: %s", self.interface, e.strerror)
                return
            self._handle(data, anc, addr)

    def _handle(self, data: bytes, anc: list, addr: tuple) -> None:
        ifindex = None
        if self.af == core.AF_INET:
            if len(data) < 20:
                self._drop("malformed", "truncated IP header", "?")
                return
            ihl = (data[0] & 0x0F) * 4
            total = struct.unpack_from("!H", data, 2)[0]
            ttl = data[8]
            src = socket.inet_ntoa(data[12:16])
            dst = socket.inet_ntoa(data[16:20])
            payload = data[ihl:total]
            for level, typ, val in anc:
                if level == socket.IPPROTO_IP and typ == IP_PKTINFO and len(val) >= 4:
                    ifindex = struct.unpack_from("=i", val)[0]
        else:
            src = addr[0].split("%")[0]
            payload = data
            ttl = -1
            dst = ""
            for level, typ, val in anc:
                if level == socket.IPPROTO_IPV6 and typ == IPV6_HOPLIMIT and len(val) >= 4:
                    ttl = struct.unpack_from("=i", val)[0]
                elif level == socket.IPPROTO_IPV6 and typ == IPV6_PKTINFO and len(val) >= 20:
                    dst = socket.inet_ntop(socket.AF_INET6, val[:16])
                    ifindex = struct.unpack_from("=I", val, 16)[0]
        if src == self.params.primary:  # multicast loop is off: this is another box with our address
            self._drop("dropped_own_address", f"another router sends from our address {src}", src)
            return
        if ifindex is not None and ifindex != self.ifindex:
            self._drop("dropped_interface", f"arrived on interface {ifindex}", src)
            return
        if ttl != core.VRRP_TTL:
            self._drop("dropped_ttl", f"TTL/hop limit {ttl}, not 255", src)
            return
        if self.peers:
            if src not in self.peers:
                self._drop("dropped_unicast_source", f"{src} is not in unicast_peers", src)
                return
            if dst not in (self.params.primary, self.group):
                self._drop("dropped_destination", f"sent to {dst}, not {self.params.primary}", src)
                return
        elif dst != self.group:
            self._drop("dropped_destination", f"sent to {dst}, not {self.group}", src)
            return
        try:
            adv = core.decode(payload, src, dst)
        except core.MalformedAdvert as e:
            self._drop("malformed", e.reason, src)
            return
        verdict = core.check_received(self.params, adv, ttl)
        if not verdict.accept:
            if adv.vrid != self.params.vrid:
                self.counters["other_vrid"] += 1  # another router group on this link: normal
            else:
                self._drop("dropped", verdict.reason, src)
            return
        self.counters["received"] += 1
        self.last_advert_at = self._loop.time() if self._loop else None
        if verdict.warning:
            self.counters["address_mismatch"] += 1
            if verdict.warning != self.last_warning:
                log.warning("vrrp: advert from %s (priority %d): %s", src, adv.priority, verdict.warning)
            self.last_warning = verdict.warning
        if adv.priority == self.params.priority:
            self.counters["same_priority"] += 1
            if self.counters["same_priority"] == 1:
                log.warning(
                    "vrrp: %s has our priority %d: the higher address wins; give the routers distinct priorities",
                    src,
                    adv.priority,
                )
        if self._running and self.state.state in (core.State.BACKUP, core.State.MASTER):
            self._event(core.Received(adv, src))

    # --- link events ---
    def _on_link_event(self, ev: LinkEvent) -> None:
        """Called by the links port; the work is queued behind any address work in progress."""
        if not self._running:
            return
        if isinstance(ev, LinkChanged):
            if ev.link.name in self._track_ifaces:
                self.set_tracked(f"interface:{ev.link.name}", ev.link.running and not ev.removed)
            if ev.link.index in self._vip_links and not ev.removed:
                self._vip_links[ev.link.index] = ev.link  # a new MAC is announced from then on
            if ev.removed and self.vmac_index and ev.link.index == self.vmac_index:
                self._queue(self._vmac_lost)
            if ev.link.index == self.ifindex:
                running = ev.link.running and not ev.removed
                self._queue(lambda: self._link_changed(running))
        elif isinstance(ev, AddressChanged):
            a = ev.address
            if a.family != self.fam:
                return
            if a.index == self.ifindex and self.vip_ifindex.get(a.address) != a.index:
                self._queue(self._address_changed)  # not one of ours: maybe the source address
            if (
                ev.removed
                and self.vip_ifindex.get(a.address) == a.index
                and self.state.state is core.State.MASTER
            ):
                self._queue(self._restore_vips)
        elif isinstance(ev, EventsLost):
            log.warning("vrrp: link events were lost (%s); re-reading %s", ev.reason, self.interface)
            self._queue(self._recheck_link)
            self._queue(self._restore_vips)

    async def _vmac_lost(self) -> None:
        """Someone deleted the virtual MAC interface: make it again; a master puts its addresses back."""
        if not self._running or not self.vmac_index:
            return
        log.warning("vrrp: %s was removed; making it again", self.vmac_name)
        self.counters["vmac_restored"] += 1
        await self._close_vmac()
        await self._open_vmac()
        await self._place_vips()
        await self._restore_vips()

    async def _restore_vips(self) -> None:
        """A master puts back virtual addresses someone removed (ip addr del, a network manager)."""
        if self.state.state is not core.State.MASTER or not self._running:
            return
        have = {(a.index, a.address) for a in await self.links.addresses(self.fam)}
        missing = [(a, plen) for a, plen in self.vips if (self.vip_ifindex.get(a, self.home), a) not in have]
        for a, plen in missing:
            log.warning(
                "vrrp: virtual address %s/%d was removed from %s; putting it back", a, plen, self.interface
            )
            self.counters["vips_restored"] += 1
            await self._add(a, plen)
        self._announce_vips([a for a, _ in missing])

    async def _address_changed(self) -> None:
        """An address came or went on the VRRP interface: a router waiting in FAULT for an address
        to send from starts; one whose source address vanished picks another or goes to FAULT."""
        s = self.state.state
        if s is core.State.FAULT:
            await self._recheck_link()
            return
        if s is core.State.INITIALIZE or not self._running:
            return
        primary = self.params.primary
        if any(a.address == primary for a in await self.links.addresses(self.fam, self.ifindex)):
            return
        log.warning("vrrp: %s lost the address %s adverts were sent from", self.interface, primary)
        if not await self._find_primary():
            self._event(core.InterfaceDown())

    async def _recheck_link(self) -> None:
        try:
            running = (await self.links.link(self.ifindex)).running
        except OSError:
            running = False
        await self._link_changed(running)

    async def _link_changed(self, running: bool) -> None:
        if not self._running:
            return
        self._link_running = running
        s = self.state.state
        if not running and s is not core.State.FAULT:
            log.warning("vrrp: %s lost its link", self.interface)
            self._event(core.InterfaceDown())
        elif running and s is core.State.FAULT and self._tracked_priority() is not None:
            if await self._find_primary():
                log.info("vrrp: %s has its link back", self.interface)
                self._event(core.Startup())
        self._changed()

    # --- tracking ---
    async def _update_tracking(self, ha: HAConfig) -> None:
        """A reload's tracked objects: kept ones keep their state, new ones start unknown (an
        interface is read now), scripts restart if their list changed."""
        keep = {k: v for k, v in self.tracked.items() if k.startswith("group:")}
        self._track_ifaces = {t.name: t.weight for t in ha.track_interfaces}
        self._track_services = {t.service: t.weight for t in ha.track_services}
        links = {lk.name: lk for lk in await self.links.links()} if self._track_ifaces else {}
        for ti in ha.track_interfaces:
            key = f"interface:{ti.name}"
            was = self.tracked.get(key, (0, None))[1]
            lk = links.get(ti.name)
            keep[key] = (ti.weight, was if was is not None else (lk is not None and lk.running))
        for ts in ha.track_services:
            key = f"service:{ts.service}"
            keep[key] = (ts.weight, self.tracked.get(key, (0, None))[1])
        if ha.track_scripts != self._track_scripts:
            for t in self._script_tasks:
                t.cancel()
            self._script_tasks = []
            self._track_scripts = ha.track_scripts
            for i, sc in enumerate(ha.track_scripts):
                keep[f"script:{i}"] = (sc.weight, None)
            if self._running and self._loop is not None:
                self._script_tasks = [
                    self._loop.create_task(self._run_script(i, sc), name=f"vrrp-track-{i}")
                    for i, sc in enumerate(ha.track_scripts)
                ]
        else:
            for i, sc in enumerate(ha.track_scripts):
                keep[f"script:{i}"] = self.tracked.get(f"script:{i}", (sc.weight, None))
        self.tracked = keep

    def own_fault(self) -> bool:
        """In fault for a reason of its own (its link, its source address, a weight-0 object it
        tracks), not only because a member of its sync group is: what the group follows."""
        own = [v for k, v in self.tracked.items() if not k.startswith("group:")]
        return (
            not self._link_running
            or not self.params.primary
            or core.tracked_priority(self.base_priority, own) is None
        )

    def _changed(self) -> None:
        if self.on_change is not None:
            try:
                self.on_change()
            except Exception:
                log.exception("vrrp: on_change callback failed")

    def _tracked_priority(self) -> int | None:
        return core.tracked_priority(self.base_priority, list(self.tracked.values()))

    def set_tracked(self, key: str, ok: bool | None) -> None:
        """A tracked object's verdict (``interface:NAME``, ``service:NAME``, ``script:N``): the
        priority is recomputed and a change is advertised at once (a weight-0 failure: FAULT)."""
        if key not in self.tracked:
            return
        weight, before = self.tracked[key]
        if before == ok:
            return
        self.tracked[key] = (weight, ok)
        if not key.startswith("group:"):
            self._changed()
        log.info(
            "vrrp: vrid %d tracks %s: %s",
            self.params.vrid,
            key,
            "unknown" if ok is None else "ok" if ok else "failing",
        )
        self._apply_priority()

    def set_services(self, verdicts: Mapping[str, bool | None]) -> None:
        """The tracked services' health (``lvsd.core.service_health.service_verdicts``)."""
        for name in self._track_services:
            if name in verdicts:
                self.set_tracked(f"service:{name}", verdicts[name])

    def _apply_priority(self) -> None:
        prio = self._tracked_priority()
        if prio is None:
            if self._running and self.state.state is not core.State.FAULT:
                log.warning("vrrp: vrid %d: a tracked object of weight 0 is failing: fault", self.params.vrid)
                self._event(core.InterfaceDown())
            return
        if prio != self.params.priority:
            log.info(
                "vrrp: vrid %d priority %d -> %d (tracking)", self.params.vrid, self.params.priority, prio
            )
            self.params = replace(self.params, priority=prio)
            self.counters["priority_changes"] += 1
            if self._running and self.state.state is core.State.MASTER:
                self._send(prio)  # at once: a backup that now wins takes over after its master-down interval
        if self._running and self.state.state is core.State.FAULT and self._link_running:
            self._queue(self._recheck_link)

    async def _run_script(self, i: int, sc: TrackScript) -> None:
        """Run a track script every interval with the hook runner (its process group killed at the
        timeout: a failure); ``fall`` failures in a row make it failing, ``rise`` successes OK."""
        key = f"script:{i}"
        oks = fails = 0
        while True:
            result = await run_hook(sc.argv, {"LVSD_VRID": str(self.params.vrid)}, sc.timeout)
            ok = result == "ok"
            oks, fails = (oks + 1, 0) if ok else (0, fails + 1)
            if not ok:
                self.counters["track_script_failures"] += 1
                if fails == 1:
                    log.warning("vrrp: track script %s: %s", sc.argv[0], result)
            cur = self.tracked[key][1]
            if ok and cur is not True and (cur is None or oks >= sc.rise):
                self.set_tracked(key, True)
            elif not ok and cur is not False and (cur is None or fails >= sc.fall):
                self.set_tracked(key, False)
            await asyncio.sleep(sc.interval)
