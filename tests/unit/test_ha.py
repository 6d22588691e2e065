"""HAManager on the host: role sources, sync daemons by role, sysctls, hooks; and VRRP through
its ports: an in-memory kernel for links (MemoryLinks) and a fake advert socket into which adverts
are injected as bytes. Takeover, release, reload, link loss and a virtual address removed by hand
are driven through public methods only: no root, no network, no private attributes."""

from __future__ import annotations

import asyncio
import errno
import socket
import struct
import subprocess
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from lvsd.config.model import Config, DaemonConfig, HAConfig, SyncConfig, VipConfig
from lvsd.core import vrrp as core
from lvsd.daemon import vrrp as dv
from lvsd.daemon.ha import HAError, HAManager, daemon_matches
from lvsd.daemon.links import MemoryLinks, garp_frame, link_local_of, unsolicited_na
from lvsd.ipvs.backend import Backend, IPVSError, Op, OpKind
from lvsd.ipvs.model import DaemonState, SyncDaemon

SYSCTLS = ("sync_threshold", "sync_refresh_period", "sync_retries", "sync_persist_mode", "sync_version")


class DaemonBackend(Backend):
    """Just the sync-daemon part of a kernel: start refuses a second daemon of one state (EEXIST),
    stop refuses a missing one (ESRCH), and reads report the kernel's defaults as values."""

    name = "fake"

    def __init__(self) -> None:
        self.running: dict[int, SyncDaemon] = {}
        self.log: list[str] = []

    def daemons(self) -> list[SyncDaemon]:
        return sorted(self.running.values(), key=lambda d: d.state)

    def apply(self, ops) -> None:  # type: ignore[no-untyped-def]
        for op in ops:
            op.validate()
            assert op.daemon is not None
            st = op.daemon.state
            if op.kind is OpKind.START_DAEMON:
                if st in self.running:
                    raise IPVSError(op, errno.EEXIST)
                d = op.daemon
                self.running[st] = replace(
                    d,
                    mcast_group=d.mcast_group or "224.0.0.81",
                    mcast_port=d.mcast_port or 8848,
                    mcast_ttl=d.mcast_ttl or 1,
                    sync_maxlen=d.sync_maxlen or 1472,
                )
                self.log.append(f"start {DaemonState(st).name.lower()}")
            elif op.kind is OpKind.STOP_DAEMON:
                if st not in self.running:
                    raise IPVSError(op, errno.ESRCH)
                del self.running[st]
                self.log.append(f"stop {DaemonState(st).name.lower()}")
            else:
                raise AssertionError(op)

    def states(self) -> set[str]:
        return {DaemonState(s).name.lower() for s in self.running}


def make_config(
    mode: str = "external", role: str = "backup", hook_timeout: float = 5.0, **sync: object
) -> Config:
    return Config(
        daemon=DaemonConfig(hook_timeout=hook_timeout),
        ha=HAConfig(mode=mode, role=role),
        sync=SyncConfig(**{"interface": "eth0", "syncid": 7, **sync}),  # type: ignore[arg-type]
    )


@pytest.fixture
def sysdir(tmp_path: Path) -> Path:
    d = tmp_path / "vs"
    d.mkdir()
    for name in SYSCTLS:
        (d / name).write_text("kernel-default\n")
    return d


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_daemon_matches_treats_zero_as_kernel_default() -> None:
    want = SyncDaemon(DaemonState.MASTER, "eth0", 7)
    have = SyncDaemon(DaemonState.MASTER, "eth0", 7, 1472, "224.0.0.81", 8848, 1)
    assert daemon_matches(want, have)
    assert not daemon_matches(replace(want, syncid=8), have)
    assert not daemon_matches(replace(want, mcast_port=8849), have)
    assert not daemon_matches(replace(want, state=DaemonState.BACKUP), have)


