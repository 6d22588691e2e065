"""The virtual MAC (``use_vmac``) through the ports: a macvlan with the RFC 5798 MAC made,
taken over or made again at start, the VIPs and announcements on it, multicast adverts out of
it, the ARP settings set and restored, a reload that turns it on and off while master, and
the config's refusals. MemoryLinks and fake sockets: no root, no network."""

from __future__ import annotations

import errno

import pytest
from test_ha import Sockets, advert4, deliver, pktinfo, run, until, vrrp_ha

from lvsd.config.load import parse_config
from lvsd.config.reader import ConfigError
from lvsd.core import vrrp as core
from lvsd.daemon import vrrp as dv
from lvsd.daemon.links import AddressChanged, LinkEvent, MemoryLinks

VMAC = bytes.fromhex("00005e000133")  # vrid 51


async def vmac_director(
    ha: object, links: MemoryLinks | None = None
) -> tuple[dv.VRRPInstance, MemoryLinks, Sockets, Sockets]:
    """A started instance on eth0 (10.1.0.11/24) of an in-memory kernel; base and xmit sockets."""
    if links is None:
        links = MemoryLinks()
        eth0 = links.add_nic("eth0")
        await links.add_address(eth0.index, "10.1.0.11", 24)
    base, xmit = Sockets(), Sockets()
    inst = dv.VRRPInstance(ha, links, lambda s: None, socket_factory=base, xmit_factory=xmit)  # type: ignore[arg-type]
    await inst.start()
    return inst, links, base, xmit


def test_the_vips_go_on_a_macvlan_with_the_vrrp_mac_and_adverts_leave_from_it() -> None:
    async def go() -> None:
        inst, links, base, xmit = await vmac_director(vrrp_ha(interval=0.05, use_vmac=True))
        v = await links.link("vrrp.51")
        eth0 = await links.link("eth0")
        assert (v.kind, v.mac, v.parent, v.mode, v.up) == ("macvlan", VMAC, eth0.index, "bridge", True)
        assert not links.addresses_now(v.index)  # a backup's holds nothing: it answers nothing
        assert links.conf[(v.index, "ipv6/disable_ipv6")] == "1"  # no link-local from the shared MAC
        assert (
            links.conf[(v.index, "ipv4/arp_ignore")] == "1" and links.conf[(v.index, "ipv4/rp_filter")] == "0"
        )
        assert links.conf[(eth0.index, "ipv4/arp_ignore")] == "1"  # eth0 no longer answers for the VIPs
        assert links.conf[(eth0.index, "ipv4/arp_filter")] == "1"
        assert links.conf[(eth0.index, "ipv4/arp_announce")] == "2"  # its ARP requests not from a VIP
        await until(lambda: inst.state.state is core.State.MASTER, "master")
        await inst.settle()
        assert {a.address for a in links.addresses_now(v.index)} == {"10.1.0.100"}
        assert "10.1.0.100" not in {a.address for a in links.addresses_now(eth0.index)}
        assert links.announcements[0] == ("vrrp.51", "10.1.0.100")  # switches learn the MAC's port
        x = xmit.last
        assert (x.ifname, x.ifindex) == ("vrrp.51", v.index)
        assert x.priorities("10.1.0.11")[0] == 100 and not base.last.sent  # adverts from the vmac only
        info = x.sent[0][1][0][2]
        assert int.from_bytes(info[:4], "little") == v.index  # IP_PKTINFO names the macvlan
        st = inst.status()
        assert st["vmac"] == {"interface": "vrrp.51", "mac": "00:00:5e:00:01:33", "adverts_via": "vrrp.51"}
        assert st["vip_interfaces"] == {"10.1.0.100": "vrrp.51"}
        await inst.stop()
        assert "vrrp.51" not in {lk.name for lk in await links.links()} and x.closed
        assert links.conf[(eth0.index, "ipv4/arp_ignore")] == "0"  # put back as found
        assert links.conf[(eth0.index, "ipv4/arp_filter")] == "0"
        assert links.conf[(eth0.index, "ipv4/arp_announce")] == "0"

    run(go())


def test_unicast_and_vmac_xmit_base_send_from_the_interface_itself() -> None:
    async def go() -> None:
        inst, _links, base, xmit = await vmac_director(
            vrrp_ha(interval=0.05, use_vmac=True, unicast_peers=("10.1.0.12",))
        )
        await until(lambda: inst.state.state is core.State.MASTER, "master")
        assert base.last.sent and not xmit.last.sent  # an ARP for the peer from the vmac would mislead it
        await inst.stop()
        inst, links, base, xmit = await vmac_director(
            vrrp_ha(interval=0.05, use_vmac=True, vmac_xmit_base=True)
        )
        await until(lambda: inst.state.state is core.State.MASTER, "master")
        await inst.settle()  # the takeover's address work
        assert base.last.sent and not xmit.made
        assert {a.address for a in links.addresses_now((await links.link("vrrp.51")).index)} == {"10.1.0.100"}
        await inst.stop()

    run(go())


