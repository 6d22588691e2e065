"""Sync groups (keepalived's vrrp_sync_group) change role together: the pure rules of
lvsd.core.vrrp (the gate a member's master-down timer meets, the orders the others follow) and
two instances of one HAManager on MemoryLinks following each other to master and to backup."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from test_ha import DaemonBackend, Sockets, advert4, make_config, pktinfo, run, sysdir, until, vrrp_ha  # noqa: F401

from lvsd.config.load import parse_config
from lvsd.config.model import HAConfig
from lvsd.core import vrrp as core
from lvsd.daemon.ha import HAManager
from lvsd.daemon.links import MemoryLinks

S = core.State
P = core.Params(vrid=51, priority=100, advert_int=100, primary="10.1.0.11", vips=("10.1.0.100",))


def front_and_back(group: bool = True) -> Any:
    """A config with two VRRP instances, "front" (eth0, VRID 51) and "back" (eth1, VRID 52),
    in one sync group "director" unless ``group`` is false."""
    front = replace(vrrp_ha(interval=0.05, vrid=51), name="front")
    back = replace(vrrp_ha(interval=0.05, vrid=52, vips=("10.2.0.1",)), name="back", interface="eth1")
    groups = (("director", ("front", "back")),) if group else ()
    return replace(make_config(), ha=HAConfig(mode="vrrp", instances=(front, back), groups=groups))


async def start_pair(
    cfg: Any, sysctl_dir: Path, on_role: Callable[[str], None]
) -> tuple[HAManager, MemoryLinks, Sockets, int]:
    """An HAManager of ``cfg`` started on MemoryLinks with eth0 (10.1.0.11) and eth1 (10.2.0.2):
    the manager, the links, the sockets it made and eth0's index (where the front's adverts come)."""
    links = MemoryLinks()
    eth0, eth1 = links.add_nic("eth0"), links.add_nic("eth1")
    await links.add_address(eth0.index, "10.1.0.11", 24)
    await links.add_address(eth1.index, "10.2.0.2", 24)
    sockets = Sockets()
    m = HAManager(cfg, DaemonBackend(), on_role, sysctl_dir=str(sysctl_dir), links=links, socket_factory=sockets)
    await m.start()
    return m, links, sockets, eth0.index


def test_a_held_member_waits_in_backup_wanting_master() -> None:
    st, _ = core.step(P, core.VRRPState(), 0.0, core.Startup())
    fire = st.deadline
    assert fire is not None
    held, acts = core.step(P, st, fire, core.Tick(), may_master=False)
    assert held.state is S.BACKUP and held.wants_master and acts == []
    assert held.deadline == fire + P.master_down_interval(100)  # armed again
    # an advert from a master resets it: it no longer wants master
    back, _ = core.step(
        P, held, fire + 0.5, core.Received(core.Advert(51, 200, 100, ("10.1.0.100",)), "10.1.0.12")
    )
    assert back.state is S.BACKUP and not back.wants_master
    # allowed, the same timer makes it master
    m, acts = core.step(P, held, held.deadline, core.Tick(), may_master=True)
    assert m.state is S.MASTER and acts == [core.SendAdvert(100), core.TakeOver()]


def test_group_events_move_a_member_at_once() -> None:
    backup, _ = core.step(P, core.VRRPState(), 0.0, core.Startup())
    m, acts = core.step(P, backup, 0.1, core.GroupMaster())
    assert m.state is S.MASTER and acts == [core.SendAdvert(100), core.TakeOver()]
    b, acts = core.step(P, m, 0.2, core.GroupBackup())
    assert b.state is S.BACKUP and acts == [core.SendAdvert(0), core.Release()]  # resigns: the peer is quick
    assert b.deadline == 0.2 + P.master_down_interval(100)
    for st in (core.VRRPState(), core.VRRPState(S.FAULT)):  # only a backup follows to master
        assert core.step(P, st, 0.3, core.GroupMaster()) == (st, [])
    assert core.step(P, backup, 0.3, core.GroupBackup()) == (backup, [])  # only a master to backup


def test_the_gate_and_the_orders() -> None:
    want = core.VRRPState(S.BACKUP, 1.0, wants_master=True)
    hears = core.VRRPState(S.BACKUP, 1.0)
    assert core.group_may_master([want, want])
    assert not core.group_may_master([want, hears])  # one still hears a master: prefer backup
    assert core.group_may_master([hears, core.VRRPState(S.MASTER, 1.0)])  # the group is master already
    assert not core.group_may_master([core.VRRPState(S.FAULT)])
    others = {"b": S.BACKUP, "c": S.FAULT, "d": S.MASTER}
    assert core.group_orders(S.BACKUP, S.MASTER, others) == {"b": core.GroupMaster()}
    assert core.group_orders(S.MASTER, S.BACKUP, others) == {"d": core.GroupBackup()}
    assert core.group_orders(S.FAULT, S.BACKUP, others) == {}  # leaving fault demotes nobody
    assert core.group_orders(S.MASTER, S.FAULT, others) == {}  # fault goes through tracking


def test_a_group_waits_for_every_member_then_moves_together(sysdir: Path) -> None:  # noqa: F811
    cfg = front_and_back()
    roles: list[str] = []

    async def go() -> None:
        m, _, sockets, eth0 = await start_pair(cfg, sysdir, roles.append)
        b = m.vrrps["back"]
        # a peer is master of "front" (priority 200) and keeps advertising: "back" hears nobody,
        # its timer fires, but it waits in backup, since "front" does not want master
        peer = asyncio.get_running_loop().create_task(advertise(sockets.made[0], eth0))
        await until(lambda: b.state.wants_master, "back to want master")
        await asyncio.sleep(0.5)  # several of its master-down intervals
        assert m.vrrp_states == {"front": S.BACKUP, "back": S.BACKUP} and m.role == "backup"
        assert not b.status()["counters"].get("sent") and b.status()["wants_master"]
        # the peer goes silent: both want master, and the group becomes master together
        peer.cancel()
        await until(lambda: m.vrrp_states == {"front": S.MASTER, "back": S.MASTER}, "both master")
        assert roles == ["backup", "master"]
        await m.stop("keep")

    async def advertise(sock, index: int) -> None:  # type: ignore[no-untyped-def]
        while True:
            sock.inject(advert4(200, "10.1.0.12"), pktinfo(index), ("10.1.0.12", 0))
            await asyncio.sleep(0.04)

    run(go())


def test_without_a_group_the_instances_stay_independent(sysdir: Path) -> None:  # noqa: F811
    cfg = front_and_back(group=False)

    async def go() -> None:
        m, _, sockets, eth0 = await start_pair(cfg, sysdir, lambda r: None)
        await until(lambda: m.vrrp_states == {"front": S.MASTER, "back": S.MASTER}, "both master")
        sockets.made[0].inject(advert4(200, "10.1.0.12"), pktinfo(eth0), ("10.1.0.12", 0))
        await until(lambda: m.vrrp_states.get("front") is S.BACKUP, "front backup")
        await asyncio.sleep(0.2)
        assert m.vrrp_states["back"] is S.MASTER  # no group: back keeps its role
        await m.stop("keep")

    run(go())


def test_a_weight_in_a_sync_group_member_is_refused() -> None:
    text = """
[ha]
mode = "vrrp"
[[ha.instance]]
name = "a"
interface = "eth0"
vrid = 1
vips = ["10.0.0.1"]
track_services = [{ service = "web", weight = -10 }]
[[ha.instance]]
name = "b"
interface = "eth1"
vrid = 2
vips = ["10.0.1.1"]
track_interfaces = [{ name = "eth2" }]
[[ha.group]]
name = "g"
instances = ["a", "b"]
"""
    try:
        parse_config(text)
    except Exception as e:
        assert str(e).splitlines() == [
            "ha.instance[0].track_services[0].weight: must be 0 (fault) in a sync group member:"
            " a priority change cannot move the group"
        ]
    else:
        raise AssertionError("accepted")
    parse_config(text.replace(", weight = -10", ""))  # weight 0 (fault) is fine
