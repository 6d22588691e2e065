"""lvsadm -Ln's lean path (lvsadm_fastlist) against the general listing (lvsadm_list, which the
reference session and the VM differential test hold to ipvsadm's bytes), on random tables served
by a fake kernel that encodes its replies the way ip_vs_genl_fill_service()/fill_dest() do.

The fake also cuts each dest dump into datagrams in the ways the kernel may (one datagram per
skb, NLMSG_DONE alone or after the last reply), and can answer with an error, so every branch of
the receive loop and of the whole-table formatter (IPv6 servers, addresses 2^31 apart, counters
that need K/M/G units, --nosort) is exercised.
"""

from __future__ import annotations

import socket
import struct
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lvsd.cli import lvsadm_fastlist as F
from lvsd.cli import lvsadm_list as L
from lvsd.cli import lvsadm_parse as P
from lvsd.ipvs.model import Destination, DestKey, Service, ServiceKey, Stats

FAMILY, VERSION, PID = 0x1D, 1, 4242
NLMSG_ERROR, NLMSG_DONE, NLM_F_MULTI = 2, 3, 2


# --- netlink encoding, from the rules (independent of the code under test) ------------------------


def nla(atype: int, payload: bytes) -> bytes:
    return struct.pack("=HH", 4 + len(payload), atype) + payload + b"\0" * (-len(payload) & 3)


def u16(v: int) -> bytes:
    return struct.pack("=H", v)


def u32(v: int) -> bytes:
    return struct.pack("=I", v)


def be16(v: int) -> bytes:
    return struct.pack(">H", v)


def addr16(af: int, text: str) -> bytes:
    return socket.inet_pton(af, text).ljust(16, b"\0")


def stats_nests(s: Stats) -> tuple[bytes, bytes]:
    """IPVS_*_ATTR_STATS (u32s, bytes as u64) then STATS64 (every counter u64)."""
    vals = (s.conns, s.inpkts, s.outpkts, s.inbytes, s.outbytes, s.cps, s.inpps, s.outpps, s.inbps, s.outbps)
    old = b"".join(
        nla(t, struct.pack("=Q", v) if t in (4, 5) else u32(v & 0xFFFFFFFF)) for t, v in enumerate(vals, 1)
    )
    new = b"".join(nla(t, struct.pack("=Q", v)) for t, v in enumerate(vals, 1))
    return old, new


def service_reply(svc: Service) -> bytes:
    k = svc.key
    if k.fwmark:
        body = nla(1, u16(k.af)) + nla(5, u32(k.fwmark))
    else:
        body = (
            nla(1, u16(k.af)) + nla(2, u16(k.protocol)) + nla(3, addr16(k.af, k.addr)) + nla(4, be16(k.port))
        )
    body += nla(6, svc.scheduler.encode() + b"\0")
    if svc.pe_name:
        body += nla(11, svc.pe_name.encode() + b"\0")
    body += nla(7, struct.pack("=II", svc.flags, 0xFFFFFFFF))
    body += nla(8, u32(svc.timeout))
    body += nla(9, u32(svc.netmask) if k.af == socket.AF_INET6 else struct.pack(">I", svc.netmask))
    old, new = stats_nests(svc.stats)
    body += nla(10, old) + nla(12, new)
    return nla(1, body)


def dest_reply(d: Destination, seq: int) -> bytes:
    k = d.key
    old, new = stats_nests(d.stats)
    body = (
        nla(1, addr16(k.af, k.addr))
        + nla(2, be16(k.port))
        + nla(3, u32(d.forward))
        + nla(4, u32(d.weight))
        + nla(13, bytes([d.tun_type]))
        + nla(14, be16(d.tun_port))
        + nla(15, u16(d.tun_flags))
        + nla(5, u32(d.u_threshold))
        + nla(6, u32(d.l_threshold))
        + nla(7, u32(d.active_conns))
        + nla(8, u32(d.inact_conns))
        + nla(9, u32(d.persist_conns))
        + nla(11, u16(k.af))
        + nla(10, old)
        + nla(12, new)
    )
    payload = struct.pack("=BBH", 5, VERSION, 0) + nla(2, body)
    return struct.pack("=IHHII", 16 + len(payload), FAMILY, NLM_F_MULTI, seq, PID) + payload


