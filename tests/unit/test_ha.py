"""HAManager on the host: role sources, sync daemons by role, sysctls, hooks; and the VRRP
receive path's safety checks fed with crafted packets (no network needed)."""

from __future__ import annotations

import asyncio
import errno
import socket
import struct
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from lvsd.config.model import Config, DaemonConfig, HAConfig, SyncConfig
from lvsd.core import vrrp as core
from lvsd.daemon import vrrp as dv
from lvsd.daemon.ha import HAError, HAManager, daemon_matches
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
        t0 = asyncio.get_running_loop().time()
        await m.start()
        m.set_role("master")
        m.set_role("fault")
        m.set_role("backup")
        assert asyncio.get_running_loop().time() - t0 < 0.5  # transitions never wait for hooks
        await asyncio.wait_for(m._hooks.join(), 10)  # type: ignore[union-attr]
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
        await asyncio.wait_for(m._hooks.join(), 10)  # type: ignore[union-attr]
        await m.stop("keep")
        return m

    assert "cannot run /nonexistent/hook" in run(go()).hook_results["notify_backup"]


def test_vrrp_start_failure_is_one_line(sysdir: Path) -> None:
    cfg = replace(
        make_config(),
        ha=HAConfig(mode="vrrp", interface="nosuchif0", vrid=5, vips=(_vip("10.9.9.9"),)),
    )

    async def go() -> HAManager:
        m = HAManager(cfg, DaemonBackend(), lambda r: None, sysctl_dir=str(sysdir))
        with pytest.raises(HAError, match="no interface 'nosuchif0'"):
            await m.start()
        await m.stop("keep")
        return m

    assert run(go()).role == "fault"


def _vip(a: str, plen: int = 24):  # type: ignore[no-untyped-def]
    from lvsd.config.model import VipConfig

    return VipConfig(socket.AF_INET, a, plen)


# --- the receive path's safety checks, with crafted packets ------------------------------------------


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


def test_receive_checks_drop_and_count() -> None:
    states: list[core.State] = []

    async def go() -> dv.VRRPInstance:
        inst = dv.VRRPInstance("eth0", 51, 100, 1.0, [("10.1.0.100", 24)], states.append)
        inst._loop = asyncio.get_running_loop()
        inst.ifindex = 4
        inst.params = replace(inst.params, primary="10.1.0.11")
        inst._running = True  # sockets are not needed: _handle is fed directly
        inst.state, _ = core.step(inst.params, core.VRRPState(), inst._loop.time(), core.Startup())
        good = core.encode(core.Advert(51, 150, 100, ("10.1.0.100",)), "10.1.0.12", core.VRRP_GROUP4)
        inst._handle(ipv4_packet(good, "10.1.0.12", ttl=254), pktinfo(4), ("10.1.0.12", 0))
        inst._handle(ipv4_packet(good, "10.1.0.12"), pktinfo(5), ("10.1.0.12", 0))
        inst._handle(ipv4_packet(good[:-1] + b"\x65", "10.1.0.12"), pktinfo(4), ("10.1.0.12", 0))
        inst._handle(ipv4_packet(good, "10.1.0.12", dst="10.1.0.11"), pktinfo(4), ("10.1.0.12", 0))
        other = core.encode(core.Advert(52, 150, 100, ("10.1.0.100",)), "10.1.0.12", core.VRRP_GROUP4)
        inst._handle(ipv4_packet(other, "10.1.0.12"), pktinfo(4), ("10.1.0.12", 0))
        v2 = bytearray(good)
        v2[0] = 0x21
        inst._handle(ipv4_packet(bytes(v2), "10.1.0.12"), pktinfo(4), ("10.1.0.12", 0))
        inst._handle(b"\x45\x00", [], ("10.1.0.12", 0))
        assert inst.counters["received"] == 0 and inst.state.master_addr == ""
        inst._handle(ipv4_packet(good, "10.1.0.12"), pktinfo(4), ("10.1.0.12", 0))
        assert inst.counters["received"] == 1 and inst.state.master_addr == "10.1.0.12"
        odd = core.encode(
            core.Advert(51, 150, 100, ("10.1.0.100", "10.1.0.7")), "10.1.0.12", core.VRRP_GROUP4
        )
        inst._handle(ipv4_packet(odd, "10.1.0.12"), pktinfo(4), ("10.1.0.12", 0))
        mine = core.encode(core.Advert(51, 150, 100, ("10.1.0.100",)), "10.1.0.11", core.VRRP_GROUP4)
        inst._handle(ipv4_packet(mine, "10.1.0.11"), pktinfo(4), ("10.1.0.11", 0))
        inst._timer.cancel()  # type: ignore[union-attr]
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
        inst = dv.VRRPInstance("eth0", 61, 100, 1.0, [("2001:db8::100", 64)], lambda s: None)
        inst._loop = asyncio.get_running_loop()
        inst.ifindex = 3
        inst.params = replace(inst.params, primary="fe80::1")
        inst._running = True
        inst.state, _ = core.step(inst.params, core.VRRPState(), inst._loop.time(), core.Startup())
        good = core.encode(core.Advert(61, 150, 100, ("2001:db8::100",)), "fe80::2", core.VRRP_GROUP6)
        inst._handle(good, anc6(64, 3), ("fe80::2%eth0", 0, 0, 3))
        inst._handle(good, anc6(255, 9), ("fe80::2%eth0", 0, 0, 9))
        inst._handle(good, [], ("fe80::2%eth0", 0, 0, 3))  # no hop limit at all: dropped
        inst._handle(good, anc6(255, 3, "ff02::1"), ("fe80::2%eth0", 0, 0, 3))
        inst._handle(good, anc6(255, 3), ("fe80::3%eth0", 0, 0, 3))  # checksum covers the source
        assert inst.counters["received"] == 0
        inst._handle(good, anc6(255, 3), ("fe80::2%eth0", 0, 0, 3))
        assert inst.state.master_addr == "fe80::2"
        inst._timer.cancel()  # type: ignore[union-attr]
        return inst

    c = run(go()).counters
    assert c["dropped_ttl"] == 2 and c["dropped_interface"] == 1 and c["dropped_destination"] == 1
    assert c["malformed"] == 1 and c["received"] == 1


