"""VRRP where directors really run (issue 13), through the ports like test_ha.py: unicast peers,
tracking (interfaces, services, scripts) that moves the priority, ARP refresh, VRRPv2 PASS, the
generic notify and keepalived's notify FIFO. No root, no network."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import replace
from pathlib import Path

from test_ha import (
    DaemonBackend,
    advert4,
    deliver,
    director,
    ipv4_packet,
    make_config,
    master,
    pktinfo,
    run,
    sysdir,  # noqa: F401  (a fixture)
    until,
    vrrp_ha,
)

from lvsd.config.ha import TrackInterface, TrackScript, TrackService
from lvsd.config.model import HAConfig
from lvsd.core import vrrp as core
from lvsd.daemon import vrrp as dv
from lvsd.daemon.ha import HAManager


def sent(sock, src: str = "10.1.0.11") -> list[tuple[str, int]]:  # type: ignore[no-untyped-def]
    """(destination, priority) of each advert sent, decoded with the checksum for its destination."""
    return [(addr[0], core.decode(d, src, addr[0]).priority) for d, _, addr in sock.sent]


def test_unicast_adverts_go_to_each_peer_and_others_are_dropped() -> None:
    async def go() -> None:
        inst, _links, sockets, _ = await master(
            vrrp_ha(interval=0.05, unicast_peers=("10.1.0.12", "10.1.0.13"))
        )
        sock = sockets.last
        assert sent(sock)[:2] == [("10.1.0.12", 100), ("10.1.0.13", 100)]  # no multicast at all
        assert {d for d, _ in sent(sock)} == {"10.1.0.12", "10.1.0.13"}

        def uni(prio: int, src: str) -> bytes:
            return ipv4_packet(
                core.encode(core.Advert(51, prio, 100, ("10.1.0.100",)), src, "10.1.0.11"), src, "10.1.0.11"
            )

        await deliver(inst, sock, uni(200, "10.1.0.14"), pktinfo(2), ("10.1.0.14", 0))
        assert inst.counters["dropped_unicast_source"] == 1 and inst.state.state is core.State.MASTER
        await deliver(inst, sock, uni(200, "10.1.0.12"), pktinfo(2), ("10.1.0.12", 0))
        assert inst.state.state is core.State.BACKUP and inst.state.master_addr == "10.1.0.12"
        assert inst.status()["unicast_peers"] == ["10.1.0.12", "10.1.0.13"]
        await inst.stop()

    run(go())


def test_unicast_src_is_the_advert_source() -> None:
    async def go() -> None:
        ha = vrrp_ha(interval=0.05, unicast_peers=("10.1.0.12",), unicast_src="10.1.0.99")
        inst, _links, sockets, _ = await master(ha)
        assert inst.params.primary == "10.1.0.99"
        assert sent(sockets.last, "10.1.0.99")[0] == ("10.1.0.12", 100)
        await inst.stop()

    run(go())


def test_a_tracked_interface_moves_the_priority_and_it_is_advertised_at_once() -> None:
    async def go() -> None:
        ha = vrrp_ha(interval=1.0, track_interfaces=(TrackInterface("eth1", -60), TrackInterface("eth2", 20)))
        inst, links, sockets, _ = await director(ha)
        assert inst.params.priority == 100 - 60  # eth1/eth2 do not exist: down
        links.add_nic("eth1")  # up, with a carrier
        eth2 = links.add_nic("eth2", up=False)
        await inst.settle()
        assert inst.params.priority == 100
        await links.set_link_up(eth2.index, True)  # admin up (with carrier): +20
        await inst.settle()
        assert inst.params.priority == 120
        await until(lambda: inst.state.state is core.State.MASTER, "master")
        n = len(sockets.last.sent)
        links.set_carrier("eth1", False)  # the back-end link goes
        await inst.settle()
        assert inst.params.priority == 60
        assert len(sockets.last.sent) == n + 1  # advertised at once, not at the next interval
        assert sent(sockets.last)[-1][1] == 60
        assert inst.status()["tracked"]["interface:eth1"] == {"weight": -60, "ok": False}
        await inst.stop()

    run(go())


def test_weight_zero_means_fault_while_failing() -> None:
    async def go() -> None:
        inst, links, sockets, states = await director(
            vrrp_ha(interval=0.05, track_interfaces=(TrackInterface("eth1"),))
        )
        assert inst.state.state is core.State.FAULT  # eth1 missing: down
        links.add_nic("eth1")
        await until(lambda: inst.state.state is core.State.MASTER, "master once eth1 is up")
        links.set_carrier("eth1", False)
        await inst.settle()
        assert inst.state.state is core.State.FAULT and states[-1][0] is core.State.FAULT
        await inst.stop()

    run(go())


def test_a_tracked_service_below_quorum_hands_over() -> None:
    async def go() -> None:
        ha = vrrp_ha(interval=0.05, track_services=(TrackService("web", -100),))
        inst, _links, sockets, _ = await master(ha)
        inst.set_services({"web": None, "other": False})
        assert inst.params.priority == 100  # no verdict yet: nothing moves
        inst.set_services({"web": False})
        assert inst.params.priority == 1 and sent(sockets.last)[-1][1] == 1
        # the peer (priority 50) now wins: a lower master yields to it
        await deliver(inst, sockets.last, advert4(50, "10.1.0.12"), pktinfo(2), ("10.1.0.12", 0))
        assert inst.state.state is core.State.BACKUP
        inst.set_services({"web": True})
        assert inst.params.priority == 100
        await inst.stop()

    run(go())


def test_a_hanging_track_script_is_killed_and_counts_as_failure() -> None:
    async def go() -> None:
        hang = TrackScript(
            (sys.executable, "-c", "import time; time.sleep(30)"), interval=0.05, timeout=0.3, weight=-50
        )
        ok = TrackScript((sys.executable, "-c", "pass"), interval=0.05, timeout=5, weight=10)
        inst, _links, _sockets, _ = await director(vrrp_ha(interval=0.05, track_scripts=(hang, ok)))
        await until(
            lambda: inst.tracked["script:0"][1] is False and inst.tracked["script:1"][1] is True, "verdicts"
        )
        assert inst.params.priority == 100 - 50 + 10
        assert inst.counters["track_script_failures"] >= 1
        await inst.stop()

    run(go())


def test_track_script_rise_and_fall(tmp_path: Path) -> None:
    flag = tmp_path / "ok"
    argv = (sys.executable, "-c", f"import os,sys; sys.exit(0 if os.path.exists({str(flag)!r}) else 1)")

    async def go() -> None:
        sc = TrackScript(argv, interval=0.02, timeout=5, rise=3, fall=2, weight=-30)
        inst, _links, _s, _ = await director(vrrp_ha(interval=0.05, track_scripts=(sc,)))
        await until(lambda: inst.tracked["script:0"][1] is False, "the first verdict: failing")
        flag.touch()
        await until(lambda: inst.tracked["script:0"][1] is True, "ok after rise")
        assert inst.counters["track_script_failures"] >= 1
        await inst.stop()

    run(go())


def test_garp_refresh_while_master_and_repeat_on_takeover() -> None:
    assert dv.garp_delays(1) == [] and dv.garp_delays(4) == [0.5, 2.0, 5.0]
    assert dv.garp_delays(6) == [0.5, 2.0, 5.0, 10.0, 15.0]

    async def go() -> None:
        inst, links, _s, _ = await master(vrrp_ha(interval=0.05, garp_refresh=0.05))
        await until(lambda: inst.counters["garp_refreshes"] >= 2, "refreshes")
        assert links.announcements.count(("eth0", "10.1.0.100")) >= 3
        await inst.stop()
        n = inst.counters["garp_refreshes"]
        await asyncio.sleep(0.2)
        assert inst.counters["garp_refreshes"] == n  # stops with the instance

    run(go())


def test_vrrpv2_pass_is_sent_and_required() -> None:
    async def go() -> None:
        inst, _links, sockets, _ = await master(vrrp_ha(version=2, auth_pass="secret"))
        d, _, addr = sockets.last.sent[0]
        assert core.decode(d, "10.1.0.11", addr[0]).auth == b"secret"

        def v2(prio: int, auth: bytes) -> bytes:
            adv = core.Advert(51, prio, 100, ("10.1.0.100",), version=2, auth=auth)
            return ipv4_packet(core.encode(adv, "10.1.0.12", core.VRRP_GROUP4), "10.1.0.12")

        await deliver(inst, sockets.last, v2(200, b"wrong"), pktinfo(2), ("10.1.0.12", 0))
        await deliver(inst, sockets.last, v2(200, b""), pktinfo(2), ("10.1.0.12", 0))
        assert inst.counters["dropped"] == 2 and inst.state.state is core.State.MASTER
        await deliver(inst, sockets.last, v2(200, b"secret"), pktinfo(2), ("10.1.0.12", 0))
        assert inst.state.state is core.State.BACKUP
        await inst.stop()

    run(go())


def test_generic_notify_and_the_fifo(sysdir: Path, tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "notify.txt"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    script = "import sys; open(sys.argv[1],'a').write(' '.join(sys.argv[2:])+'\\n')"
    ha = HAConfig(
        mode="external",
        role="backup",
        notify=(sys.executable, "-c", script, str(out)),
        notify_stop=(sys.executable, "-c", script, str(out), "stopped"),
        notify_fifo=str(fifo),
    )
    cfg = replace(make_config(), ha=ha)

    async def go() -> None:
        m = HAManager(cfg, DaemonBackend(), lambda r: None, sysctl_dir=str(sysdir))
        await m.start()
        m.set_role("master")
        await asyncio.wait_for(m.hooks_done(), 10)
        await m.stop("keep")

    run(go())
    assert out.read_text().splitlines() == [
        "lvsd BACKUP 0",
        "lvsd MASTER 0",
        "stopped",
        "lvsd STOP 0",
    ]
    got = os.read(rfd, 4096).decode()
    os.close(rfd)
    assert got == 'INSTANCE "lvsd" BACKUP 0\nINSTANCE "lvsd" MASTER 0\nINSTANCE "lvsd" STOP 0\n'


def test_two_instances_a_sync_group_and_the_directors_role(sysdir: Path) -> None:  # noqa: F811
    from test_vrrp_sync_group import front_and_back, start_pair

    cfg = front_and_back()
    roles: list[str] = []

    async def go() -> None:
        m, links, sockets, eth0 = await start_pair(cfg, sysdir, roles.append)
        f, b = m.vrrps["front"], m.vrrps["back"]
        await until(
            lambda: m.vrrp_states == {"front": core.State.MASTER, "back": core.State.MASTER}, "both master"
        )
        assert m.role == "master" and set(m.status()["instances"]) == {"front", "back"}
        # the peer takes "front": its sync group follows it to backup (resigning with priority 0)
        await deliver(f, sockets.made[0], advert4(200, "10.1.0.12"), pktinfo(eth0), ("10.1.0.12", 0))
        await until(lambda: m.vrrp_states.get("back") is core.State.BACKUP, "back to follow front")
        assert m.vrrp_states["front"] is core.State.BACKUP and m.role == "backup"
        assert sockets.made[1].priorities("10.2.0.2")[-1] == 0
        # the peer goes silent: both timers fire, and the group becomes master together
        await until(lambda: m.vrrp_states == {"front": core.State.MASTER, "back": core.State.MASTER}, "both master")
        # the server side fails: its group follows it into fault; every instance in fault: fault
        links.set_carrier("eth1", False)
        await b.settle()
        await f.settle()
        assert m.vrrp_states == {"front": core.State.FAULT, "back": core.State.FAULT} and m.role == "fault"
        links.set_carrier("eth1", True)
        await until(lambda: m.vrrp_states.get("back") is core.State.MASTER, "back master again")
        await until(lambda: m.vrrp_states.get("front") is not core.State.FAULT, "front out of fault")
        assert m.role == "master"
        await m.reload(cfg)  # unchanged instances: kept, not restarted
        assert m.vrrps["front"] is f and m.vrrps["back"] is b
        await m.stop("keep")

    run(go())
    assert roles[:2] == ["backup", "master"] and "fault" in roles


def test_a_reload_takes_new_peers_password_and_tracking_in_place() -> None:
    async def go() -> None:
        inst, links, sockets, _ = await master(vrrp_ha(interval=0.05))
        links.add_nic("eth1", up=False)
        ha = vrrp_ha(
            interval=0.05,
            unicast_peers=("10.1.0.12",),
            track_interfaces=(TrackInterface("eth1", -30),),
            track_services=(TrackService("web", -20),),
        )
        await inst.update(ha)
        assert inst.peers == ("10.1.0.12",) and inst.params.priority == 70  # eth1 is down: -30
        assert inst.state.state is core.State.MASTER
        n = len(sockets.last.sent)
        await until(lambda: len(sockets.last.sent) > n + 2, "adverts after the reload")
        assert {addr[0] for _, _, addr in sockets.last.sent[n:]} == {"10.1.0.12"}  # unicast now
        inst.set_services({"web": False})
        await inst.update(replace(ha, track_interfaces=()))  # the service keeps its state
        assert inst.tracked == {"service:web": (-20, False)} and inst.params.priority == 80
        await inst.update(replace(ha, track_interfaces=(TrackInterface("eth1"),)))  # weight 0, down
        assert inst.state.state is core.State.FAULT
        await inst.stop()

    run(go())