def done(seq: int) -> bytes:
    return struct.pack("=IHHIIi", 20, NLMSG_DONE, NLM_F_MULTI, seq, PID, 0)


# --- the fake kernel -------------------------------------------------------------------------------


class FakeKernel:
    """Stands in for genl.GenlSocket: GET_INFO, the service dump, and a raw socket answering
    GET_DEST dumps in datagrams cut ``per`` replies at a time (DONE alone, or appended to the last
    datagram with ``done_inline``); ``fail`` answers every dest dump with ENOENT."""

    def __init__(self, table: list, per: int = 64, done_inline: bool = False, fail: bool = False) -> None:
        self.table = table
        self.by_payload = {service_reply(s): ds for s, ds in table}
        self.per, self.done_inline, self.fail = per, done_inline, fail
        self.family_id, self.version, self.seq = FAMILY, VERSION, 1000
        self._buf = bytearray(1 << 16)
        self._view = memoryview(self._buf)
        self.queue: list[bytes] = []
        self.sock = self

    def __call__(self, *_a: object, **_k: object) -> FakeKernel:  # genl.GenlSocket("IPVS", ...)
        return self

    def request(self, cmd: int) -> list[bytes]:
        assert cmd == F._CMD_GET_INFO
        return [nla(1, u32(0x010201)) + nla(2, u32(4096))]

    def dump(self, cmd: int) -> list[bytes]:
        assert cmd == F._CMD_GET_SERVICE
        return [service_reply(s) for s, _ in self.table]

    def send(self, data: bytes) -> int:
        ln, mtype, flags, seq, _pid, cmd = struct.unpack_from("=IHHIIB", data)
        assert (ln, mtype, cmd) == (len(data), FAMILY, F._CMD_GET_DEST)
        if self.fail:
            err = struct.pack("=IHHII", 36, NLMSG_ERROR, 0, seq, PID) + struct.pack("=i", -2) + data[:16]
            self.queue = [err]
            return len(data)
        msgs = [dest_reply(d, seq) for d in self.by_payload[bytes(data[20:])]]
        grams = [b"".join(msgs[i : i + self.per]) for i in range(0, len(msgs), self.per)]
        if self.done_inline and grams:
            grams[-1] += done(seq)
        else:
            grams.append(done(seq))
        self.queue = grams
        return len(data)

    def recv_into(self, buf: bytearray, nbytes: int = 0, flags: int = 0) -> int:
        g = self.queue.pop(0)
        buf[: len(g)] = g
        return len(g)

    def close(self) -> None:
        pass


class FakeBackend:
    """What lvsadm_list.list_all() reads: the same table, for the general path."""

    def __init__(self, table: list) -> None:
        self.table = table

    def info(self) -> SimpleNamespace:
        return SimpleNamespace(version=0x010201, conn_tab_size=4096)

    def dump(self) -> dict:
        return {s.key: SimpleNamespace(service=s, dests={d.key: d for d in ds}) for s, ds in self.table}


def both(table: list, fmt: int, **kw: object) -> tuple[list[str], list[str]]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(F.genl, "GenlSocket", FakeKernel(table, **kw))
        fast = "\n".join(F.list_table(fmt)).split("\n")
    general: list[str] = []
    L.list_all(FakeBackend(table), fmt, general)
    return fast, "\n".join(general).split("\n")


# --- tables ----------------------------------------------------------------------------------------

counter = st.one_of(
    st.integers(0, 99_999_999), st.integers(0, 2**64 - 1), st.sampled_from([10**8, 10**9, 10**14])
)
# idle servers (all zero) share one formatted tail; busy ones are formatted column by column
# (and a few busy ones repeated, with counters that need units, so that path sees them too)
POOL = [
    Stats(),
    Stats(7, 10**8, 3, 10**9 + 7, 123456789012345, 11, 10**8 + 1, 13, 99_999_999, 10**12),
    Stats(1, 2, 3, 4, 5, 6, 7, 8, 9, 10),
]
stats = st.one_of(st.sampled_from(POOL), st.builds(Stats, *([counter] * 10)))
v4 = st.one_of(
    st.sampled_from(["10.0.0.1", "10.0.0.2", "192.168.1.1", "127.0.0.1", "255.255.255.255", "0.0.0.0"]),
    st.ip_addresses(v=4).map(str),
)
v6 = st.one_of(st.sampled_from(["2001:db8::1", "fe80::1", "::1"]), st.ip_addresses(v=6).map(str))


