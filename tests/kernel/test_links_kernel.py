"""The links port on the real kernel (pyroute2), in a scratch namespace: a dummy link's life with
its events, a macvlan with a VRRP virtual MAC (the shape the virtual-MAC work will use), and an
unsolicited neighbour advertisement seen on the wire. Runs inside the VM (tests/kernel/vm.sh);
tests/contract/test_links.py holds the behaviour shared with MemoryLinks."""

from __future__ import annotations

import asyncio
import socket
import subprocess
from collections.abc import Iterator

import pytest

from lvsd.daemon.links import AddressChanged, LinkChanged, LinkEvent, in_netns, open_links, unsolicited_na

NS = "lvsdlk"


@pytest.fixture
def netns() -> Iterator[str]:
    subprocess.run(["ip", "netns", "del", NS], capture_output=True)
    for cmd in (
        f"ip netns add {NS}",
        f"ip -n {NS} link set lo up",
        f"ip -n {NS} link add k0 type veth peer name k1",
        f"ip -n {NS} link set k0 up",
        f"ip -n {NS} link set k1 up",
    ):
        subprocess.run(cmd.split(), check=True, capture_output=True)
    yield NS
    subprocess.run(["ip", "netns", "del", NS], capture_output=True)


def ip_json(*args: str) -> str:
    return subprocess.run(["ip", "-n", NS, *args], check=True, capture_output=True, text=True).stdout


def test_dummy_link_life_and_its_events(netns: str) -> None:
    async def go() -> list[LinkEvent]:
        links = await open_links(netns)
        seen: list[LinkEvent] = []
        stop = await links.watch(seen.append)
        d = await links.create_link("lvsd0", "dummy")
        assert d.kind == "dummy" and not d.up
        await links.set_link_up(d.index, True)
        await links.add_address(d.index, "192.0.2.1", 32)
        await links.add_address(d.index, "2001:db8::1", 128)
        assert "192.0.2.1/32" in ip_json("-4", "-o", "addr", "show", "dev", "lvsd0")  # the kernel agrees
        assert "tentative" not in ip_json("-6", "-o", "addr", "show", "dev", "lvsd0")  # no DAD wait
        await links.delete_address(d.index, "192.0.2.1", 32)
        await links.delete_link(d.index)
        for _ in range(200):
            if any(isinstance(e, LinkChanged) and e.removed for e in seen):
                break
            await asyncio.sleep(0.05)
        stop()
        await links.close()
        return seen

    seen = asyncio.run(asyncio.wait_for(go(), 120))
    links_seen = [(e.link.name, e.link.up, e.removed) for e in seen if isinstance(e, LinkChanged)]
    addrs_seen = [(e.address.address, e.removed) for e in seen if isinstance(e, AddressChanged)]
    assert ("lvsd0", False, False) in links_seen and ("lvsd0", True, False) in links_seen
    assert links_seen[-1][0] == "lvsd0" and links_seen[-1][2]
    assert ("192.0.2.1", False) in addrs_seen and ("192.0.2.1", True) in addrs_seen
    assert addrs_seen.index(("192.0.2.1", False)) < addrs_seen.index(("192.0.2.1", True))


def test_macvlan_with_a_virtual_mac(netns: str) -> None:
    async def go() -> None:
        links = await open_links(netns)
        k0 = await links.link("k0")
        v = await links.create_link(
            "vrrp.51", "macvlan", link=k0.index, macvlan_mode="private", address="00:00:5e:00:01:33"
        )
        assert v.kind == "macvlan" and v.mac == bytes.fromhex("00005e000133")
        await links.delete_link(v.index)
        await links.close()

    asyncio.run(asyncio.wait_for(go(), 120))


def test_unsolicited_neighbour_advertisement_on_the_wire(netns: str) -> None:
    async def go() -> bytes:
        links = await open_links(netns)
        k0 = await links.link("k0")
        for _ in range(200):  # an NA goes from the link-local address: wait until DAD has passed
            out = ip_json("-6", "-o", "addr", "show", "dev", "k0", "scope", "link")
            if "fe80" in out and "tentative" not in out:
                break
            await asyncio.sleep(0.05)
        with in_netns(netns):
            cap = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x86DD))
        cap.bind(("k1", 0))
        cap.settimeout(5)
        try:
            loop = asyncio.get_running_loop()
            links.announce(k0, "2001:db8::100")
            while True:  # the link also sends its own IPv6 traffic (router solicitations, MLD)
                frame = await loop.run_in_executor(None, cap.recv, 2048)
                if frame[20] == 58 and frame[54] == 136:  # ICMPv6 neighbour advertisement
                    return frame
        finally:
            cap.close()
            await links.close()

    frame = asyncio.run(asyncio.wait_for(go(), 120))
    assert frame[38:54] == socket.inet_pton(socket.AF_INET6, "ff02::1") and frame[21] == 255  # hop limit
    body = frame[54:]
    want = unsolicited_na(body[-6:], "2001:db8::100")
    assert body[:2] == want[:2] and body[4:] == want[4:]  # the kernel filled in the checksum
