"""One contract, two implementations of the links port (lvsd.daemon.links): MemoryLinks and
PyrouteLinks on the kernel.

Each test runs against ``memory`` everywhere and against ``pyroute2`` wherever a scratch network
namespace can be made (root: the host, if it allows namespaces, and the VM). There, the namespace
holds a veth pair n0/n1 (both up); in memory, two NICs of the same names. With
LVSD_KERNEL_REQUIRED=1 (tests/kernel/run.sh) the kernel variant fails instead of skipping.
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import socket
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

import pytest

from lvsd.daemon.links import (
    AddressChanged,
    EventsLost,
    Link,
    LinkChanged,
    LinkEvent,
    Links,
    MemoryLinks,
    garp_frame,
    in_netns,
)

NS = "lvsdlinks"
REQUIRED = bool(os.environ.get("LVSD_KERNEL_REQUIRED"))


def _kernel_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if shutil.which("ip") is None:
        return "needs iproute2"
    r = subprocess.run(["ip", "netns", "add", NS + "probe"], capture_output=True, text=True)
    if r.returncode:
        return f"cannot make a network namespace: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", NS + "probe"], capture_output=True)
    return None


@dataclass
class World:
    """What a test gets: the port, and what a cable does (pull n0's carrier by downing n1)."""

    impl: str
    links: Links
    pull_cable: Callable[[bool], Awaitable[None]]


@pytest.fixture(params=["memory", "pyroute2"])
def world(request: pytest.FixtureRequest) -> Iterator[Callable[[], Awaitable[World]]]:
    """A factory (call it inside the test's event loop) of a fresh World."""
    impl = request.param
    if impl == "pyroute2":
        why = _kernel_unavailable()
        if why:
            if REQUIRED:
                pytest.fail(f"pyroute2 links contract: {why}")
            pytest.skip(why)
        subprocess.run(["ip", "netns", "del", NS], capture_output=True)
        for cmd in (
            f"ip netns add {NS}",
            f"ip -n {NS} link set lo up",
            f"ip -n {NS} link add n0 type veth peer name n1",
            f"ip -n {NS} link set n0 up",
            f"ip -n {NS} link set n1 up",
        ):
            subprocess.run(cmd.split(), check=True, capture_output=True)
    made: list[Links] = []

    async def make() -> World:
        if impl == "memory":
            mem = MemoryLinks()
            mem.add_nic("n0")
            mem.add_nic("n1")

            async def pull_mem(pulled: bool) -> None:
                mem.set_carrier("n0", not pulled)

            made.append(mem)
            return World(impl, mem, pull_mem)
        from lvsd.daemon.links import open_links

        links = await open_links(NS)
        made.append(links)

        async def pull_kernel(pulled: bool) -> None:
            await links.set_link_up((await links.link("n1")).index, not pulled)

        return World(impl, links, pull_kernel)

    yield make
    if impl == "pyroute2":
        subprocess.run(["ip", "netns", "del", NS], capture_output=True)


def run(coro: Awaitable[None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 60))  # type: ignore[arg-type]


async def expect(events: asyncio.Queue[LinkEvent], pred: Callable[[LinkEvent], bool], what: str) -> LinkEvent:
    """The first event matching ``pred`` (others are skipped); fails after 10 s."""

    async def first() -> LinkEvent:
        while True:
            ev = await events.get()
            if pred(ev):
                return ev

    try:
        return await asyncio.wait_for(first(), 10)
    except asyncio.TimeoutError:
        raise AssertionError(f"no event: {what}") from None


async def dummy_kind(links: Links, name: str) -> Link:
    """Create a link of a kind this kernel has: dummy (the VM), else bridge (hosts without the module)."""
    try:
        return await links.create_link(name, "dummy")
    except OSError as e:
        if e.errno != errno.EOPNOTSUPP:
            raise
        return await links.create_link(name, "bridge")


def test_links_by_name_and_index(world: Callable[[], Awaitable[World]]) -> None:
    async def go() -> None:
        w = await world()
        n0 = await w.links.link("n0")
        assert n0.name == "n0" and n0.index > 0 and len(n0.mac) == 6
        assert n0.up and n0.running
        assert await w.links.link(n0.index) == n0
        names = [lk.name for lk in await w.links.links()]
        assert {"lo", "n0", "n1"} <= set(names)
        for which in ("nosuch0", 99999):
            with pytest.raises(OSError) as e:
                await w.links.link(which)
            assert e.value.errno == errno.ENODEV
        await w.links.close()
        await w.links.close()  # idempotent

    run(go())


def test_addresses_add_list_delete_with_kernel_errors(world: Callable[[], Awaitable[World]]) -> None:
    async def go() -> None:
        w = await world()
        n0 = await w.links.link("n0")
        await w.links.add_address(n0.index, "10.7.0.1", 24)
        await w.links.add_address(n0.index, "2001:db8:7::1", 64)
        mine = {(a.address, a.prefixlen, a.family) for a in await w.links.addresses(index=n0.index)}
        assert ("10.7.0.1", 24, socket.AF_INET) in mine
        assert ("2001:db8:7::1", 64, socket.AF_INET6) in mine
        v4 = await w.links.addresses(socket.AF_INET, n0.index)
        assert [a.address for a in v4] == ["10.7.0.1"] and v4[0].scope == 0
        assert all(a.family == socket.AF_INET6 for a in await w.links.addresses(socket.AF_INET6))
        assert "127.0.0.1" in {a.address for a in await w.links.addresses(socket.AF_INET)}
        with pytest.raises(OSError) as e:
            await w.links.add_address(n0.index, "10.7.0.1", 24)
        assert e.value.errno == errno.EEXIST
        await w.links.delete_address(n0.index, "10.7.0.1", 24)
        with pytest.raises(OSError) as e:
            await w.links.delete_address(n0.index, "10.7.0.1", 24)
        assert e.value.errno == errno.EADDRNOTAVAIL
        with pytest.raises(OSError) as e:
            await w.links.add_address(99999, "10.7.0.2", 24)
        assert e.value.errno == errno.ENODEV
        await w.links.delete_address(n0.index, "2001:db8:7::1", 64)
        assert not {a.address for a in await w.links.addresses(index=n0.index)} & {
            "10.7.0.1",
            "2001:db8:7::1",
        }
        await w.links.close()

    run(go())


def test_create_and_delete_a_link(world: Callable[[], Awaitable[World]]) -> None:
    async def go() -> None:
        w = await world()
        d = await dummy_kind(w.links, "lvsd0")
        assert d.name == "lvsd0" and d.kind in ("dummy", "bridge") and not d.up
        assert await w.links.link("lvsd0") == d
        with pytest.raises(OSError) as e:
            await w.links.create_link("lvsd0", d.kind)
        assert e.value.errno == errno.EEXIST
        await w.links.set_link_up(d.index, True)
        assert (await w.links.link(d.index)).up
        await w.links.add_address(d.index, "192.0.2.10", 32)
        await w.links.delete_link(d.index)
        assert "lvsd0" not in {lk.name for lk in await w.links.links()}
        assert "192.0.2.10" not in {a.address for a in await w.links.addresses()}
        with pytest.raises(OSError) as e:
            await w.links.delete_link(d.index)
        assert e.value.errno == errno.ENODEV
        await w.links.close()

    run(go())


def test_a_macvlan_with_the_vrrp_mac_and_per_link_settings(world: Callable[[], Awaitable[World]]) -> None:
    """What the virtual MAC needs: a private macvlan on n0 with a given MAC (its parent and mode
    read back), per-link settings read and set (the value before returned), errors for a missing
    lower link or setting."""

    async def go() -> None:
        w = await world()
        n0 = await w.links.link("n0")
        v = await w.links.create_link(
            "vrrp.51", "macvlan", link=n0.index, macvlan_mode="private", address="00:00:5e:00:01:33"
        )
        assert (v.kind, v.mac, v.parent, v.mode) == (
            "macvlan",
            bytes.fromhex("00005e000133"),
            n0.index,
            "private",
        )
        assert not v.up and await w.links.link("vrrp.51") == v
        with pytest.raises(OSError) as e:
            await w.links.create_link("vrrp.52", "macvlan", link=99999, macvlan_mode="private")
        assert e.value.errno in (errno.ENODEV, errno.EINVAL)
        assert await w.links.link_conf("vrrp.51", "ipv6/disable_ipv6", "1") == "0"
        assert await w.links.link_conf("vrrp.51", "ipv6/disable_ipv6") == "1"
        before = await w.links.link_conf("n0", "ipv4/arp_ignore", "1")
        assert await w.links.link_conf("n0", "ipv4/arp_ignore", before) == "1"
        await w.links.set_link_up(v.index, True)
        up = await w.links.link(v.index)
        assert up.up and up.running  # n0 has a carrier
        # IPv6 off before it came up: no link-local address from the shared MAC
        assert not await w.links.addresses(socket.AF_INET6, v.index)
        for which, key in (("vrrp.51", "ipv4/nosuch_setting"), ("nosuch0", "ipv4/arp_ignore")):
            with pytest.raises(OSError) as e:
                await w.links.link_conf(which, key)
            assert e.value.errno in (errno.ENOENT, errno.ENODEV)
        await w.links.delete_link(v.index)
        assert "vrrp.51" not in {lk.name for lk in await w.links.links()}
        await w.links.close()

    run(go())


def test_concurrent_queries_from_several_tasks(world: Callable[[], Awaitable[World]]) -> None:
    """Several VRRP instances share one port and query it at once (a reload updates each while
    the others' link work runs): every query answers; none is refused because another is running."""

    async def go() -> None:
        w = await world()
        got = await asyncio.gather(*(q() for _ in range(6) for q in (w.links.links, w.links.addresses)))
        assert all(got) and len({len(x) for x in got[::2]}) == 1
        await w.links.close()

    run(go())


def test_events_for_links_addresses_and_carrier(world: Callable[[], Awaitable[World]]) -> None:
    async def go() -> None:
        w = await world()
        q: asyncio.Queue[LinkEvent] = asyncio.Queue()
        stop = await w.links.watch(q.put_nowait)
        n0 = await w.links.link("n0")
        await w.links.add_address(n0.index, "10.8.0.1", 24)
        await expect(
            q,
            lambda e: isinstance(e, AddressChanged) and e.address.address == "10.8.0.1" and not e.removed,
            "address added",
        )
        await w.links.delete_address(n0.index, "10.8.0.1", 24)
        ev = await expect(
            q, lambda e: isinstance(e, AddressChanged) and e.address.address == "10.8.0.1", "address removed"
        )
        assert isinstance(ev, AddressChanged) and ev.removed and ev.address.index == n0.index
        await w.pull_cable(True)
        await expect(
            q,
            lambda e: isinstance(e, LinkChanged) and e.link.name == "n0" and e.link.up and not e.link.carrier,
            "n0 loses its carrier",
        )
        await w.pull_cable(False)
        await expect(
            q, lambda e: isinstance(e, LinkChanged) and e.link.name == "n0" and e.link.running, "carrier back"
        )
        d = await dummy_kind(w.links, "lvsd0")
        await expect(q, lambda e: isinstance(e, LinkChanged) and e.link.name == "lvsd0", "link created")
        await w.links.delete_link(d.index)
        await expect(
            q, lambda e: isinstance(e, LinkChanged) and e.link.name == "lvsd0" and e.removed, "link deleted"
        )
        stop()
        await w.links.add_address(n0.index, "10.8.0.2", 24)
        await asyncio.sleep(0.2)
        assert not any(isinstance(e, AddressChanged) and e.address.address == "10.8.0.2" for e in _drain(q))
        await w.links.close()

    run(go())


def _drain(q: asyncio.Queue[LinkEvent]) -> list[LinkEvent]:
    out = []
    while not q.empty():
        out.append(q.get_nowait())
    return out


def test_announce_sends_a_gratuitous_arp(world: Callable[[], Awaitable[World]]) -> None:
    async def go() -> None:
        w = await world()
        n0 = await w.links.link("n0")
        if w.impl == "memory":
            w.links.announce(n0, "10.9.0.1")
            assert isinstance(w.links, MemoryLinks) and w.links.announcements == [("n0", "10.9.0.1")]
        else:
            with in_netns(NS):
                cap = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
            cap.bind(("n1", 0))
            cap.settimeout(5)
            try:
                w.links.announce(n0, "10.9.0.1")
                frame = await asyncio.get_running_loop().run_in_executor(None, cap.recv, 2048)
            finally:
                cap.close()
            assert frame[:42] == garp_frame(n0.mac, "10.9.0.1")
        await w.links.set_link_up(n0.index, False)
        with pytest.raises(OSError):
            w.links.announce(await w.links.link("n0"), "10.9.0.1")
        await w.links.close()

    run(go())


def test_lost_events_are_reported_and_events_flow_again(world: Callable[[], Awaitable[World]]) -> None:
    """A receive buffer overrun (the loop busy while the kernel sends many events) is reported as
    EventsLost, and later events still arrive (the kernel variant opens a new event socket)."""

    async def go() -> None:
        w = await world()
        if w.impl == "pyroute2":
            await w.links.close()
            from lvsd.daemon.links_pyroute2 import PyrouteLinks

            w.links = PyrouteLinks(NS, event_rcvbuf=4096)  # small: 300 events overrun it
        q: asyncio.Queue[LinkEvent] = asyncio.Queue()
        await w.links.watch(q.put_nowait)
        if isinstance(w.links, MemoryLinks):
            w.links.lose_events()
        else:
            batch = "".join(f"addr add 10.3.{i // 250}.{i % 250 + 1}/32 dev n0\n" for i in range(300))
            # blocks the event loop while the kernel queues 300 address events
            subprocess.run(["ip", "-n", NS, "-batch", "-"], input=batch, text=True, check=True)
        await expect(q, lambda e: isinstance(e, EventsLost), "events lost")
        await w.links.add_address((await w.links.link("n0")).index, "10.4.0.1", 32)
        await expect(
            q,
            lambda e: isinstance(e, AddressChanged) and e.address.address == "10.4.0.1",
            "an event after the loss",
        )
        await w.links.close()

    run(go())
