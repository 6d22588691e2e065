"""The links port on the kernel, through pyroute2's ``AsyncIPRoute`` in the daemon's event loop.

Imported only by ``lvsd.daemon.links.open_links`` (vrrp mode): pyroute2 costs ~0.1 s to import on
a host and ~2.5 s under emulation. pyroute2 covers links of every kind with nested link info,
addresses, routes and events, which the virtual-MAC (macvlan) and BGP-announce (dummy link) work
needs; the IPVS path keeps the project's own generic-netlink codec (docs/performance.md).

Two rtnetlink sockets: one for requests, one bound to the link and address groups for events,
made when the first watcher comes. A network namespace is entered only to create sockets (the
same ``in_netns`` as the rest of the daemon), never through pyroute2's netns helper process.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import os
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

# pyroute2 ships no type information (no py.typed): its objects are Any here
from pyroute2 import AsyncIPRoute  # type: ignore[import-untyped]  # no py.typed in pyroute2
from pyroute2.netlink.exceptions import NetlinkError  # type: ignore[import-untyped]  # same
from pyroute2.netlink.rtnl import (  # type: ignore[import-untyped]  # same
    RTMGRP_IPV4_IFADDR,
    RTMGRP_IPV6_IFADDR,
    RTMGRP_LINK,
)

from .links import (
    IFF_RUNNING,
    IFF_UP,
    Address,
    AddressChanged,
    EventsLost,
    Link,
    LinkChanged,
    LinkEvent,
    garp_frame,
    in_netns,
    os_error,
    unsolicited_na,
)

log = logging.getLogger("lvsd.links")

IFA_F_NODAD = 0x02
SO_BINDTODEVICE = 25
ICMP6_FILTER = 1
EVENT_GROUPS = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR
#: IFLA_MACVLAN_MODE values (linux/if_link.h) by name
MACVLAN_MODES = {1: "private", 2: "vepa", 4: "bridge", 8: "passthru", 16: "source"}


def _oserror(e: NetlinkError, what: str) -> OSError:
    return os_error(e.code or errno.EIO, what)


def _link(msg: Any) -> Link:
    mac = msg.get("address") or ""
    flags = msg.get("flags") or 0
    kind = msg.get(("linkinfo", "kind")) or ""
    mode = msg.get(("linkinfo", "data", "macvlan_mode")) if kind == "macvlan" else None
    return Link(
        index=msg["index"],
        name=msg.get("ifname") or "",
        kind=kind,
        mac=bytes.fromhex(mac.replace(":", "")) if mac else b"",
        up=bool(flags & IFF_UP),
        carrier=bool(flags & IFF_RUNNING),
        parent=msg.get("link") or 0,
        mode=MACVLAN_MODES.get(mode, str(mode)) if isinstance(mode, int) else str(mode or ""),
    )


def _address(msg: Any) -> Address | None:
    raw = msg.get("local") or msg.get("address")
    if not raw:
        return None
    return Address(
        msg["index"], str(ipaddress.ip_address(raw)), msg["prefixlen"], msg["family"], msg["scope"]
    )


class PyrouteLinks:
    """The port on the kernel (see ``lvsd.daemon.links.Links``). Create it in the event loop."""

    def __init__(self, netns: str | None = None, *, event_rcvbuf: int = 1 << 20) -> None:
        self.netns = netns
        self.event_rcvbuf = event_rcvbuf  # the event socket's receive buffer (bytes)
        with in_netns(netns):
            self._ipr = AsyncIPRoute()
            self._ipr.socket  # noqa: B018  # creates the socket here, in the namespace
        self._mon: Any = None
        self._mon_task: asyncio.Task[None] | None = None
        self._watchers: list[Callable[[LinkEvent], None]] = []
        self._announcers: dict[int, socket.socket] = {}
        self._closed = False
        #: one dump at a time on the request socket: the kernel refuses a second one while the
        #: first is running (EBUSY), which several VRRP instances sharing the port hit on a reload
        self._dumping = asyncio.Lock()

    # --- queries ---
    async def link(self, which: int | str) -> Link:
        """The link with this index or name; OSError(ENODEV) if there is none."""
        key = {"index": which} if isinstance(which, int) else {"ifname": which}
        try:
            msgs = await self._ipr.link("get", **key)
        except NetlinkError as e:
            raise _oserror(e, f"link {which}") from None
        return _link(msgs[0])

    async def links(self) -> list[Link]:
        """Every link, by index."""
        async with self._dumping:
            got = [_link(m) async for m in await self._ipr.link("dump")]
        return sorted(got, key=lambda lk: lk.index)

    async def addresses(self, family: int = 0, index: int = 0) -> list[Address]:
        """Addresses of ``family`` (0 = both) on link ``index`` (0 = every link)."""
        out = []
        async with self._dumping:
            async for m in await self._ipr.addr("dump", family=family or socket.AF_UNSPEC):
                a = _address(m)
                if a is not None and (not family or a.family == family) and (not index or a.index == index):
                    out.append(a)
        return out

    # --- changes ---
    async def add_address(self, index: int, address: str, prefixlen: int) -> None:
        """Add an address (IPv6 without DAD); OSError(EEXIST) if it is there."""
        ip = ipaddress.ip_address(address)
        kw: dict[str, Any] = {"flags": IFA_F_NODAD} if ip.version == 6 else {}
        try:
            await self._ipr.addr("add", index=index, address=str(ip), prefixlen=prefixlen, **kw)
        except NetlinkError as e:
            raise _oserror(e, f"{ip}/{prefixlen}") from None

    async def delete_address(self, index: int, address: str, prefixlen: int) -> None:
        """Delete an address; OSError(EADDRNOTAVAIL) if it is not there."""
        ip = ipaddress.ip_address(address)
        try:
            await self._ipr.addr("del", index=index, address=str(ip), prefixlen=prefixlen)
        except NetlinkError as e:
            raise _oserror(e, f"{ip}/{prefixlen}") from None

    async def create_link(self, name: str, kind: str, **info: object) -> Link:
        """Create a link of ``kind`` with the kind's attributes ``info``; OSError(EEXIST) if taken."""
        try:
            await self._ipr.link("add", ifname=name, kind=kind, **info)
        except NetlinkError as e:
            raise _oserror(e, f"{name} ({kind})") from None
        return await self.link(name)

    async def delete_link(self, index: int) -> None:
        """Delete a link; OSError(ENODEV) if it does not exist."""
        try:
            await self._ipr.link("del", index=index)
        except NetlinkError as e:
            raise _oserror(e, f"link {index}") from None
        old = self._announcers.pop(index, None)
        if old is not None:
            old.close()

    async def set_link_up(self, index: int, up: bool) -> None:
        """Set the administrative state."""
        try:
            await self._ipr.link("set", index=index, state="up" if up else "down")
        except NetlinkError as e:
            raise _oserror(e, f"link {index}") from None

    async def link_conf(self, name: str, key: str, value: str | None = None) -> str:
        """A per-link setting (/proc/sys/net/<family>/conf/<name>/<setting>, in the namespace);
        set to ``value`` if given; returns the one before. OSError(ENODEV) if no such link."""
        fam, _, setting = key.partition("/")
        if fam not in ("ipv4", "ipv6") or not setting or "/" in setting or "/" in name:
            raise os_error(errno.ENOENT, f"{name}: no setting {key!r}")
        path = f"/proc/sys/net/{fam}/conf/{name}/{setting}"
        try:
            with in_netns(self.netns):  # /proc/sys/net is the namespace of the opener
                fd = os.open(path, os.O_RDWR if value is not None else os.O_RDONLY)
        except FileNotFoundError:
            await self.link(name)  # ENODEV if the link is missing
            raise os_error(errno.ENOENT, f"{name}: no setting {key!r}") from None
        try:
            before = os.read(fd, 64).decode().strip()
            if value is not None:
                os.lseek(fd, 0, os.SEEK_SET)
                os.write(fd, f"{value}\n".encode())
        finally:
            os.close(fd)
        return before

    # --- events ---
    async def watch(self, callback: Callable[[LinkEvent], None]) -> Callable[[], None]:
        """Call ``callback`` for each later link or address event; returns the function that stops it.
        The event socket is opened (and bound) here, so nothing after this call is missed."""
        if self._mon is None:
            self._mon = await self._open_monitor()
            self._mon_task = asyncio.get_running_loop().create_task(self._monitor(), name="links-monitor")
        self._watchers.append(callback)

        def stop() -> None:
            if callback in self._watchers:
                self._watchers.remove(callback)

        return stop

    async def _open_monitor(self) -> Any:
        with in_netns(self.netns):
            mon = AsyncIPRoute(rcvbuf=self.event_rcvbuf)
            mon.socket  # noqa: B018  # the socket is made in the namespace
        await mon.bind(groups=EVENT_GROUPS)
        return mon

    async def _messages(self) -> AsyncIterator[Any]:
        while True:
            async for m in self._mon.get():
                yield m

    async def _monitor(self) -> None:
        while not self._closed:
            try:
                async for m in self._messages():
                    ev = self._event(m)
                    if ev is not None:
                        self._emit(ev)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # ENOBUFS and the like: the socket is spent; make another
                if self._closed:
                    return
                code = getattr(e, "code", None) or getattr(e, "errno", None)
                reason = os.strerror(code) if code else str(e)
                log.warning("links: event socket: %s; opening a new one", reason)
                with contextlib.suppress(Exception):
                    self._mon.close()
                self._mon = await self._open_monitor()
                self._emit(EventsLost(reason))

    @staticmethod
    def _event(m: Any) -> LinkEvent | None:
        kind = m.get("event")
        if kind in ("RTM_NEWLINK", "RTM_DELLINK"):
            return LinkChanged(_link(m), removed=kind == "RTM_DELLINK")
        if kind in ("RTM_NEWADDR", "RTM_DELADDR"):
            a = _address(m)
            return None if a is None else AddressChanged(a, removed=kind == "RTM_DELADDR")
        return None

    def _emit(self, ev: LinkEvent) -> None:
        for cb in list(self._watchers):
            try:
                cb(ev)
            except Exception:
                log.exception("links: an event watcher failed")

    # --- announcements ---
    def announce(self, link: Link, address: str) -> None:
        """Send a gratuitous ARP (IPv4) or an unsolicited NA to ff02::1 (IPv6) on ``link``."""
        ip = ipaddress.ip_address(address)
        sock = self._announcers.get(link.index)
        if sock is None or (sock.family == socket.AF_PACKET) != (ip.version == 4):
            if sock is not None:
                sock.close()
            sock = self._announcers[link.index] = self._announcer(link, ip.version)
        if ip.version == 4:
            sock.send(garp_frame(link.mac, str(ip)))
        else:
            sock.sendto(unsolicited_na(link.mac, str(ip)), ("ff02::1", 0, 0, link.index))

    def _announcer(self, link: Link, version: int) -> socket.socket:
        with in_netns(self.netns):
            if version == 4:
                s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
                s.bind((link.name, 0))
            else:
                s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
                s.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, link.name.encode())
                s.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, b"\xff" * 32)  # we only send
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, link.index)
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 255)
        s.setblocking(False)
        return s

    async def close(self) -> None:
        """Stop the event task, close every socket. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._watchers.clear()
        if self._mon_task is not None:
            self._mon_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._mon_task
        if self._mon is not None:
            self._mon.close()
        self._ipr.close()
        for s in self._announcers.values():
            s.close()
        self._announcers.clear()