def test_static_master_runs_master_daemon_and_writes_sysctls(sysdir: Path) -> None:
    be = DaemonBackend()
    roles: list[str] = []

    async def go() -> dict:
        m = HAManager(make_config("static", "master"), be, roles.append, sysctl_dir=str(sysdir))
        await m.start()
        st = m.status()
        with pytest.raises(HAError, match="external"):
            m.set_role("backup")
        await m.stop("keep")
        return st

    st = run(go())
    assert roles == ["master"]
    assert be.states() == {"master"}  # on_stop keep: left running
    assert (sysdir / "sync_threshold").read_text() == "3 0\n"
    assert (sysdir / "sync_refresh_period").read_text() == "10\n"
    assert st["sysctls"]["sync_threshold"] == "3 0"
    assert st["role"] == "master" and st["mode"] == "static"
    assert st["sync"]["running"][0]["state"] == "master" and st["sync"]["running"][0]["syncid"] == 7


def test_external_roles_switch_daemons(sysdir: Path) -> None:
    be = DaemonBackend()
    roles: list[str] = []

    async def go() -> None:
        m = HAManager(make_config("external", "backup"), be, roles.append, sysctl_dir=str(sysdir))
        await m.start()
        assert be.states() == {"backup"}
        m.set_role("master")
        assert be.states() == {"master"}
        assert be.log[-2:] == ["start master", "stop backup"]  # start first: never without
        m.set_role("master")  # idempotent: nothing restarted
        assert be.log[-1] == "stop backup"
        m.set_role("fault")  # on_fault = "backup" by default
        assert be.states() == {"backup"}
        with pytest.raises(HAError, match="must be master, backup or fault"):
            m.set_role("primary")
        await m.stop("remove")
        assert be.states() == set()

    run(go())
    assert roles == ["backup", "master", "fault"]


def test_backup_always_and_on_fault_none(sysdir: Path) -> None:
    be = DaemonBackend()

    async def go() -> None:
        m = HAManager(
            make_config("external", "master", backup_always=True, on_fault="none"),
            be,
            lambda r: None,
            sysctl_dir=str(sysdir),
        )
        await m.start()
        assert be.states() == {"master", "backup"}
        m.set_role("fault")
        assert be.states() == set()
        m.set_role("backup")
        assert be.states() == {"backup"}
        await m.stop("keep")

    run(go())


def test_adopts_running_daemons_and_replaces_wrong_ones(sysdir: Path) -> None:
    be = DaemonBackend()
    be.running[DaemonState.MASTER] = SyncDaemon(DaemonState.MASTER, "eth0", 7, 1472, "224.0.0.81", 8848, 1)
    be.running[DaemonState.BACKUP] = SyncDaemon(DaemonState.BACKUP, "eth1", 3, 1472, "224.0.0.81", 8848, 1)

    async def go() -> None:
        m = HAManager(make_config("static", "master"), be, lambda r: None, sysctl_dir=str(sysdir))
        await m.start()
        assert be.log == ["stop backup"]  # the right master daemon is kept as it is
        # reload with another syncid: the daemon is restarted with it; the role stays
        await m.reload(make_config("static", "master", syncid=9))
        assert be.running[DaemonState.MASTER].syncid == 9
        assert be.log[-2:] == ["stop master", "start master"]
        await m.stop("keep")

    run(go())


def test_external_role_survives_reload(sysdir: Path) -> None:
    be = DaemonBackend()

    async def go() -> None:
        m = HAManager(make_config("external", "backup"), be, lambda r: None, sysctl_dir=str(sysdir))
        await m.start()
        m.set_role("master")
        await m.reload(make_config("external", "backup", sync_threshold=(2, 50)))
        assert m.role == "master" and be.states() == {"master"}
        assert (sysdir / "sync_threshold").read_text() == "2 50\n"
        await m.reload(replace(make_config("static", "backup")))
        assert m.role == "backup" and be.states() == {"backup"}
        await m.stop("keep")

    run(go())