@st.composite
def dests(draw: st.DrawFn, six_share: float) -> list[Destination]:
    n = draw(st.integers(0, 12))
    out, seen = [], set()
    for _ in range(n):
        six = draw(st.floats(0, 1)) < six_share
        key = DestKey(
            socket.AF_INET6 if six else socket.AF_INET, draw(v6 if six else v4), draw(st.integers(0, 65535))
        )
        if key in seen:
            continue
        seen.add(key)
        out.append(
            Destination(
                key,
                forward=draw(st.integers(0, 4)),
                weight=draw(st.one_of(st.integers(0, 3), st.integers(0, 0x7FFFFFFF))),
                active_conns=draw(st.one_of(st.just(0), st.integers(0, 0xFFFFFFFF))),
                inact_conns=draw(st.one_of(st.just(0), st.integers(0, 0xFFFFFFFF))),
                stats=draw(stats),
            )
        )
    return out


@st.composite
def tables(draw: st.DrawFn) -> list:
    six_share = draw(st.sampled_from([0.0, 0.0, 0.2]))
    out, seen = [], set()
    for _ in range(draw(st.integers(0, 6))):
        af = socket.AF_INET6 if draw(st.integers(0, 4)) == 0 else socket.AF_INET
        if draw(st.booleans()):
            addr = draw(v6 if af == socket.AF_INET6 else v4)
            key = ServiceKey(af, draw(st.sampled_from([6, 17, 132])), addr, draw(st.integers(0, 65535)))
        else:
            key = ServiceKey(af, 0, "", 0, draw(st.integers(1, 0xFFFFFFFF)))
        if key in seen:
            continue
        seen.add(key)
        flags = draw(st.sampled_from([0, 0, 1, 4, 5, 8, 0x18, 0x21]))
        if af == socket.AF_INET6:
            netmask = draw(st.sampled_from([128, 64, 1]))
        else:
            netmask = draw(st.sampled_from([0xFFFFFFFF, 0xFFFFFF00, 0x80000000]))
        svc = Service(
            key,
            scheduler=draw(st.sampled_from(["wlc", "rr", "lblcr", "mh", "sh", "x" * 15])),
            flags=flags,
            timeout=draw(st.sampled_from([0, 300, 0xFFFFFFFF])) if flags & 1 else 0,
            netmask=netmask,
            pe_name=draw(st.sampled_from(["", "", "sip"])),
            stats=draw(stats),
        )
        out.append((svc, draw(dests(six_share))))
    return out


FORMATS = [
    P.FMT_NUMERIC | extra for extra in (0, P.FMT_STATS, P.FMT_RATE, P.FMT_EXACT, P.FMT_STATS | P.FMT_EXACT)
]
FORMATS += [f | P.FMT_NOSORT for f in FORMATS]


@settings(max_examples=250, deadline=None)
@given(
    table=tables(), fmt=st.sampled_from(FORMATS), per=st.sampled_from([1, 3, 64]), done_inline=st.booleans()
)
def test_fast_listing_equals_the_general_one(table: list, fmt: int, per: int, done_inline: bool) -> None:
    fast, general = both(table, fmt, per=per, done_inline=done_inline)
    assert fast == general


def test_a_bench_sized_table() -> None:
    """100 services x 10 servers, all IPv4 and idle: the common case, through the column path."""
    table = []
    for i in range(100):
        svc = Service(ServiceKey.inet(6, f"10.100.{i}.1", 80), scheduler="wrr")
        ds = [
            Destination(DestKey(socket.AF_INET, f"10.200.{i}.{j + 2}", 8080), forward=0, weight=j + 1)
            for j in range(10)
        ]
        table.append((svc, ds[::-1]))  # the kernel lists servers newest first
    for fmt in FORMATS:
        fast, general = both(table, fmt)
        assert fast == general
        assert len(fast) == 3 + 100 * 11  # header, two title lines, the services and servers


