"""VRRPv3 on the wire: the asyncio I/O around the pure state machine of ``lvsd.core.vrrp``.

One ``VRRPInstance`` per ``[ha]`` section: a raw IP socket (protocol 112) bound to the interface
and joined to 224.0.0.18 / ff02::12, TTL/hop limit 255 out and required in; adverts list every
virtual address. On takeover the addresses are added through rtnetlink and announced with
gratuitous ARP (IPv4) or unsolicited neighbour advertisements (IPv6); on release they are removed.
Link state comes from an rtnetlink monitor socket: losing the carrier is FAULT.

The rtnetlink calls are a few fixed messages, done with a plain netlink socket (stdlib) so that
sockets are created synchronously (inside a network namespace if asked) and take-over is fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import ipaddress
import logging
import os
import socket
import struct
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace

from lvsd.core import vrrp as core

log = logging.getLogger("lvsd.vrrp")

# Linux constants the socket module does not always export
IP_PKTINFO = 8
IP_MULTICAST_ALL = 49
IPV6_RECVPKTINFO = 49
IPV6_PKTINFO = 50
IPV6_RECVHOPLIMIT = 51
IPV6_HOPLIMIT = 52
IPV6_MULTICAST_ALL = 29
ICMP6_FILTER = 1
SO_BINDTODEVICE = 25
CLONE_NEWNET = 0x40000000

# rtnetlink
NETLINK_ROUTE = 0
RTMGRP_LINK = 1
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV6_IFADDR = 0x100
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK = 0x1, 0x2, 0x4
NLM_F_CREATE, NLM_F_EXCL, NLM_F_DUMP = 0x400, 0x200, 0x300
IFA_ADDRESS, IFA_LOCAL = 1, 2
IFA_F_NODAD = 0x02
IFF_UP, IFF_RUNNING, IFF_LOWER_UP = 0x1, 0x40, 0x10000
IFLA_ADDRESS, IFLA_IFNAME = 1, 3
_NLHDR = struct.Struct("=IHHII")


class VRRPError(Exception):
    """VRRP cannot run (no such interface, no address to send from, no permission)."""


# --- network namespaces (tests run several directors in one process) -----------------------------

_libc = ctypes.CDLL(None, use_errno=True)


@contextlib.contextmanager
def in_netns(name: str | None) -> Iterator[None]:
    """Run the block inside network namespace ``name`` (/run/netns/NAME or a path); None = here.
    Sockets created inside keep the namespace after the block."""
    if not name:
        yield
        return
    path = name if "/" in name else f"/run/netns/{name}"
    here = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        there = os.open(path, os.O_RDONLY)
        try:
            if _libc.setns(there, CLONE_NEWNET) != 0:
                e = ctypes.get_errno()
                raise OSError(e, f"setns {path}: {os.strerror(e)}")
            try:
                yield
            finally:
                _libc.setns(here, CLONE_NEWNET)
        finally:
            os.close(there)
    finally:
        os.close(here)


# --- a minimal rtnetlink client ---------------------------------------------------------------------


def _attr(kind: int, payload: bytes) -> bytes:
    n = 4 + len(payload)
    return struct.pack("=HH", n, kind) + payload + b"\0" * ((4 - n % 4) % 4)


def _attrs(data: bytes, off: int) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    while off + 4 <= len(data):
        n, kind = struct.unpack_from("=HH", data, off)
        if n < 4:
            break
        out[kind & 0x3FFF] = data[off + 4 : off + n]
        off += (n + 3) & ~3
    return out


def _messages(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(type, seq, payload) of each netlink message in a datagram."""
    off = 0
    while off + _NLHDR.size <= len(data):
        n, typ, _flags, seq, _pid = _NLHDR.unpack_from(data, off)
        if n < _NLHDR.size:
            break
        yield typ, seq, data[off + _NLHDR.size : off + n]
        off += (n + 3) & ~3