def test_sysctl_errors_are_reported_not_fatal(tmp_path: Path) -> None:
    be = DaemonBackend()

    async def go() -> dict:
        m = HAManager(
            make_config("static", "backup"), be, lambda r: None, sysctl_dir=str(tmp_path / "missing")
        )
        await m.start()
        st = m.status()
        await m.stop("keep")
        return st

    st = run(go())
    assert set(st["sysctl_errors"]) == set(SYSCTLS) and st["role"] == "backup"


def test_start_errors_are_reported(sysdir: Path) -> None:
    class Refusing(DaemonBackend):
        def apply(self, ops) -> None:  # type: ignore[no-untyped-def]
            raise IPVSError(ops[0], errno.ENODEV)

    async def go() -> dict:
        m = HAManager(make_config("static", "master"), Refusing(), lambda r: None, sysctl_dir=str(sysdir))
        await m.start()
        st = m.status()
        await m.stop("keep")
        return st

    st = run(go())
    assert "starting the master sync daemon" in st["sync"]["error"] and "ENODEV" in st["sync"]["error"]


def test_hooks_run_in_order_with_role_and_timeout(sysdir: Path, tmp_path: Path) -> None:
    out = tmp_path / "hooks.txt"
    script = "import os,sys,time; open(sys.argv[1],'a').write(os.environ['LVSD_ROLE']+' '+sys.argv[2]+'\\n')"
    ha = HAConfig(
        mode="external",
        role="backup",
        notify_master=(sys.executable, "-c", script, str(out), "m"),
        notify_backup=(sys.executable, "-c", script, str(out), "b"),
        notify_fault=(sys.executable, "-c", "import time; time.sleep(30)"),
    )
    cfg = replace(make_config(hook_timeout=1.0), ha=ha)

    async def go() -> HAManager:
        m = HAManager(cfg, DaemonBackend(), lambda r: None, sysctl_dir=str(sysdir))
        await m.start()
        m.set_role("master")
        m.set_role("fault")
        m.set_role("backup")
        assert m.role == "backup" and m.hook_results == {}  # transitions never wait for hooks
        await asyncio.wait_for(m.hooks_done(), 10)
        await m.stop("keep")
        return m

    m = run(go())
    assert out.read_text().splitlines() == ["backup b", "master m", "backup b"]
    assert m.hook_results["notify_fault"] == "killed after 1 s"
    assert m.hook_results["notify_master"] == "ok"


def test_hook_that_cannot_run(sysdir: Path) -> None:
    cfg = replace(
        make_config(), ha=HAConfig(mode="external", role="backup", notify_backup=("/nonexistent/hook",))
    )

    async def go() -> HAManager:
        m = HAManager(cfg, DaemonBackend(), lambda r: None, sysctl_dir=str(sysdir))
        await m.start()
        await asyncio.wait_for(m.hooks_done(), 10)
        await m.stop("keep")
        return m

    assert "cannot run /nonexistent/hook" in run(go()).hook_results["notify_backup"]


# --- VRRP through its ports ----------------------------------------------------------------------------


class FakeAdvertSocket:
    """The advert socket's stand-in: ``inject`` queues a packet (IP header included for IPv4, with
    its ancillary data) and makes the descriptor readable, as the kernel would; ``sent`` keeps
    every advert sent as (payload, ancillary data, destination)."""

    def __init__(self, af: int, ifname: str, ifindex: int) -> None:
        self.af, self.ifname, self.ifindex = af, ifname, ifindex
        self._r, self._w = socket.socketpair()
        self._r.setblocking(False)
        self._inbox: deque[tuple[bytes, list, int, tuple]] = deque()
        self.sent: list[tuple[bytes, list, tuple]] = []
        self.closed = False

    def fileno(self) -> int:
        return self._r.fileno()

    def inject(self, data: bytes, anc: list, addr: tuple) -> None:
        self._inbox.append((data, anc, 0, addr))
        self._w.send(b"x")

    @property
    def pending(self) -> int:
        """Packets injected and not yet read."""
        return len(self._inbox)

    def recvmsg(self, bufsize: int, ancbufsize: int) -> tuple[bytes, list, int, tuple]:
        self._r.recv(1)  # BlockingIOError when nothing is queued, like a real non-blocking socket
        return self._inbox.popleft()

    def sendmsg(self, buffers: list[bytes], anc: list, flags: int, addr: tuple) -> int:
        data = b"".join(buffers)
        self.sent.append((data, anc, addr))
        return len(data)

    def close(self) -> None:
        self._r.close()
        self._w.close()
        self.closed = True

    def priorities(self, src: str) -> list[int]:
        """The priority of each advert sent so far (decoded, checksum checked, from ``src``)."""
        group = core.VRRP_GROUP4 if self.af == core.AF_INET else core.VRRP_GROUP6
        return [core.decode(d, src, group).priority for d, _, _ in self.sent]


