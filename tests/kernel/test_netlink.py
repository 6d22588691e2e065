"""NetlinkBackend against the real kernel (run in the VM), with ipvsadm 1.31 as the oracle.

What the contract suite does not cover: attribute encodings checked through ipvsadm, ipvsadm's
edit semantics, batching (continue-after-failure, chunking, forced overruns), large multipart
dumps, per-op error naming, sync daemons, timeouts, the connection table and the
"no permission" path. Everything runs in a network namespace of its own (``lvnl``), entered
with setns() for the module, so the VM's root IPVS table is never touched.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import time
from dataclasses import replace

import pytest
from netns import _setns, sh  # tests/kernel/conftest.py puts tests/kernel on sys.path

from lvsd.ipvs import genl
from lvsd.ipvs import netlink as nl
from lvsd.ipvs.backend import BatchError, IPVSError, Op
from lvsd.ipvs.model import (
    AF_INET6,
    SVC_F_PERSISTENT,
    SVC_F_SCHED1,
    SVC_F_SCHED2,
    TUN_F_CSUM,
    TUN_F_REMCSUM,
    DaemonState,
    Destination,
    DestKey,
    Forward,
    Service,
    ServiceKey,
    SyncDaemon,
    Timeouts,
    TunType,
    ValueInvalid,
    netmask_to_int,
)

pytestmark = pytest.mark.kernel

NS = "lvnl"


@pytest.fixture(scope="module")
def netns():
    """Enter a fresh network namespace (own IPVS table, lo up) for the whole module."""
    try:
        genl.GenlSocket("IPVS").close()
    except (genl.FamilyNotFound, OSError):
        pytest.skip("no IPVS in this kernel (run through tests/kernel/vm.sh)")
    for mod in ("ip_vs_wrr", "ip_vs_rr", "ip_vs_sh", "ip_vs_mh", "ip_vs_pe_sip", "veth"):
        sh("modprobe", mod, check=False)
    sh("ip", "netns", "del", NS, check=False)
    sh("ip", "netns", "add", NS)
    orig = os.open("/proc/self/ns/net", os.O_RDONLY)
    new = os.open(f"/run/netns/{NS}", os.O_RDONLY)
    _setns(new)
    try:
        sh("ip", "link", "set", "lo", "up")
        yield
    finally:
        _setns(orig)
        os.close(orig)
        os.close(new)
        sh("ip", "netns", "del", NS, check=False)


@pytest.fixture
def be(netns):
    b = nl.NetlinkBackend()
    b.flush()
    yield b
    for d in b.daemons():
        b.stop_daemon(d.state)
    b.flush()
    b.close()


def table(b: nl.NetlinkBackend) -> dict:
    """{service: {dest, ...}} with model equality (settable fields only)."""
    return {k: (e.service, frozenset(e.dests.values())) for k, e in b.dump().items()}


# --- encodings, checked through ipvsadm ---------------------------------------------------------

K1 = ServiceKey.inet("tcp", "10.0.0.1", 80)
K2 = ServiceKey.inet("udp", "2001:db8::1", 53)
K3 = ServiceKey.fwmark_key(7)
K4 = ServiceKey.fwmark_key(8, AF_INET6)
K5 = ServiceKey.inet("udp", "10.0.0.5", 5060)
K6 = ServiceKey.inet("sctp", "10.0.0.6", 9)

RICH = [
    Op.add_service(Service(K1, "wrr", SVC_F_PERSISTENT, 600, netmask_to_int("255.255.255.0"))),
    Op.add_dest(K1, Destination(DestKey.of("10.0.0.2", 80), Forward.MASQ, 3)),
    Op.add_dest(K1, Destination(DestKey.of("10.0.0.3", 80), Forward.TUNNEL, 1, tun_type=TunType.GUE,
                                tun_port=6080, tun_flags=TUN_F_CSUM)),
    Op.add_dest(K1, Destination(DestKey.of("10.0.0.4", 80), Forward.TUNNEL, 1, tun_type=TunType.GRE,
                                tun_flags=TUN_F_CSUM)),
    Op.add_dest(K1, Destination(DestKey.of("10.0.0.10", 80), Forward.TUNNEL, 4, tun_type=TunType.GUE,
                                tun_port=7000, tun_flags=TUN_F_REMCSUM)),
    Op.add_dest(K1, Destination(DestKey.of("10.0.0.7", 80), Forward.ROUTE, 2, u_threshold=100, l_threshold=10)),
    Op.add_service(Service(K2, "rr", SVC_F_PERSISTENT, 60, 64)),
    Op.add_dest(K2, Destination(DestKey.of("2001:db8::2", 53), Forward.ROUTE, 2)),
    Op.add_dest(K2, Destination(DestKey.of("192.168.1.1", 53), Forward.TUNNEL, 2)),  # mixed family
    Op.add_service(Service(K3, "sh", SVC_F_SCHED1 | SVC_F_SCHED2)),
    Op.add_dest(K3, Destination(DestKey.of("10.0.0.8", 0), Forward.ROUTE, 0)),
    Op.add_service(Service(K4, "mh", SVC_F_SCHED1)),
    Op.add_service(Service(K5, "rr", SVC_F_PERSISTENT, 30, pe_name="sip")),
    Op.add_service(Service(K6, "wlc")),
    Op.add_dest(K6, Destination(DestKey.of("10.0.0.9", 9), Forward.MASQ, 0x7FFFFFFF, 0x7FFFFFFF, 0x7FFFFFFF)),
]  # fmt: skip


def test_encodings_roundtrip_through_ipvsadm(be):
    be.apply(RICH)
    ours = table(be)
    want = {}
    for op in RICH:
        if op.service is not None:
            want[op.key] = (op.service, set())
        else:
            want[op.key][1].add(op.dest)
    assert ours == {k: (s, frozenset(d)) for k, (s, d) in want.items()}
    saved = sh("ipvsadm", "-Sn")
    for frag in (
        "-A -t 10.0.0.1:80 -s wrr -p 600 -M 255.255.255.0",
        "-a -t 10.0.0.1:80 -r 10.0.0.3:80 -i -w 1 --tun-type gue --tun-port 6080 --tun-csum",
        "-A -u [2001:db8::1]:53 -s rr -p 60 -M 64",
        "-a -u [2001:db8::1]:53 -r 192.168.1.1:53 -i -w 2",
        "-A -f 7 -s sh -b sh-fallback,sh-port",
        "--pe sip",
        "-a -t 10.0.0.1:80 -r 10.0.0.7:80 -g -w 2",
        "-a -t 10.0.0.1:80 -r 10.0.0.4:80 -i -w 1 --tun-type gre --tun-csum",
        "-a -t 10.0.0.1:80 -r 10.0.0.10:80 -i -w 4 --tun-type gue --tun-port 7000 --tun-remcsum",
    ):
        assert frag in saved, (frag, saved)
    thresholds = sh("ipvsadm", "-Ln", "--thresholds", "-t", "10.0.0.1:80")
    assert "-> 10.0.0.7:80                  100        10 " in thresholds, thresholds
    # what ipvsadm restores from its own save is, attribute for attribute, what we wrote
    # (ipvsadm -S does not save thresholds: those come back as 0; and ipvsadm gives -g/-i real
    # servers the service's port, so RICH only uses other ports with -m)
    be.flush()
    sh("ipvsadm", "-R", input=saved)
    no_thresholds = {
        k: (s, frozenset(replace(d, u_threshold=0, l_threshold=0) for d in ds)) for k, (s, ds) in ours.items()
    }
    restored = table(be)
    diff = {k: restored[k][1] ^ no_thresholds[k][1] for k in restored if restored[k] != no_thresholds[k]}
    assert restored == no_thresholds, diff
    be.flush()
    be.apply(RICH)
    assert sh("ipvsadm", "-Sn") == saved
    # and single reads agree with the dump
    for key, (svc, dests) in ours.items():
        assert be.service(key) == svc
        assert frozenset(be.dests(key)) == dests


def test_edit_replaces_all_flags_like_ipvsadm(be):
    sh("ipvsadm", "-A", "-t", "10.1.0.1:80", "-s", "wrr", "-p", "120")
    sh("ipvsadm", "-E", "-t", "10.1.0.1:80", "-s", "rr")  # no -p: ipvsadm clears persistence
    key = ServiceKey.inet("tcp", "10.1.0.1", 80)
    assert be.service(key) == Service(key, "rr", 0, 0)
    be.edit_service(Service(key, "wrr", SVC_F_PERSISTENT, 300))
    assert "wrr persistent 300" in sh("ipvsadm", "-Ln", "-t", "10.1.0.1:80")
    be.edit_service(Service(key, "sh", SVC_F_SCHED2))
    assert be.service(key) == Service(key, "sh", SVC_F_SCHED2, 0)
    assert sh("ipvsadm", "-Sn").strip() == "-A -t 10.1.0.1:80 -s sh -b sh-port"


# --- batches ------------------------------------------------------------------------------------


def test_batch_goes_on_after_failures_and_names_each(be):
    A = ServiceKey.inet("tcp", "10.2.0.1", 80)
    B = ServiceKey.inet("tcp", "10.2.0.2", 80)
    missing = ServiceKey.inet("tcp", "10.2.0.99", 80)
    d1 = Destination(DestKey.of("10.2.1.1", 80), Forward.MASQ, 5)
    ops = [
        Op.add_service(Service(A, "rr")),  # 0 ok
        Op.add_service(Service(A, "wrr")),  # 1 EEXIST
        Op.add_dest(A, d1),  # 2 ok (after a failure: the kernel goes on)
        Op.add_dest(missing, d1),  # 3 ESRCH
        Op.add_service(Service(B, "no-such-sched")),  # 4 ENOENT (no scheduler module)
        Op.del_dest(A, DestKey.of("10.2.1.2", 80)),  # 5 ENOENT (no such dest)
        Op.add_dest(A, d1),  # 6 EEXIST
        Op.edit_dest(A, Destination(DestKey.of("10.2.1.3", 80))),  # 7 ENOENT
        Op.add_dest(A, Destination(DestKey.of("10.2.1.4", 80), tun_type=TunType.GUE, forward=Forward.TUNNEL)),  # 8 EINVAL
        Op.add_service(Service(B, "wrr")),  # 9 ok
        Op.edit_dest(A, Destination(DestKey.of("10.2.1.1", 80), Forward.MASQ, 9)),  # 10 ok
        Op.del_service(missing),  # 11 ESRCH
        Op.add_dest(A, Destination(DestKey.of("10.2.1.6", 80), u_threshold=0, l_threshold=5)),  # 12 ERANGE (l > u)
    ]
    # a value the kernel would refuse (u_threshold > INT_MAX: EINVAL on 6.1) stops the whole batch
    # before anything is sent
    with pytest.raises(ValueInvalid, match="u_threshold"):
        be.apply(ops + [Op.add_dest(A, Destination(DestKey.of("10.2.1.5", 80), u_threshold=0x80000000))])
    assert be.dump() == {}
    with pytest.raises(BatchError) as ei:
        be.apply(ops)
    e = ei.value
    def index(op: Op) -> int:
        return next(i for i, o in enumerate(ops) if o is op)

    got = {index(op): err.errno for op, err in e.failed}
    assert got == {1: errno.EEXIST, 3: errno.ESRCH, 4: errno.ENOENT, 5: errno.ENOENT, 6: errno.EEXIST,
                   7: errno.ENOENT, 8: errno.EINVAL, 11: errno.ESRCH, 12: errno.ERANGE}  # fmt: skip
    assert [index(op) for op in e.applied] == [0, 2, 9, 10]
    for op, err in e.failed:
        assert err.op is op and isinstance(err, IPVSError)
    # applied is the truth: exactly those changes are in the kernel
    t = be.dump()
    assert set(t) == {A, B}
    assert t[A].service.scheduler == "rr" and t[B].service.scheduler == "wrr"
    assert list(t[A].dests.values()) == [Destination(DestKey.of("10.2.1.1", 80), Forward.MASQ, 9)]
    # a batch of one raises the plain IPVSError carrying the op
    with pytest.raises(IPVSError) as one:
        be.add_service(Service(A))
    assert one.value.errno == errno.EEXIST and one.value.op.key == A and not isinstance(one.value, BatchError)
    with pytest.raises(IPVSError) as gone:
        be.dests(missing)
    assert gone.value.errno == errno.ESRCH
    with pytest.raises(IPVSError) as gone:
        be.service(missing)
    assert gone.value.errno == errno.ESRCH


def test_many_chunks_and_large_multipart_dumps(netns):
    """2,000 services + one service with 2,000 destinations, sent 61 ops per sendmsg(), read back
    through multipart dumps of many datagrams; compared with ipvsadm's listing."""
    b = nl.NetlinkBackend(batch_size=61)
    try:
        b.flush()
        big = ServiceKey.inet("tcp", "10.3.0.1", 80)
        ops = [Op.add_service(Service(big, "wrr"))]
        ops += [Op.add_dest(big, Destination(DestKey.of(f"10.4.{i // 250}.{i % 250 + 1}", 80), Forward.MASQ, i))
                for i in range(2000)]  # fmt: skip
        keys = [ServiceKey.inet("udp", f"10.5.{i // 250}.{i % 250 + 1}", 53) for i in range(2000)]
        ops += [Op.add_service(Service(k, "rr")) for k in keys]
        sent = []
        real = b.sock.sock

        class Spy:
            def __getattr__(self, name):
                return getattr(real, name)

            def sendmsg(self, bufs):
                sent.append(1)
                return real.sendmsg(bufs)

        b.sock.sock = Spy()  # type: ignore[assignment]
        b.apply(ops)
        b.sock.sock = real
        assert len(sent) == -(-len(ops) // 61)
        t = b.dump()
        assert len(t) == 2001
        dests = list(t[big].dests.values())
        assert len(dests) == 2000 and {d.weight for d in dests} == set(range(2000))
        listing = sh("ipvsadm", "-Ln").splitlines()
        assert len(listing) == 3 + 2001 + 2000
        assert len(b.dests(big)) == 2000
    finally:
        b.flush()
        b.close()


def test_reply_truesize_fits_the_sizing_constant(netns):
    """What one ACK costs in our receive queue (skb truesize), read with SO_MEMINFO after the kernel
    answered N failing requests of one datagram: must stay below genl.REPLY_TRUESIZE."""
    s = genl.GenlSocket("IPVS")
    try:
        n = 200
        missing = genl.nla_nest(nl.IPVS_CMD_ATTR_SERVICE, nl.encode_service_id(ServiceKey.inet("tcp", "10.9.9.9", 1)))
        msgs = b"".join(
            genl.encode_msg(s.family_id, genl.NLM_F_REQUEST | genl.NLM_F_ACK, 1000 + i, nl.IPVS_CMD_DEL_SERVICE, 1, missing)
            for i in range(n)
        )
        s.sock.send(msgs)
        meminfo = struct.unpack("=9I", s.sock.getsockopt(socket.SOL_SOCKET, 55, 36))  # SO_MEMINFO
        per_reply = meminfo[0] / n  # SK_MEMINFO_RMEM_ALLOC
        print(f"\nreply truesize: {per_reply:.0f} bytes (rcvbuf {s.rcvbuf}, constant {genl.REPLY_TRUESIZE})")
        assert 0 < per_reply <= genl.REPLY_TRUESIZE
    finally:
        s.close()


def test_forced_overrun_is_survived_and_truthful(netns):
    """A receive buffer far too small for the chunk (limits computed for a huge one): replies are
    lost, and every op reported applied really is in the kernel; lost ones are ENOBUFS."""
    b = nl.NetlinkBackend(rcvbuf=4096)
    try:
        b.flush()
        b.sock.rcvbuf = 1 << 30
        b.sock.max_batch = 1000
        key = ServiceKey.inet("tcp", "10.6.0.1", 80)
        b.add_service(Service(key, "rr"))
        pre = [Destination(DestKey.of(f"10.7.0.{i + 1}", 80)) for i in range(0, 200, 2)]
        b.apply([Op.add_dest(key, d) for d in pre])
        # half the adds fail with EEXIST (the even ones exist already): many error replies
        ops = [Op.add_dest(key, Destination(DestKey.of(f"10.7.0.{i + 1}", 80))) for i in range(200)]
        with pytest.raises(BatchError) as ei:
            b.apply(ops)
        e = ei.value
        lost = [op for op, err in e.failed if err.errno == errno.ENOBUFS]
        assert lost, "a 4 KiB receive buffer should overflow"
        assert all(err.errno in (errno.EEXIST, errno.ENOBUFS) for _, err in e.failed)
        present = {d.key for d in b.dests(key)}
        for op in e.applied:
            assert op.dest.key in present
        for op, err in e.failed:
            if err.errno == errno.EEXIST:
                assert op.dest in pre
        assert b.sock.max_batch < 1000  # learned
        b.add_dest(key, Destination(DestKey.of("10.7.1.1", 80)))  # the socket is still in step
    finally:
        b.flush()
        b.close()


# --- daemons, timeouts, info, zero --------------------------------------------------------------


def test_daemons_timeouts_info_zero(be):
    info = be.info()
    assert info.version == 0x010201
    assert f"version {info.version_text} (size={info.conn_tab_size})" in sh("ipvsadm", "-Ln")

    old = be.timeouts()
    try:
        be.set_timeouts(Timeouts(1000, 130, 310))
        assert be.timeouts() == Timeouts(1000, 130, 310)
        assert "1000 130 310" in sh("ipvsadm", "-L", "--timeout")
        be.set_timeouts(Timeouts(0, 0, 99))  # 0 = unchanged
        assert be.timeouts() == Timeouts(1000, 130, 99)
    finally:
        be.set_timeouts(old)

    sh("ip", "link", "add", "lvnl0", "type", "veth", "peer", "name", "lvnl1")
    sh("ip", "link", "set", "lvnl0", "up")
    sh("ip", "link", "set", "lvnl1", "up")
    try:
        m = SyncDaemon(DaemonState.MASTER, "lvnl0", syncid=5, sync_maxlen=1400, mcast_group="239.1.2.3",
                       mcast_port=8849, mcast_ttl=2)  # fmt: skip
        be.start_daemon(m)
        be.start_daemon(SyncDaemon(DaemonState.BACKUP, "lvnl1", syncid=6))
        ds = {d.state: d for d in be.daemons()}
        assert ds[DaemonState.MASTER] == m
        bk = ds[DaemonState.BACKUP]
        assert (bk.mcast_ifn, bk.syncid, bk.mcast_group, bk.mcast_port, bk.mcast_ttl) == ("lvnl1", 6, "224.0.0.81", 8848, 1)
        out = sh("ipvsadm", "-L", "--daemon")
        assert "master sync daemon (mcast=lvnl0, syncid=5, maxlen=1400, group=239.1.2.3, port=8849, ttl=2)" in out
        assert "backup sync daemon (mcast=lvnl1, syncid=6" in out
        with pytest.raises(IPVSError) as ei:
            be.start_daemon(m)
        assert ei.value.errno == errno.EEXIST
        be.stop_daemon(DaemonState.MASTER)
        be.stop_daemon(DaemonState.BACKUP)
        assert be.daemons() == []
        with pytest.raises(IPVSError) as ei:
            be.stop_daemon(DaemonState.MASTER)
        assert ei.value.errno == errno.ESRCH  # ipvsadm: "No daemon is running"
        with pytest.raises(IPVSError) as ei:
            be.start_daemon(SyncDaemon(DaemonState.MASTER, "nosuchif0"))
        assert ei.value.errno == errno.ENODEV  # ipvsadm: "No such device"
    finally:
        sh("ip", "link", "del", "lvnl0", check=False)

    key = ServiceKey.inet("tcp", "10.8.0.1", 80)
    be.add_service(Service(key))
    be.zero(key)
    be.zero()
    with pytest.raises(IPVSError) as ei:
        be.zero(ServiceKey.inet("tcp", "10.8.0.2", 80))
    assert ei.value.errno == errno.ESRCH


# --- connections, stats, permission ------------------------------------------------------------


def test_connections_and_stats_from_real_traffic(be):
    """Local UDP datagrams to VIPs on lo create real entries (IPv4 and IPv6); the table read from
    /proc agrees with ipvsadm -Lnc, and the counters move (after the 2 s estimator tick)."""
    sh("ip", "addr", "add", "10.77.0.1/32", "dev", "lo")
    sh("ip", "-6", "addr", "add", "2001:db8:77::1/128", "dev", "lo")
    k4 = ServiceKey.inet("udp", "10.77.0.1", 5000)
    k6 = ServiceKey.inet("udp", "2001:db8:77::1", 5000)
    be.apply([
        Op.add_service(Service(k4, "rr")),
        Op.add_dest(k4, Destination(DestKey.of("127.0.0.1", 5001), Forward.MASQ)),
        Op.add_service(Service(k6, "rr")),
        Op.add_dest(k6, Destination(DestKey.of("::1", 5001), Forward.MASQ)),
    ])  # fmt: skip
    for fam, vip in ((socket.AF_INET, "10.77.0.1"), (socket.AF_INET6, "2001:db8:77::1")):
        with socket.socket(fam, socket.SOCK_DGRAM) as c:
            for _ in range(3):
                c.sendto(b"x" * 100, (vip, 5000))
    conns = be.connections()
    v = {(c.protocol, c.virtual_addr, c.virtual_port, c.dest_addr, c.dest_port) for c in conns}
    assert ("UDP", "10.77.0.1", 5000, "127.0.0.1", 5001) in v
    assert ("UDP", "2001:db8:77::1", 5000, "::1", 5001) in v
    lnc = sh("ipvsadm", "-Lnc")
    for c in conns:
        host = f"[{c.client_addr}]" if ":" in c.client_addr else c.client_addr
        assert f"{host}:{c.client_port}" in lnc
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        s4 = be.service(k4).stats
        if s4.inpkts >= 3 and s4.cps >= 0 and s4.inbytes >= 300:
            break
        time.sleep(0.5)
    s4 = be.service(k4).stats
    assert s4.conns >= 1 and s4.inpkts >= 3 and s4.inbytes >= 300
    d4 = be.dests(k4)[0]
    assert d4.stats.inpkts >= 3 and d4.inact_conns + d4.active_conns >= 1
    be.zero(k4)
    assert be.service(k4).stats.inpkts == 0


def test_permission_denied_is_one_clear_line(netns, as_nobody):
    # as_nobody (conftest.py) runs a copy of lvsd: uid 65534 may not read this checkout
    code = (
        "from lvsd.ipvs.netlink import NetlinkBackend\n"
        "from lvsd.ipvs.backend import BackendUnavailable\n"
        "try:\n    NetlinkBackend()\nexcept BackendUnavailable as e:\n    print(e)\n"
    )
    out = as_nobody(code)
    assert out.startswith("permission denied") and out.count("\n") == 1, out

