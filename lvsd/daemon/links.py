"""Link I/O behind a port: link state and events, addresses, links of a kind, announcements.

``Links`` is the narrow interface the daemon's link-level features (VRRP today; unicast peers,
interface tracking, virtual MAC, a BGP "announce" dummy link later) use instead of talking
rtnetlink themselves. Two implementations keep one contract (tests/contract/test_links.py):

* ``lvsd.daemon.links_pyroute2.PyrouteLinks``: the kernel, through pyroute2's ``AsyncIPRoute`` in
  the daemon's event loop (links of every kind, nested link info, addresses, routes, events);
* ``MemoryLinks`` (here): an in-memory kernel for tests, errors included (EEXIST for an address
  added twice or a link name taken, EADDRNOTAVAIL for a missing address, ENODEV for a missing link).

``open_links`` imports pyroute2 only when called: ``import pyroute2`` costs ~0.1 s on a host and
~2.5 s under emulation, which a daemon in static or external mode (and lvsadm) must not pay.
Errors are ``OSError`` with the kernel's errno, whichever the implementation.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import ipaddress
import os
import socket
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Protocol

CLONE_NEWNET = 0x40000000
IFF_UP, IFF_RUNNING = 0x1, 0x40


# --- values ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Link:
    """A network interface as the kernel reports it. ``kind`` is the rtnetlink link kind
    ("dummy", "veth", "macvlan", ...; "" for a physical device); ``up`` is the administrative state
    (IFF_UP), ``carrier`` whether it can pass packets (IFF_RUNNING). ``parent`` is the link it
    is stacked on (IFLA_LINK: a macvlan's lower device; 0 for none) and ``mode`` a macvlan's mode
    ("private", "bridge", ...; "" for other kinds)."""

    index: int
    name: str
    kind: str = ""
    mac: bytes = b""
    up: bool = False
    carrier: bool = False
    parent: int = 0
    mode: str = ""

    @property
    def running(self) -> bool:
        """Up and with a carrier: the link can carry VRRP."""
        return self.up and self.carrier


@dataclass(frozen=True, slots=True)
class Address:
    """An address on a link: ``family`` is socket.AF_INET or AF_INET6, ``scope`` the rtnetlink
    scope (0 global, 253 link, 254 host)."""

    index: int
    address: str
    prefixlen: int
    family: int
    scope: int = 0


@dataclass(frozen=True, slots=True)
class LinkChanged:
    """A link appeared, changed (flags, carrier) or, with ``removed``, went away."""

    link: Link
    removed: bool = False


@dataclass(frozen=True, slots=True)
class AddressChanged:
    """An address was added or, with ``removed``, deleted."""

    address: Address
    removed: bool = False


@dataclass(frozen=True, slots=True)
class EventsLost:
    """The kernel dropped events (receive buffer overrun): re-read whatever is watched."""

    reason: str = ""


LinkEvent = LinkChanged | AddressChanged | EventsLost


class Links(Protocol):
    """The port. Queries and changes are coroutines (the kernel answers over a socket); events go
    to callbacks in the event loop (``watch``); announcements are non-blocking sends."""

    async def link(self, which: int | str) -> Link:
        """The link with this index or name; OSError(ENODEV) if there is none."""
        ...

    async def links(self) -> list[Link]:
        """Every link, by index."""
        ...

    async def addresses(self, family: int = 0, index: int = 0) -> list[Address]:
        """Addresses of ``family`` (0 = both) on link ``index`` (0 = every link)."""
        ...

    async def add_address(self, index: int, address: str, prefixlen: int) -> None:
        """Add an address (IPv6 without duplicate address detection: a virtual address must be
        usable at once). OSError(EEXIST) if it is there, ENODEV if the link is not."""
        ...

    async def delete_address(self, index: int, address: str, prefixlen: int) -> None:
        """Delete an address; OSError(EADDRNOTAVAIL) if it is not there."""
        ...

    async def create_link(self, name: str, kind: str, **info: object) -> Link:
        """Create a link of ``kind`` (``info``: the kind's attributes, e.g. ``link`` and
        ``macvlan_mode`` for macvlan); OSError(EEXIST) if the name is taken."""
        ...

    async def delete_link(self, index: int) -> None:
        """Delete a link (its addresses go with it); OSError(ENODEV) if it does not exist."""
        ...

    async def set_link_up(self, index: int, up: bool) -> None:
        """Set the administrative state (ip link set up/down)."""
        ...

    async def link_conf(self, name: str, key: str, value: str | None = None) -> str:
        """A per-link setting, ``key`` = "ipv4/arp_ignore", "ipv6/disable_ipv6", ... (the
        kernel's /proc/sys/net/<family>/conf/<name>/<setting>): returns its value, and sets it
        to ``value`` if given (returning the value before). OSError(ENODEV) if no such link."""
        ...

    async def watch(self, callback: Callable[[LinkEvent], None]) -> Callable[[], None]:
        """Call ``callback`` in the event loop for each link and address event from now on;
        returns the function that stops it."""
        ...

    def announce(self, link: Link, address: str) -> None:
        """Tell the link's neighbours that ``address`` is here: a gratuitous ARP (IPv4) or an
        unsolicited neighbour advertisement (IPv6). Raises OSError if the send fails."""
        ...

    async def close(self) -> None:
        """Release the sockets. Idempotent."""
        ...


async def open_links(netns: str | None = None) -> Links:
    """The kernel's links (in network namespace ``netns`` if given), through pyroute2: imported
    here, on first use, so that modes without link features never load it."""
    from .links_pyroute2 import PyrouteLinks

    return PyrouteLinks(netns)


def os_error(code: int, what: str = "") -> OSError:
    """OSError with the kernel's errno and message, as both implementations raise it."""
    msg = os.strerror(code)
    return OSError(code, f"{what}: {msg}" if what else msg)


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


# --- announcement frames ---------------------------------------------------------------------------


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


def family_of(address: str) -> int:
    """socket.AF_INET or AF_INET6 for an address in text."""
    return socket.AF_INET if ipaddress.ip_address(address).version == 4 else socket.AF_INET6


def link_local_of(mac: bytes) -> str:
    """The EUI-64 IPv6 link-local address the kernel gives a link with this MAC when it comes up."""
    eui = bytes([mac[0] ^ 0x02]) + mac[1:3] + b"\xff\xfe" + mac[3:6]
    return str(ipaddress.IPv6Address(b"\xfe\x80" + b"\0" * 6 + eui))


# --- the in-memory kernel ----------------------------------------------------------------------------

#: the per-link settings MemoryLinks knows (the kernel has more; these are the ones lvsd sets)
MEMORY_CONF = frozenset(
    f"ipv4/{k}"
    for k in ("arp_ignore", "arp_filter", "arp_announce", "accept_local", "rp_filter", "forwarding")
) | frozenset(f"ipv6/{k}" for k in ("disable_ipv6", "addr_gen_mode", "forwarding"))


class MemoryLinks:
    """An in-memory kernel for the port: links, addresses, events and announcements.

    Behaves like the kernel where the port reaches: a new link is down, a link coming up gets an
    IPv6 link-local address (loopback excepted) and a carrier (``set_carrier`` pulls the cable),
    deleting a link deletes its addresses, errors carry the kernel's errno, and events are delivered
    by the event loop after the change, never inside the call. ``announcements`` records each
    (link name, address) announced."""

    def __init__(self) -> None:
        self._links: dict[int, Link] = {}
        self._addrs: list[Address] = []
        self._watchers: list[Callable[[LinkEvent], None]] = []
        self._next_index = 1
        self._cables: dict[int, bool] = {}
        self.announcements: list[tuple[str, str]] = []
        #: per-link settings set through ``link_conf``: (index, "ipv4/arp_ignore") -> value
        self.conf: dict[tuple[int, str], str] = {}
        self.closed = False
        lo = self._new("lo", "", b"\0" * 6)
        self._links[lo.index] = replace(lo, up=True, carrier=True)
        self._addrs += [
            Address(lo.index, "127.0.0.1", 8, socket.AF_INET, 254),
            Address(lo.index, "::1", 128, socket.AF_INET6, 254),
        ]

    # --- test controls (what a cable or a peer would do) ---
    def add_nic(self, name: str, mac: bytes | None = None, up: bool = True) -> Link:
        """A physical interface (kind ""), up with a carrier unless ``up`` is False."""
        link = self._new(name, "", mac)
        self._emit(LinkChanged(link))
        if up:
            self._set_up(link.index, True)
        return self._links[link.index]

    def set_carrier(self, which: int | str, carrier: bool) -> None:
        """Plug or pull a link's cable: its carrier follows while it is up."""
        link = self._get(which)
        self._cables[link.index] = carrier
        new = replace(link, carrier=carrier and link.up)
        if new != link:
            self._links[link.index] = new
            self._emit(LinkChanged(new))
        for child in [lk for lk in self._links.values() if lk.parent == link.index]:
            self.set_carrier(child.index, carrier)  # a macvlan has its lower link's carrier

    def addresses_now(self, index: int = 0) -> list[Address]:
        """The addresses at this instant (on link ``index``, 0 = all), for observers that cannot await."""
        return [a for a in self._addrs if not index or a.index == index]

    def lose_events(self) -> None:
        """Simulate a receive buffer overrun: watchers are told to re-read."""
        self._emit(EventsLost("simulated overrun"))

    # --- the port ---
    async def link(self, which: int | str) -> Link:
        """The link with this index or name; OSError(ENODEV) if there is none."""
        return self._get(which)

    async def links(self) -> list[Link]:
        """Every link, by index."""
        return [self._links[i] for i in sorted(self._links)]

    async def addresses(self, family: int = 0, index: int = 0) -> list[Address]:
        """Addresses of ``family`` (0 = both) on link ``index`` (0 = every link)."""
        return [
            a for a in self._addrs if (not family or a.family == family) and (not index or a.index == index)
        ]

    async def add_address(self, index: int, address: str, prefixlen: int) -> None:
        """Add an address; OSError(EEXIST) if it is there, ENODEV if the link is not."""
        self._get(index)
        addr = str(ipaddress.ip_address(address))
        fam = family_of(addr)
        if self._find(index, addr, prefixlen, fam) is not None:
            raise os_error(errno.EEXIST, f"{addr}/{prefixlen}")
        scope = (
            254
            if ipaddress.ip_address(addr).is_loopback
            else 253
            if ipaddress.ip_address(addr).is_link_local
            else 0
        )
        a = Address(index, addr, prefixlen, fam, scope)
        self._addrs.append(a)
        self._emit(AddressChanged(a))

    async def delete_address(self, index: int, address: str, prefixlen: int) -> None:
        """Delete an address; OSError(EADDRNOTAVAIL) if it is not there."""
        addr = str(ipaddress.ip_address(address))
        a = self._find(index, addr, prefixlen, family_of(addr))
        if a is None:
            raise os_error(errno.EADDRNOTAVAIL, f"{addr}/{prefixlen}")
        self._addrs.remove(a)
        self._emit(AddressChanged(a, removed=True))

    async def create_link(self, name: str, kind: str, **info: object) -> Link:
        """Create a link of ``kind``, down; OSError(EEXIST) if the name is taken. A macvlan needs
        its lower link (``link``, ENODEV if missing), takes ``macvlan_mode`` (default "vepa",
        the kernel's) and has its lower link's carrier."""
        if not kind:
            raise os_error(errno.EINVAL, f"{name}: a link kind is needed")
        parent = 0
        if kind == "macvlan":
            parent = self._get(int(str(info.get("link", 0)))).index
        mac = info.get("address")
        link = self._new(name, kind, bytes.fromhex(str(mac).replace(":", "")) if mac else None)
        if parent:
            link = replace(link, parent=parent, mode=str(info.get("macvlan_mode") or "vepa"))
            self._links[link.index] = link
            self._cables[link.index] = self._links[parent].carrier
        self._emit(LinkChanged(link))
        return link

    async def delete_link(self, index: int) -> None:
        """Delete a link and its addresses; OSError(ENODEV) if it does not exist."""
        link = self._get(index)
        for a in [a for a in self._addrs if a.index == index]:
            self._addrs.remove(a)
            self._emit(AddressChanged(a, removed=True))
        for child in [lk for lk in self._links.values() if lk.parent == index]:
            await self.delete_link(child.index)  # stacked links go with their lower link
        self.conf = {k: v for k, v in self.conf.items() if k[0] != index}
        del self._links[index]
        self._emit(LinkChanged(link, removed=True))

    async def set_link_up(self, index: int, up: bool) -> None:
        """Set the administrative state."""
        self._get(index)
        self._set_up(index, up)

    async def link_conf(self, name: str, key: str, value: str | None = None) -> str:
        """A per-link setting (kernel defaults "0"); set to ``value`` if given; returns the one before."""
        link = self._get(name)
        if key not in MEMORY_CONF:
            raise os_error(errno.ENOENT, f"{name}: no setting {key!r}")
        before = self.conf.get((link.index, key), "0")
        if value is not None:
            self.conf[(link.index, key)] = value
        return before

    async def watch(self, callback: Callable[[LinkEvent], None]) -> Callable[[], None]:
        """Call ``callback`` for each later event; returns the function that stops it."""
        self._watchers.append(callback)

        def stop() -> None:
            if callback in self._watchers:
                self._watchers.remove(callback)

        return stop

    def announce(self, link: Link, address: str) -> None:
        """Record the announcement; OSError(ENETDOWN) if the link is down, as a send would fail."""
        have = self._get(link.index)
        if not have.up:
            raise os_error(errno.ENETDOWN, have.name)
        self.announcements.append((have.name, str(ipaddress.ip_address(address))))

    async def close(self) -> None:
        """Nothing to release; remembered for tests."""
        self.closed = True
        self._watchers.clear()

    # --- internals ---
    def _new(self, name: str, kind: str, mac: bytes | None) -> Link:
        if any(lk.name == name for lk in self._links.values()):
            raise os_error(errno.EEXIST, name)
        if not name or len(name) > 15 or "/" in name or " " in name:
            raise os_error(errno.EINVAL, f"{name!r}: not a valid link name")
        index = self._next_index
        self._next_index += 1
        if mac is None:
            mac = bytes([0x02, 0, 0, 0, index >> 8 & 0xFF, index & 0xFF])
        link = Link(index, name, kind, mac)
        self._links[index] = link
        self._cables[index] = True
        return link

    def _get(self, which: int | str) -> Link:
        if isinstance(which, int):
            link = self._links.get(which)
        else:
            link = next((lk for lk in self._links.values() if lk.name == which), None)
        if link is None:
            raise os_error(errno.ENODEV, f"link {which}")
        return link

    def _find(self, index: int, addr: str, prefixlen: int, fam: int) -> Address | None:
        for a in self._addrs:
            # the kernel keys IPv4 addresses by address and prefix, IPv6 ones by address alone
            if (
                a.index == index
                and a.address == addr
                and (fam == socket.AF_INET6 or a.prefixlen == prefixlen)
            ):
                return a
        return None

    def _set_up(self, index: int, up: bool) -> None:
        link = self._links[index]
        new = replace(link, up=up, carrier=up and self._cables.get(index, True))
        if new == link:
            return
        self._links[index] = new
        self._emit(LinkChanged(new))
        no_ipv6 = self.conf.get((index, "ipv6/disable_ipv6"), "0") == "1"
        if up and link.name != "lo" and new.mac.strip(b"\0") and not no_ipv6:
            ll = link_local_of(new.mac)
            if self._find(index, ll, 64, socket.AF_INET6) is None:
                a = Address(index, ll, 64, socket.AF_INET6, 253)
                self._addrs.append(a)
                self._emit(AddressChanged(a))

    def _emit(self, ev: LinkEvent) -> None:
        if not self._watchers:
            return
        loop = asyncio.get_running_loop()
        for cb in list(self._watchers):
            loop.call_soon(cb, ev)