class Sockets:
    """A socket factory that hands out FakeAdvertSockets and remembers them."""

    def __init__(self) -> None:
        self.made: list[FakeAdvertSocket] = []

    def __call__(self, af: int, ifname: str, ifindex: int) -> FakeAdvertSocket:
        s = FakeAdvertSocket(af, ifname, ifindex)
        self.made.append(s)
        return s

    @property
    def last(self) -> FakeAdvertSocket:
        return self.made[-1]


def ipv4_packet(payload: bytes, src: str, dst: str = core.VRRP_GROUP4, ttl: int = 255) -> bytes:
    hdr = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(payload),
        0,
        0,
        ttl,
        112,
        0,
        socket.inet_aton(src),
        socket.inet_aton(dst),
    )
    return hdr + payload


def pktinfo(ifindex: int) -> list:
    return [(socket.IPPROTO_IP, dv.IP_PKTINFO, struct.pack("=i4s4s", ifindex, b"\0" * 4, b"\0" * 4))]


def _vip(a: str, plen: int = 24) -> VipConfig:
    return VipConfig(socket.AF_INET6 if ":" in a else socket.AF_INET, a, plen)


def vrrp_ha(priority: int = 100, interval: float = 1.0, vips: tuple[str, ...] = ("10.1.0.100",), **kw: Any) -> HAConfig:
    plen = 64 if ":" in vips[0] else 24
    return HAConfig(
        mode="vrrp",
        interface="eth0",
        vrid=kw.pop("vrid", 51),
        priority=priority,
        advert_interval=interval,
        vips=tuple(_vip(v, plen) for v in vips),
        **kw,
    )


async def director(
    ha: HAConfig, address: str = "10.1.0.11/24"
) -> tuple[dv.VRRPInstance, MemoryLinks, Sockets, list[tuple[core.State, set[str]]]]:
    """A started VRRP instance on eth0 (index 2) of an in-memory kernel holding ``address``.
    The state log records each reported state with the addresses eth0 held at that moment."""
    links = MemoryLinks()
    eth0 = links.add_nic("eth0")
    a, plen = address.split("/")
    await links.add_address(eth0.index, a, int(plen))
    sockets = Sockets()
    states: list[tuple[core.State, set[str]]] = []
    inst = dv.VRRPInstance(
        ha,
        links,
        lambda s: states.append((s, {x.address for x in links.addresses_now(eth0.index)})),
        socket_factory=sockets,
    )
    await inst.start()
    return inst, links, sockets, states