def test_a_crashed_predecessors_macvlan_is_taken_over_or_made_again() -> None:
    async def go() -> None:
        links = MemoryLinks()
        eth0 = links.add_nic("eth0")
        await links.add_address(eth0.index, "10.1.0.11", 24)
        left = await links.create_link(
            "vrrp.51", "macvlan", link=eth0.index, macvlan_mode="bridge", address="00:00:5e:00:01:33"
        )
        await links.add_address(left.index, "10.1.0.100", 24)  # and the VIP it held
        inst, links, _b, _x = await vmac_director(vrrp_ha(interval=1.0, use_vmac=True), links)
        assert (await links.link("vrrp.51")).index == left.index  # the same link, taken over
        assert not links.addresses_now(left.index)  # its left-over VIP removed: we start as backup
        await inst.stop()
        wrong = await links.create_link("vrrp.51", "macvlan", link=eth0.index, macvlan_mode="private")
        inst, links, _b, _x = await vmac_director(vrrp_ha(interval=1.0, use_vmac=True), links)
        again = await links.link("vrrp.51")
        assert again.index != wrong.index and (again.mac, again.mode) == (VMAC, "bridge")
        await inst.stop()
        await links.create_link("vrrp.51", "dummy")
        with pytest.raises(dv.VRRPError, match="not a macvlan"):
            await vmac_director(vrrp_ha(interval=1.0, use_vmac=True), links)

    run(go())


def test_a_reload_moves_the_vips_onto_and_off_the_vmac_without_leaving_master() -> None:
    async def go() -> None:
        inst, links, _base, _xmit = await vmac_director(vrrp_ha(interval=0.05))
        eth0 = await links.link("eth0")
        await until(lambda: inst.state.state is core.State.MASTER, "master")
        await inst.settle()
        events: list[tuple[str, bool]] = []

        def seen(ev: LinkEvent) -> None:
            if isinstance(ev, AddressChanged) and ev.address.address == "10.1.0.100":
                events.append((str(ev.address.index), ev.removed))

        await links.watch(seen)
        held: list[int] = []  # how many copies of the VIP the kernel holds after each event
        await links.watch(
            lambda ev: held.append(sum(a.address == "10.1.0.100" for a in links.addresses_now()))
        )
        await inst.update(vrrp_ha(interval=0.05, use_vmac=True))
        await until(lambda: len(events) >= 2, "the VIP to move")
        v = await links.link("vrrp.51")
        assert events[:2] == [
            (str(v.index), False),
            (str(eth0.index), True),
        ]  # added there, then removed here
        assert inst.state.state is core.State.MASTER and ("vrrp.51", "10.1.0.100") in links.announcements
        await inst.update(vrrp_ha(interval=0.05))  # and back off
        await until(lambda: len(events) >= 4, "the VIP to move back")
        await inst.settle()
        assert events[2:4] == [(str(eth0.index), False), (str(v.index), True)]
        assert {a.address for a in links.addresses_now(eth0.index)} >= {"10.1.0.100"}
        assert "vrrp.51" not in {lk.name for lk in await links.links()}
        assert inst.state.state is core.State.MASTER and min(held) >= 1  # never without the VIP
        assert links.conf[(eth0.index, "ipv4/arp_ignore")] == "0"
        await inst.stop()

    run(go())


def test_a_deleted_vmac_is_made_again_and_a_master_puts_its_vips_back() -> None:
    async def go() -> None:
        inst, links, _base, xmit = await vmac_director(vrrp_ha(interval=0.05, use_vmac=True))
        await until(lambda: inst.state.state is core.State.MASTER, "master")
        await inst.settle()
        await links.delete_link((await links.link("vrrp.51")).index)  # ip link del vrrp.51
        await until(lambda: inst.counters["vmac_restored"] == 1, "the vmac to be made again")
        await inst.settle()
        v = await links.link("vrrp.51")
        assert {a.address for a in links.addresses_now(v.index)} == {"10.1.0.100"}
        assert len(xmit.made) == 2 and xmit.last.ifindex == v.index
        await inst.stop()

    run(go())