def test_master_meeting_a_lower_master_announces_again_rate_limited() -> None:
    async def go() -> dv.VRRPInstance:
        inst = dv.VRRPInstance("eth0", 51, 150, 0.1, [("10.1.0.100", 24)], lambda s: None)
        inst._loop = asyncio.get_running_loop()
        inst.ifindex = 4
        inst.params = replace(inst.params, primary="10.1.0.11")
        inst._running = True
        inst.state = core.VRRPState(core.State.MASTER, inst._loop.time() + 100, 10, "10.1.0.11")
        lower = core.encode(core.Advert(51, 100, 10, ("10.1.0.100",)), "10.1.0.12", core.VRRP_GROUP4)
        for _ in range(3):  # a lower-priority master that just announced itself: we re-announce once
            inst._handle(ipv4_packet(lower, "10.1.0.12"), pktinfo(4), ("10.1.0.12", 0))
        assert inst.state.state is core.State.MASTER
        inst._timer.cancel()  # type: ignore[union-attr]
        return inst

    inst = run(go())
    assert inst.counters["reannouncements"] == 1


def test_announcement_frames() -> None:
    mac = bytes.fromhex("020000000001")
    f = dv.garp_frame(mac, "10.1.0.100")
    assert f[:6] == b"\xff" * 6 and f[6:12] == mac and f[12:14] == b"\x08\x06"
    assert f[14:22] == bytes.fromhex("0001 0800 06 04 0001")
    assert f[22:28] == mac and f[28:32] == f[38:42] == socket.inet_aton("10.1.0.100")
    na = dv.unsolicited_na(mac, "2001:db8::1")
    assert na[0] == 136 and na[4] == 0x20 and na[8:24] == socket.inet_pton(socket.AF_INET6, "2001:db8::1")
    assert na[24:26] == b"\x02\x01" and na[26:] == mac


def test_rtnl_reads_loopback() -> None:
    r = dv.Rtnl()
    try:
        idx = socket.if_nametoindex("lo")
        flags, mac = r.link(idx)
        assert dv.link_running(flags)
        assert ("127.0.0.1", 8, 254) in r.addresses(idx, socket.AF_INET)
        with pytest.raises(OSError):
            r.link(999999)
    finally:
        r.close()


def test_op_shapes_used() -> None:
    # the manager speaks only through these two operations
    assert Op.start_daemon(SyncDaemon(DaemonState.MASTER, "eth0")).kind is OpKind.START_DAEMON
    assert Op.stop_daemon(DaemonState.BACKUP).kind is OpKind.STOP_DAEMON