def test_wrapping_order_and_ipv6_go_row_by_row(monkeypatch: pytest.MonkeyPatch) -> None:
    """A service whose servers are 2^31 apart, and one with an IPv6 server, beside a plain one:
    only those two leave the column path, and all three print as the general path does."""

    def mk(a: str, p: int = 80) -> Destination:
        return Destination(DestKey(socket.AF_INET6 if ":" in a else socket.AF_INET, a, p), forward=0)

    table = [
        (Service(ServiceKey.inet(6, "10.0.0.1", 80)), [mk("1.0.0.1"), mk("200.0.0.1"), mk("100.0.0.1")]),
        (Service(ServiceKey.inet(6, "10.0.0.2", 80)), [mk("10.0.0.9"), mk("2001:db8::1")]),
        (Service(ServiceKey.inet(6, "10.0.0.3", 80)), [mk("10.1.0.9"), mk("10.1.0.8", 81), mk("10.1.0.8")]),
    ]
    calls = []
    real = F._row_lines
    F_row = lambda blk, fmt: calls.append(len(blk) // F._DEST_MSG_LEN) or real(blk, fmt)  # noqa: E731
    monkeypatch.setattr(F, "_row_lines", F_row)
    fast, general = both(table, P.FMT_NUMERIC)
    assert fast == general
    assert sorted(calls) == [2, 3]


def test_a_kernel_error_in_a_dest_dump_is_unsupported(monkeypatch: pytest.MonkeyPatch) -> None:
    """The lean path never prints a half listing: any error sends lvsadm to the general path."""
    table = [(Service(ServiceKey.inet(6, "10.0.0.1", 80)), [])]
    monkeypatch.setattr(F.genl, "GenlSocket", FakeKernel(table, fail=True))
    with pytest.raises(F.Unsupported):
        F.list_table(P.FMT_NUMERIC)


def test_an_unexpected_dest_layout_is_unsupported(monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernel whose replies carry other attributes (here: a padding attribute) is not decoded
    by position."""
    table = [
        (Service(ServiceKey.inet(6, "10.0.0.1", 80)), [Destination(DestKey(socket.AF_INET, "10.0.0.2", 80))])
    ]
    fake = FakeKernel(table)
    real_send = fake.send

    def send(data: bytes) -> int:
        n = real_send(data)
        g = bytearray(fake.queue[0])
        struct.pack_into("=HH", g, 28 + 20 - 4, 20, 16)  # the ADDR attribute retyped
        fake.queue[0] = bytes(g)
        return n

    fake.send = send  # type: ignore[method-assign]
    monkeypatch.setattr(F.genl, "GenlSocket", fake)
    monkeypatch.setattr(F, "_layout_checked", False)
    with pytest.raises(F.Unsupported):
        F.list_table(P.FMT_NUMERIC)


def test_the_installed_script_runs_lvsadm(tmp_path: object) -> None:
    """lvsd/cli/scripts/lvsadm (installed as `lvsadm`; a plain script so that start-up does not
    pay for pip's wrapper importing `re`) runs lvsadm's main and passes its exit status on."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(F.__file__).parent / "scripts" / "lvsadm"
    env = dict(os.environ, LVSADM_BACKEND="memory", LVSADM_STATE=str(Path(str(tmp_path)) / "s.json"))
    ok = subprocess.run([sys.executable, str(script), "-Ln"], capture_output=True, text=True, env=env)
    assert ok.returncode == 0 and ok.stdout.startswith("IP Virtual Server version"), ok
    bad = subprocess.run([sys.executable, str(script), "-Q"], capture_output=True, text=True, env=env)
    assert bad.returncode == 255 and "lvsadm -h" in bad.stderr, bad  # as ipvsadm: exit(-1)


def test_servers_with_equal_counters_share_one_formatted_tail() -> None:
    """Many servers, three sets of counters (zero, busy with K/M/G-sized values, small): the
    --stats/--rate lines come from one formatted tail per set, as the general path prints them."""
    table = []
    for i in range(4):
        svc = Service(ServiceKey.inet(6, f"10.100.{i}.1", 80))
        ds = [
            Destination(DestKey(socket.AF_INET, f"10.200.{i}.{j + 2}", 8080), forward=0, stats=POOL[j % 3])
            for j in range(12)
        ]
        table.append((svc, ds))
    for fmt in FORMATS:
        fast, general = both(table, fmt)
        assert fast == general