def test_a_higher_advert_makes_the_vmac_master_release_but_the_link_stays() -> None:
    async def go() -> None:
        inst, links, base, _x = await vmac_director(vrrp_ha(interval=0.05, use_vmac=True))
        await until(lambda: inst.state.state is core.State.MASTER, "master")
        await inst.settle()
        eth0 = await links.link("eth0")
        await deliver(inst, base.last, advert4(200, "10.1.0.12"), pktinfo(eth0.index), ("10.1.0.12", 0))
        assert inst.state.state is core.State.BACKUP
        v = await links.link("vrrp.51")
        assert v.up and not links.addresses_now(v.index)
        await inst.stop()

    run(go())


HA = """
[ha]
mode = "vrrp"
{keys}
[[ha.instance]]
name = "a"
interface = "eth0"
vrid = 51
vips = ["10.0.0.1"]
use_vmac = true
{a}
[[ha.instance]]
name = "b"
interface = "eth1"
vrid = 51
vips = ["10.0.1.1"]
use_vmac = true
{b}
"""


def errors(text: str) -> list[str]:
    try:
        parse_config(text)
    except ConfigError as e:
        return e.errors
    return []


def test_config_refusals() -> None:
    assert errors(HA.format(keys="", a="", b="")) == [
        "ha.instance[1].use_vmac: virtual MAC interface 'vrrp.51' is already used by instance 'a' (set vmac_name)"
    ]
    assert errors(HA.format(keys="", a="", b='vmac_name = "vrrp.51b"')) == []
    assert errors(HA.format(keys="", a='vmac_name = "a-very-long-vmac0"', b="")) == [
        'ha.instance[0].vmac_name: must be at most 15 bytes, got "a-very-long-vmac0"'
    ]
    assert errors(HA.format(keys="", a='vmac_name = "eth0"', b="")) == [
        "ha.instance[0].vmac_name: 'eth0' is the VRRP interface itself"
    ]
    one = '[ha]\nmode = "vrrp"\ninterface = "eth0"\nvrid = 7\nvips = ["{vip}"]\n{extra}\n'
    assert errors(one.format(vip="10.0.0.1", extra='vmac_name = "v7"')) == [
        "ha.vmac_name: only with use_vmac = true"
    ]
    assert errors(one.format(vip="10.0.0.1", extra="vmac_xmit_base = true")) == [
        "ha.vmac_xmit_base: only with use_vmac = true"
    ]
    assert errors(one.format(vip="2001:db8::1", extra="use_vmac = true"))[0].startswith(
        "ha.use_vmac: IPv4 only"
    )
    assert errors(one.format(vip="10.0.0.1", extra='use_vmac = true\nvmac_name = "a/b"')) == [
        "ha.vmac_name: 'a/b' is not a valid interface name"
    ]
    cfg = parse_config(one.format(vip="10.0.0.1", extra="use_vmac = true"))
    assert cfg.ha.use_vmac and cfg.ha.vmac_ifname == "vrrp.7"


def test_vmac_address() -> None:
    assert core.vmac_address(51) == VMAC
    assert core.vmac_address(255, core.AF_INET6) == bytes.fromhex("00005e0002ff")
    with pytest.raises(ValueError):
        core.vmac_address(0)


def test_memory_links_macvlan_needs_its_lower_link() -> None:
    async def go() -> None:
        links = MemoryLinks()
        with pytest.raises(OSError) as e:
            await links.create_link("m0", "macvlan", link=42)
        assert e.value.errno == errno.ENODEV
        eth0 = links.add_nic("eth0")
        m = await links.create_link("m0", "macvlan", link=eth0.index)
        await links.set_link_up(m.index, True)
        links.set_carrier("eth0", False)
        assert not (await links.link("m0")).carrier  # the lower link's carrier
        await links.delete_link(eth0.index)
        assert "m0" not in {lk.name for lk in await links.links()}

    run(go())


def test_the_lower_interface_settings_stay_while_another_vmac_uses_them() -> None:
    async def go() -> None:
        a, links, _b, _x = await vmac_director(vrrp_ha(interval=1.0, use_vmac=True))
        eth0 = await links.link("eth0")
        b, _l, _b2, _x2 = await vmac_director(vrrp_ha(interval=1.0, use_vmac=True, vrid=52), links)
        assert {"vrrp.51", "vrrp.52"} <= {lk.name for lk in await links.links()}
        await a.stop()
        assert links.conf[(eth0.index, "ipv4/arp_ignore")] == "1"  # vrrp.52 still needs it
        await b.stop()
        assert links.conf[(eth0.index, "ipv4/arp_ignore")] == "0"

    run(go())