async def until(cond: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Wait for ``cond`` (the instance's timers are real); fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def deliver(inst: dv.VRRPInstance, sock: FakeAdvertSocket, data: bytes, anc: list, addr: tuple) -> None:
    """Inject one packet and wait until the instance has read it and done what it asked for."""
    sock.inject(data, anc, addr)
    await until(lambda: not sock.pending, "the packet to be read")
    await inst.settle()


def advert4(prio: int, src: str, vrid: int = 51, addrs: tuple[str, ...] = ("10.1.0.100",), ttl: int = 255) -> bytes:
    return ipv4_packet(core.encode(core.Advert(vrid, prio, 100, addrs), src, core.VRRP_GROUP4), src, ttl=ttl)


async def master(ha: HAConfig) -> tuple[dv.VRRPInstance, MemoryLinks, Sockets, list[tuple[core.State, set[str]]]]:
    """A director that has become master (alone on its link)."""
    inst, links, sockets, states = await director(ha)
    await until(lambda: inst.state.state is core.State.MASTER, "master")
    await inst.settle()
    return inst, links, sockets, states


def vips_on(links: MemoryLinks, index: int = 2) -> set[str]:
    return {a.address for a in links.addresses_now(index)} - {"10.1.0.11"} - {
        a.address for a in links.addresses_now(index) if a.address.startswith("fe80:")
    }


def test_takeover_adds_announces_then_reports() -> None:
    async def go() -> None:
        inst, links, sockets, states = await master(vrrp_ha(interval=0.05, vips=("10.1.0.100", "10.1.0.101")))
        assert vips_on(links) == {"10.1.0.100", "10.1.0.101"}
        assert links.announcements[:2] == [("eth0", "10.1.0.100"), ("eth0", "10.1.0.101")]
        assert [s for s, _ in states] == [core.State.BACKUP, core.State.MASTER]
        assert {"10.1.0.100", "10.1.0.101"} <= states[-1][1]  # reported once the addresses are there
        assert "10.1.0.100" not in states[0][1]
        sock = sockets.last
        assert (sock.af, sock.ifname, sock.ifindex) == (core.AF_INET, "eth0", 2)
        assert sock.priorities("10.1.0.11")[0] == 100  # the master advertises
        st = inst.status()
        assert st["state"] == "master" and st["primary"] == "10.1.0.11" and st["master"] == "10.1.0.11"
        assert st["vip_interfaces"] == {"10.1.0.100": "eth0", "10.1.0.101": "eth0"}
        await inst.stop()
        assert sock.closed and sock.priorities("10.1.0.11")[-1] == 0  # resigned: priority 0
        assert vips_on(links) == set()

    run(go())


def test_higher_priority_advert_releases_the_addresses() -> None:
    async def go() -> None:
        inst, links, sockets, states = await master(vrrp_ha(interval=0.05))
        await deliver(inst, sockets.last, advert4(200, "10.1.0.12"), pktinfo(2), ("10.1.0.12", 0))
        assert inst.state.state is core.State.BACKUP and inst.state.master_addr == "10.1.0.12"
        assert vips_on(links) == set()
        assert states[-1] == (core.State.BACKUP, {"10.1.0.11", *[a for a in states[-1][1] if a.startswith("fe80")]})
        await inst.stop()

    run(go())


def test_left_over_address_is_removed_at_start() -> None:
    async def go() -> None:
        links = MemoryLinks()
        eth0 = links.add_nic("eth0")
        await links.add_address(eth0.index, "10.1.0.11", 24)
        await links.add_address(eth0.index, "10.1.0.100", 24)  # a crashed predecessor's
        inst = dv.VRRPInstance(vrrp_ha(), links, lambda s: None, socket_factory=Sockets())
        await inst.start()
        assert inst.state.state is core.State.BACKUP and "10.1.0.100" not in vips_on(links)
        await inst.stop()

    run(go())


def test_link_loss_is_fault_and_its_return_makes_master_again() -> None:
    async def go() -> None:
        inst, links, sockets, states = await master(vrrp_ha(interval=0.05))
        links.set_carrier("eth0", False)
        await until(lambda: inst.state.state is core.State.FAULT, "fault")
        await inst.settle()
        assert vips_on(links) == set() and states[-1][0] is core.State.FAULT
        links.set_carrier("eth0", True)
        await until(lambda: inst.state.state is core.State.MASTER, "master again")
        await inst.settle()
        assert vips_on(links) == {"10.1.0.100"}
        assert [s for s, _ in states] == [core.State.BACKUP, core.State.MASTER, core.State.FAULT,
                                          core.State.BACKUP, core.State.MASTER]  # fmt: skip
        await inst.stop()

    run(go())


def test_lost_source_address_is_fault_until_it_returns() -> None:
    async def go() -> None:
        inst, links, sockets, states = await master(vrrp_ha(interval=0.05))
        await links.delete_address(2, "10.1.0.11", 24)
        await until(lambda: inst.state.state is core.State.FAULT, "fault without a source address")
        await inst.settle()
        assert vips_on(links) == set()
        await links.add_address(2, "10.1.0.11", 24)
        await until(lambda: inst.state.state is core.State.MASTER, "master once the address is back")
        await inst.stop()

    run(go())


def test_address_removed_by_hand_is_put_back() -> None:
    async def go() -> None:
        inst, links, sockets, states = await master(vrrp_ha(interval=0.05, vips=("10.1.0.100", "10.1.0.101")))
        before = len(links.announcements)
        await links.delete_address(2, "10.1.0.101", 24)
        await until(lambda: "10.1.0.101" in vips_on(links), "the address to be put back")
        await inst.settle()
        assert inst.status()["counters"]["vips_restored"] == 1
        assert ("eth0", "10.1.0.101") in links.announcements[before:]
        assert inst.state.state is core.State.MASTER
        links.lose_events()  # after an overrun, the master checks again: nothing is missing
        await asyncio.sleep(0.05)
        await inst.settle()
        assert inst.status()["counters"]["vips_restored"] == 1
        await inst.stop()
        assert vips_on(links) == set()  # its own removals are not put back

    run(go())


def test_reload_moves_addresses_and_priority_in_place() -> None:
    async def go() -> None:
        inst, links, sockets, states = await master(vrrp_ha(interval=0.05, vips=("10.1.0.100", "10.1.0.101")))
        before = len(links.announcements)
        await inst.update(vrrp_ha(priority=150, interval=0.05, vips=("10.1.0.100", "10.1.0.102")))
        assert vips_on(links) == {"10.1.0.100", "10.1.0.102"}
        assert links.announcements[before:] == [("eth0", "10.1.0.102")]
        assert sockets.last.priorities("10.1.0.11")[-1] == 150 and inst.status()["priority"] == 150
        assert inst.state.state is core.State.MASTER and len(states) == 2  # no role change
        with pytest.raises(dv.VRRPError, match="address family"):
            await inst.update(vrrp_ha(interval=0.05, vips=("2001:db8::1",)))
        await inst.stop()

    run(go())


def test_receive_checks_drop_and_count() -> None:
    async def go() -> dv.VRRPInstance:
        inst, links, sockets, _ = await director(vrrp_ha())
        sock = sockets.last

        async def send(data: bytes, ifindex: int = 2, src: str = "10.1.0.12", anc: list | None = None) -> None:
            await deliver(inst, sock, data, pktinfo(ifindex) if anc is None else anc, (src, 0))

        good = advert4(150, "10.1.0.12")
        await send(advert4(150, "10.1.0.12", ttl=254))
        await send(good, ifindex=5)
        await send(good[:-1] + b"\x65")
        bad_dst = core.encode(core.Advert(51, 150, 100, ("10.1.0.100",)), "10.1.0.12", core.VRRP_GROUP4)
        await send(ipv4_packet(bad_dst, "10.1.0.12", dst="10.1.0.11"))
        await send(advert4(150, "10.1.0.12", vrid=52))
        v2 = bytearray(good)
        v2[20] = 0x21
        await send(bytes(v2))
        await send(b"\x45\x00", anc=[])
        assert inst.counters["received"] == 0 and inst.state.master_addr == ""
        await send(good)
        assert inst.counters["received"] == 1 and inst.state.master_addr == "10.1.0.12"
        await send(advert4(150, "10.1.0.12", addrs=("10.1.0.100", "10.1.0.7")))
        await send(advert4(150, "10.1.0.11"), src="10.1.0.11")
        await inst.stop()
        return inst

    inst = run(go())
    c = inst.counters
    assert c["dropped_ttl"] == 1
    assert c["dropped_interface"] == 1
    assert c["malformed"] == 3  # bad checksum, version 2, truncated header
    assert c["dropped_destination"] == 1
    assert c["other_vrid"] == 1
    assert c["received"] == 2 and c["address_mismatch"] == 1
    assert c["dropped_own_address"] == 1
    assert "differs" in inst.status()["last_warning"]


def test_receive_checks_ipv6() -> None:
    def anc6(hops: int, ifindex: int, dst: str = core.VRRP_GROUP6) -> list:
        return [
            (socket.IPPROTO_IPV6, dv.IPV6_HOPLIMIT, struct.pack("=i", hops)),
            (
                socket.IPPROTO_IPV6,
                dv.IPV6_PKTINFO,
                socket.inet_pton(socket.AF_INET6, dst) + struct.pack("=I", ifindex),
            ),
        ]

    async def go() -> dv.VRRPInstance:
        inst, links, sockets, _ = await director(vrrp_ha(vrid=61, vips=("2001:db8::100",)), "2001:db8::11/64")
        mine = link_local_of((await links.link("eth0")).mac)
        assert inst.status()["primary"] == mine  # adverts go from the link-local address
        sock = sockets.last
        good = core.encode(core.Advert(61, 150, 100, ("2001:db8::100",)), "fe80::2", core.VRRP_GROUP6)
        for anc, src in (
            (anc6(64, 2), "fe80::2"),
            (anc6(255, 9), "fe80::2"),
            ([], "fe80::2"),  # no hop limit at all: dropped
            (anc6(255, 2, "ff02::1"), "fe80::2"),
            (anc6(255, 2), "fe80::3"),  # the checksum covers the source
        ):
            await deliver(inst, sock, good, anc, (f"{src}%eth0", 0, 0, 2))
        assert inst.counters["received"] == 0
        await deliver(inst, sock, good, anc6(255, 2), ("fe80::2%eth0", 0, 0, 2))
        assert inst.state.master_addr == "fe80::2"
        await inst.stop()
        return inst

    c = run(go()).counters
    assert c["dropped_ttl"] == 2 and c["dropped_interface"] == 1 and c["dropped_destination"] == 1
    assert c["malformed"] == 1 and c["received"] == 1


def test_ipv6_takeover_announces_with_neighbour_advertisements() -> None:
    async def go() -> None:
        inst, links, sockets, states = await director(
            vrrp_ha(vrid=61, interval=0.05, vips=("2001:db8::100",)), "2001:db8::11/64"
        )
        await until(lambda: inst.state.state is core.State.MASTER, "master")
        await inst.settle()
        assert "2001:db8::100" in {a.address for a in links.addresses_now(2)}
        assert ("eth0", "2001:db8::100") in links.announcements
        await inst.stop()
        assert "2001:db8::100" not in {a.address for a in links.addresses_now(2)}

    run(go())


def test_master_meeting_a_lower_master_announces_again_rate_limited() -> None:
    async def go() -> dv.VRRPInstance:
        inst, links, sockets, _ = await master(vrrp_ha(priority=150, interval=0.05))
        for _ in range(3):  # a lower-priority master that just announced itself: we re-announce once
            await deliver(inst, sockets.last, advert4(100, "10.1.0.12"), pktinfo(2), ("10.1.0.12", 0))
        assert inst.state.state is core.State.MASTER
        await inst.stop()
        return inst

    assert run(go()).counters["reannouncements"] == 1


def test_start_without_the_interface_is_a_vrrp_error() -> None:
    async def go() -> None:
        links = MemoryLinks()
        sockets = Sockets()
        inst = dv.VRRPInstance(replace(vrrp_ha(), interface="nosuchif0"), links, lambda s: None, socket_factory=sockets)
        with pytest.raises(dv.VRRPError, match="no interface 'nosuchif0'"):
            await inst.start()
        await inst.stop()
        assert sockets.made == []

    run(go())


def test_manager_in_vrrp_mode_follows_the_instance(sysdir: Path) -> None:
    be = DaemonBackend()
    roles: list[str] = []
    cfg = replace(make_config(), ha=vrrp_ha(interval=0.05))

    async def go() -> None:
        links = MemoryLinks()
        eth0 = links.add_nic("eth0")
        await links.add_address(eth0.index, "10.1.0.11", 24)
        m = HAManager(cfg, be, roles.append, sysctl_dir=str(sysdir), links=links, socket_factory=Sockets())
        await m.start()
        await until(lambda: m.role == "master", "master")
        assert be.states() == {"master"} and "10.1.0.100" in vips_on(links)
        with pytest.raises(HAError, match="external"):
            m.set_role("backup")
        await m.reload(replace(cfg, ha=replace(cfg.ha, priority=120)))  # same instance: kept
        assert m.role == "master" and m.status()["vrrp"]["priority"] == 120
        await m.reload(make_config("static", "backup"))  # leaves VRRP: resigns, addresses go
        assert m.role == "backup" and m.vrrp is None and vips_on(links) == set()
        await m.stop("keep")
        assert not links.closed  # the manager closes only the port it opened itself

    run(go())
    assert roles == ["backup", "master", "backup"]


def test_vrrp_start_failure_is_one_line(sysdir: Path) -> None:
    cfg = replace(make_config(), ha=HAConfig(mode="vrrp", interface="nosuchif0", vrid=5, vips=(_vip("10.9.9.9"),)))

    async def go() -> HAManager:
        m = HAManager(cfg, DaemonBackend(), lambda r: None, sysctl_dir=str(sysdir), links=MemoryLinks())
        with pytest.raises(HAError, match="no interface 'nosuchif0'") as e:
            await m.start()
        assert "\n" not in str(e.value)
        await m.stop("keep")
        return m

    assert run(go()).role == "fault"


def test_only_vrrp_mode_imports_pyroute2(tmp_path: Path) -> None:
    """pyroute2 costs ~2.5 s to import under emulation: static and external modes never load it,
    vrrp mode loads it when it opens the kernel's links (here: the real default port, which fails
    on the missing interface after the import)."""
    code = (
        "import asyncio, sys\n"
        "from lvsd.config.model import Config, HAConfig, VipConfig\n"
        "from lvsd.daemon.ha import HAManager, HAError\n"
        "from lvsd.ipvs.memory import MemoryBackend\n"
        "async def go(ha):\n"
        "    m = HAManager(Config(ha=ha), MemoryBackend(), lambda r: None, sysctl_dir=sys.argv[1])\n"
        "    try:\n"
        "        await m.start()\n"
        "    except HAError:\n"
        "        pass\n"
        "    await m.stop('keep')\n"
        "    return 'pyroute2' in sys.modules\n"
        "a = asyncio.run(go(HAConfig(mode='static')))\n"
        "b = asyncio.run(go(HAConfig(mode='external', role='backup')))\n"
        "c = asyncio.run(go(HAConfig(mode='vrrp', interface='nosuchif0', vrid=5,"
        " vips=(VipConfig(2, '10.9.9.9', 24),))))\n"
        "print(a, b, c)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False", "True"]


def test_announcement_frames() -> None:
    mac = bytes.fromhex("020000000001")
    f = garp_frame(mac, "10.1.0.100")
    assert f[:6] == b"\xff" * 6 and f[6:12] == mac and f[12:14] == b"\x08\x06"
    assert f[14:22] == bytes.fromhex("0001 0800 06 04 0001")
    assert f[22:28] == mac and f[28:32] == f[38:42] == socket.inet_aton("10.1.0.100")
    na = unsolicited_na(mac, "2001:db8::1")
    assert na[0] == 136 and na[4] == 0x20 and na[8:24] == socket.inet_pton(socket.AF_INET6, "2001:db8::1")
    assert na[24:26] == b"\x02\x01" and na[26:] == mac


def test_op_shapes_used() -> None:
    # the manager speaks only through these two operations
    assert Op.start_daemon(SyncDaemon(DaemonState.MASTER, "eth0")).kind is OpKind.START_DAEMON
    assert Op.stop_daemon(DaemonState.BACKUP).kind is OpKind.STOP_DAEMON