class Rtnl:
    """Blocking rtnetlink requests (link and address): each is one message and its ACK or dump."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self.sock.settimeout(5.0)
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def _request(self, typ: int, flags: int, body: bytes) -> list[tuple[int, bytes]]:
        self.seq += 1
        seq = self.seq
        self.sock.send(_NLHDR.pack(_NLHDR.size + len(body), typ, flags | NLM_F_REQUEST, seq, 0) + body)
        out: list[tuple[int, bytes]] = []
        while True:
            data = self.sock.recv(65536)
            for mtyp, mseq, payload in _messages(data):
                if mseq != seq:
                    continue
                if mtyp == NLMSG_DONE:
                    return out
                if mtyp == NLMSG_ERROR:
                    (err,) = struct.unpack_from("=i", payload)
                    if err:
                        raise OSError(-err, os.strerror(-err))
                    return out
                out.append((mtyp, payload))
            if out and not flags & (NLM_F_DUMP | NLM_F_ACK):
                return out  # a plain get: one answer, no ACK follows

    def link(self, index: int) -> tuple[int, bytes]:
        """(flags, MAC address) of an interface."""
        msgs = self._request(RTM_GETLINK, 0, struct.pack("=BxHiII", 0, 0, index, 0, 0))
        for typ, payload in msgs:
            if typ == RTM_NEWLINK:
                _fam, _type, _idx, flags, _chg = struct.unpack_from("=BxHiII", payload)
                return flags, _attrs(payload, 16).get(IFLA_ADDRESS, b"")
        raise OSError(errno.ENODEV, f"no interface with index {index}")

    def all_addresses(self, family: int) -> list[tuple[int, str, int, int]]:
        """(interface index, address, prefix length, scope) of every address of ``family``."""
        out = []
        for typ, payload in self._request(RTM_GETADDR, NLM_F_DUMP, struct.pack("=BBBBI", family, 0, 0, 0, 0)):
            if typ != RTM_NEWADDR:
                continue
            fam, plen, _flags, scope, idx = struct.unpack_from("=BBBBI", payload)
            if fam != family:
                continue
            a = _attrs(payload, 8)
            raw = a.get(IFA_LOCAL) or a.get(IFA_ADDRESS)
            if raw:
                out.append((idx, str(ipaddress.ip_address(raw)), plen, scope))
        return out

    def addresses(self, index: int, family: int) -> list[tuple[str, int, int]]:
        """(address, prefix length, scope) of each address of ``family`` on the interface."""
        return [(a, plen, scope) for idx, a, plen, scope in self.all_addresses(family) if idx == index]

    def addr(self, add: bool, index: int, address: str, prefixlen: int) -> bool:
        """Add or delete one address; False if it was already there (add) or absent (delete)."""
        ip = ipaddress.ip_address(address)
        fam = socket.AF_INET if ip.version == 4 else socket.AF_INET6
        flags = IFA_F_NODAD if (add and ip.version == 6) else 0
        body = struct.pack("=BBBBI", fam, prefixlen, flags, 0, index)
        body += _attr(IFA_LOCAL, ip.packed) + _attr(IFA_ADDRESS, ip.packed)
        try:
            if add:
                self._request(RTM_NEWADDR, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, body)
            else:
                self._request(RTM_DELADDR, NLM_F_ACK, body)
        except OSError as e:
            if (add and e.errno == errno.EEXIST) or (
                not add and e.errno in (errno.EADDRNOTAVAIL, errno.ENOENT)
            ):
                return False
            raise
        return True


def link_running(flags: int) -> bool:
    """An interface can carry VRRP when it is up and has a carrier."""
    return bool(flags & IFF_UP) and bool(flags & IFF_RUNNING)


# --- announcements -------------------------------------------------------------------------------


def garp_frame(mac: bytes, vip: str) -> bytes:
    """A broadcast gratuitous ARP request for ``vip`` from ``mac`` (sender = target = vip)."""
    ip = ipaddress.IPv4Address(vip).packed
    eth = b"\xff" * 6 + mac + struct.pack("!H", 0x0806)
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac + ip + b"\0" * 6 + ip
    return eth + arp


def unsolicited_na(mac: bytes, vip: str) -> bytes:
    """An ICMPv6 neighbour advertisement (override flag, target link-layer option) for ``vip``;
    the kernel fills in the checksum."""
    return (
        struct.pack("!BBHI", 136, 0, 0, 0x20000000)
        + ipaddress.IPv6Address(vip).packed
        + struct.pack("!BB", 2, 1)
        + mac
    )


# --- the instance ---------------------------------------------------------------------------------


class VRRPInstance:
    """One VRRP router on one interface. ``on_state(state)`` is called after each state change,
    once the addresses have been added or removed."""

    def __init__(
        self,
        interface: str,
        vrid: int,
        priority: int,
        advert_interval: float,
        vips: list[tuple[str, int]],
        on_state: Callable[[core.State], None],
        *,
        preempt: bool = True,
        preempt_delay: float = 0.0,
        netns: str | None = None,
        version: int = core.VRRP_VERSION,
    ) -> None:
        if not vips:
            raise VRRPError("ha.vips: VRRP needs at least one virtual address")
        self.interface = interface
        self.netns = netns
        self.on_state = on_state
        self.af = core.family_of([a for a, _ in vips])
        self.vips = [(str(ipaddress.ip_address(a)), plen) for a, plen in vips]
        self.params = core.Params(
            vrid=vrid,
            priority=priority,
            advert_int=max(1, min(core.MAX_ADVER_INT_CS, round(advert_interval * 100))),
            primary="",
            vips=tuple(a for a, _ in self.vips),
            preempt=preempt,
            preempt_delay=preempt_delay,
            version=version,
        )
        if version == 2 and self.af != core.AF_INET:
            raise VRRPError("ha.version: VRRPv2 is IPv4 only")
        self.state = core.VRRPState()
        self.group = core.VRRP_GROUP4 if self.af == core.AF_INET else core.VRRP_GROUP6
        self.ifindex = 0
        self.mac = b""
        self.vip_ifindex: dict[str, int] = {}  # where each virtual address goes
        self.counters: Counter[str] = Counter()
        self.last_warning = ""
        self.master_seen = ""
        self.became_master_at: float | None = None
        self.last_advert_at: float | None = None  # loop time of the last accepted advert
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sock: socket.socket | None = None
        self._mon: socket.socket | None = None
        self._announce: dict[int, tuple[socket.socket, bytes]] = {}  # ifindex -> (socket, MAC)
        self._rtnl: Rtnl | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._garp_handles: list[asyncio.TimerHandle] = []
        self._ifnames: dict[int, str] = {}
        self._last_reannounce = float("-inf")
        self._running = False

    # --- life cycle ---
    async def start(self) -> None:
        """Open the sockets, remove left-over virtual addresses, start as Backup (or FAULT if the
        link is down). Raises VRRPError if the interface or its address is missing."""
        self._loop = asyncio.get_running_loop()
        with in_netns(self.netns):
            try:
                self.ifindex = socket.if_nametoindex(self.interface)
            except OSError:
                raise VRRPError(f"ha.interface: no interface {self.interface!r}") from None
            self._rtnl = Rtnl()
            flags, self.mac = self._rtnl.link(self.ifindex)
            self._open_sockets()
            self._place_vips()
        self._running = True
        for addr, plen in self.vips:  # a crashed predecessor may have left them
            if self._rtnl.addr(False, self.vip_ifindex[addr], addr, plen):
                log.warning("vrrp: removed left-over virtual address %s/%d", addr, plen)
        self._loop.add_reader(self._sock.fileno(), self._on_readable)  # type: ignore[union-attr]
        self._loop.add_reader(self._mon.fileno(), self._on_link_event)  # type: ignore[union-attr]
        if link_running(flags) and self._find_primary():
            self._event(core.Startup())
        else:
            self._event(core.InterfaceDown())

    async def stop(self, resign: bool = True) -> None:
        """Leave: a master sends priority 0 (the backup takes over after its skew time) and removes
        the addresses. ``resign=False`` leaves the addresses where they are. Idempotent; also
        releases what a failed start() had opened."""
        if self._running and resign:
            self._event(core.Shutdown())
        self._running = False
        if self._timer:
            self._timer.cancel()
            self._timer = None
        for h in self._garp_handles:
            h.cancel()
        self._garp_handles = []
        for s in (self._sock, self._mon):
            if s is not None:
                if self._loop is not None:
                    self._loop.remove_reader(s.fileno())
                s.close()
        self._sock = self._mon = None
        for s, _mac in self._announce.values():
            s.close()
        self._announce = {}
        if self._rtnl:
            self._rtnl.close()
            self._rtnl = None

    def update(
        self,
        priority: int,
        advert_interval: float,
        vips: list[tuple[str, int]],
        preempt: bool,
        preempt_delay: float,
    ) -> None:
        """Apply a reload that keeps the interface, VRID and family; a master adjusts its addresses."""
        new_vips = [(str(ipaddress.ip_address(a)), plen) for a, plen in vips]
        if core.family_of([a for a, _ in new_vips]) != self.af:
            raise VRRPError("ha.vips: cannot change the address family on reload")
        old = set(self.vips)
        old_place = dict(self.vip_ifindex)
        self.vips = new_vips
        if self._rtnl is not None:
            with in_netns(self.netns):
                self._place_vips()
        self.params = replace(
            self.params,
            priority=priority,
            advert_int=max(1, min(core.MAX_ADVER_INT_CS, round(advert_interval * 100))),
            vips=tuple(a for a, _ in new_vips),
            preempt=preempt,
            preempt_delay=preempt_delay,
        )
        if self.state.state is core.State.MASTER and self._rtnl:
            for a, plen in old - set(new_vips):
                self._rtnl.addr(False, old_place.get(a, self.ifindex), a, plen)
            added = [v for v in new_vips if v not in old]
            for a, plen in added:
                self._rtnl.addr(True, self.vip_ifindex[a], a, plen)
            self._announce_vips([a for a, _ in added])
            self._send(self.params.priority)

    def status(self) -> dict:
        """State, timers and packet counters for ``lvsctl status``."""
        p = self.params
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
            "vip_interfaces": {a: self._ifnames.get(i, str(i)) for a, i in self.vip_ifindex.items()},
            "preempt": p.preempt,
            "preempt_delay": p.preempt_delay,
            "counters": dict(self.counters),
            "last_warning": self.last_warning,
        }

    # --- sockets ---
    def _open_sockets(self) -> None:
        ifname = self.interface.encode()
        if self.af == core.AF_INET:
            s = socket.socket(socket.AF_INET, socket.SOCK_RAW, core.VRRP_PROTO)
            s.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, ifname)
            s.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
            s.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
            mreqn = struct.pack("=4s4si", socket.inet_aton(self.group), b"\0" * 4, self.ifindex)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, core.VRRP_TTL)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, core.VRRP_TTL)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
        else:
            s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, core.VRRP_PROTO)
            s.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, ifname)
            s.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
            s.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVHOPLIMIT, 1)
            s.setsockopt(socket.IPPROTO_IPV6, IPV6_MULTICAST_ALL, 0)
            mreq = socket.inet_pton(socket.AF_INET6, self.group) + struct.pack("=I", self.ifindex)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, self.ifindex)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, core.VRRP_TTL)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, core.VRRP_TTL)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
        s.setblocking(False)
        m = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        m.bind((0, RTMGRP_LINK | (RTMGRP_IPV4_IFADDR if self.af == core.AF_INET else RTMGRP_IPV6_IFADDR)))
        m.setblocking(False)
        self._sock, self._mon = s, m

    def _place_vips(self) -> None:
        """Decide each virtual address's interface: the one that already has an address in the
        virtual address's subnet (e.g. a floating gateway on the real servers' side), else the
        VRRP interface; open an announcement socket on each. Called inside the namespace."""
        assert self._rtnl is not None
        fam = socket.AF_INET if self.af == core.AF_INET else socket.AF_INET6
        vips = {a for a, _ in self.vips}
        nets = []
        for idx, addr, plen, _scope in self._rtnl.all_addresses(fam):
            ip = ipaddress.ip_address(addr)
            if addr in vips or ip.is_link_local or ip.is_loopback:
                continue
            nets.append((idx, ipaddress.ip_network(f"{addr}/{plen}", strict=False)))
        place = {}
        for a, _plen in self.vips:
            ip = ipaddress.ip_address(a)
            own = [idx for idx, net in nets if ip in net]
            place[a] = self.ifindex if (not own or self.ifindex in own) else own[0]
        self.vip_ifindex = place
        for idx in sorted(set(place.values()) - set(self._announce)):
            name = socket.if_indextoname(idx)
            self._ifnames[idx] = name
            _flags, mac = self._rtnl.link(idx)
            if self.af == core.AF_INET:
                a = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
                a.bind((name, 0))
            else:
                a = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
                a.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, name.encode())
                a.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, b"\xff" * 32)  # we only send
                a.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, idx)
                a.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
                a.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 255)
            a.setblocking(False)
            self._announce[idx] = (a, mac)
        for a, idx in place.items():
            if idx != self.ifindex:
                log.info("vrrp: %s goes on %s, which holds its subnet", a, self._ifnames.get(idx, idx))

    def _find_primary(self) -> bool:
        """Pick the address adverts come from: the interface's first IPv4 address that is not a
        virtual one, or its IPv6 link-local address."""
        assert self._rtnl is not None
        vips = {a for a, _ in self.vips}
        fam = socket.AF_INET if self.af == core.AF_INET else socket.AF_INET6
        for addr, _plen, _scope in self._rtnl.addresses(self.ifindex, fam):
            ip = ipaddress.ip_address(addr)
            if addr in vips:
                continue
            if (self.af == core.AF_INET) or ip.is_link_local:
                self.params = replace(self.params, primary=addr)
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
        self.state, actions = core.step(self.params, self.state, self._loop.time(), ev)
        for act in actions:
            if isinstance(act, core.SendAdvert):
                self._send(act.priority)
            elif isinstance(act, core.TakeOver):
                self._take_over()
            elif isinstance(act, core.Release):
                self._release()
            elif isinstance(act, core.Announce):
                self._reannounce()
        if self._running:
            self._arm()
        if self.state.state is not before:
            log.info(
                "vrrp: %s vrid %d %s -> %s",
                self.interface,
                self.params.vrid,
                before.value,
                self.state.state.value,
            )
            self.on_state(self.state.state)

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
        data = core.encode(adv, self.params.primary, self.group)
        if self.af == core.AF_INET:
            info = struct.pack("=i4s4s", self.ifindex, socket.inet_aton(self.params.primary), b"\0" * 4)
            anc = [(socket.IPPROTO_IP, IP_PKTINFO, info)]
        else:
            info = socket.inet_pton(socket.AF_INET6, self.params.primary) + struct.pack("=I", self.ifindex)
            anc = [(socket.IPPROTO_IPV6, IPV6_PKTINFO, info)]
        try:
            dest = (self.group, 0) if self.af == core.AF_INET else (self.group, 0, 0, self.ifindex)
            self._sock.sendmsg([data], anc, 0, dest)
            self.counters["sent"] += 1
            if priority == 0:
                self.counters["sent_priority_0"] += 1
        except OSError as e:
            self.counters["send_errors"] += 1
            if self.counters["send_errors"] in (1, 10, 100) or self.counters["send_errors"] % 1000 == 0:
                log.warning("vrrp: sending an advert on %s failed: %s", self.interface, e.strerror)

    def _take_over(self) -> None:
        assert self._rtnl is not None
        for addr, plen in self.vips:
            try:
                self._rtnl.addr(True, self.vip_ifindex.get(addr, self.ifindex), addr, plen)
            except OSError as e:
                log.error("vrrp: cannot add %s/%d to %s: %s", addr, plen, self.interface, e.strerror)
        assert self._loop is not None
        self.became_master_at = self._loop.time()
        addrs = [a for a, _ in self.vips]
        self._announce_vips(addrs)
        for h in self._garp_handles:
            h.cancel()
        # repeat: a switch or a neighbour may have missed the first burst
        self._garp_handles = [
            self._loop.call_later(d, self._announce_if_master, addrs) for d in (0.5, 2.0, 5.0)
        ]

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
            idx = self.vip_ifindex.get(a, self.ifindex)
            if idx not in self._announce:
                continue
            sock, mac = self._announce[idx]
            try:
                if self.af == core.AF_INET:
                    sock.send(garp_frame(mac, a))
                else:
                    sock.sendto(unsolicited_na(mac, a), ("ff02::1", 0, 0, idx))
                self.counters["announcements"] += 1
            except OSError as e:
                self.counters["announce_errors"] += 1
                log.warning("vrrp: announcing %s on %s failed: %s", a, self.interface, e.strerror)

    def _release(self) -> None:
        for h in self._garp_handles:
            h.cancel()
        self._garp_handles = []
        self.became_master_at = None
        if self._rtnl is None:
            return
        for addr, plen in self.vips:
            try:
                self._rtnl.addr(False, self.vip_ifindex.get(addr, self.ifindex), addr, plen)
            except OSError as e:
                log.error("vrrp: cannot remove %s/%d from %s: %s", addr, plen, self.interface, e.strerror)

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
        if dst != self.group:
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

    def _on_link_event(self) -> None:
        assert self._mon is not None
        while True:
            try:
                data = self._mon.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # ENOBUFS: events lost; ask the kernel for the current state
                log.warning("vrrp: link monitor: %s; re-reading %s", e.strerror, self.interface)
                self._recheck_link()
                continue
            for typ, _seq, payload in _messages(data):
                if typ in (RTM_NEWADDR, RTM_DELADDR) and len(payload) >= 8:
                    idx = struct.unpack_from("=BBBBI", payload)[4]
                    if idx == self.ifindex:
                        self._address_changed()
                    continue
                if typ not in (RTM_NEWLINK, RTM_DELLINK) or len(payload) < 16:
                    continue
                _fam, _type, idx, flags, _chg = struct.unpack_from("=BxHiII", payload)
                if idx != self.ifindex:
                    continue
                self._link_changed(typ == RTM_NEWLINK and link_running(flags))

    def _address_changed(self) -> None:
        """An address came or went on the VRRP interface: a router waiting in FAULT for an address
        to send from starts; one whose source address vanished picks another or goes to FAULT."""
        s = self.state.state
        primary = self.params.primary
        if s is core.State.FAULT:
            self._recheck_link()
            return
        if s is core.State.INITIALIZE or not self._rtnl:
            return
        fam = socket.AF_INET if self.af == core.AF_INET else socket.AF_INET6
        if any(a == primary for a, _, _ in self._rtnl.addresses(self.ifindex, fam)):
            return
        log.warning("vrrp: %s lost the address %s adverts were sent from", self.interface, primary)
        if not self._find_primary():
            self._event(core.InterfaceDown())

    def _recheck_link(self) -> None:
        assert self._rtnl is not None
        try:
            flags, _ = self._rtnl.link(self.ifindex)
        except OSError:
            flags = 0
        self._link_changed(link_running(flags))

    def _link_changed(self, running: bool) -> None:
        s = self.state.state
        if not running and s is not core.State.FAULT:
            log.warning("vrrp: %s lost its link", self.interface)
            self._event(core.InterfaceDown())
        elif running and s is core.State.FAULT:
            if self._find_primary():
                log.info("vrrp: %s has its link back", self.interface)
                self._event(core.Startup())
