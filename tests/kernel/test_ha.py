"""HA pairs on the real kernel: VRRP election, connection sync, failover with surviving
connections, interop with keepalived, external role. Runs inside the VM (tests/kernel/vm.sh).

Topology (one bridge in namespace hasw): two directors had1/had2, a client hacl and two real
servers hars1/hars2. Clients are in 10.1.0.0/24 with the VIP 10.1.0.100; real servers in
10.2.0.0/24 route through the floating gateway 10.2.0.1, a second virtual address, so NAT replies
follow the master. Each director has its own IPVS table (tcp 10.1.0.100:80 rr -> both, NAT).

The HA pieces run in this process: one HAManager per director with a NetlinkBackend opened in
that director's namespace; the real servers' echo servers and the client sockets live here too.
Failover = the master's link is cut on the bridge (director death), not a daemon kill.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from lvsd.config.load import parse_config
from lvsd.daemon.ha import HAManager
from lvsd.daemon.vrrp import in_netns

REQUIRED = bool(os.environ.get("LVSD_KERNEL_REQUIRED"))  # in CI: fail instead of skipping
pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(
        not REQUIRED and (os.geteuid() != 0 or not os.path.exists("/proc/net/ip_vs")),
        reason="needs root and kernel IPVS (VM)",
    ),
]

VIP = "10.1.0.100"
GW = "10.2.0.1"
DIRECTORS = {"had1": ("10.1.0.11", "10.2.0.2"), "had2": ("10.1.0.12", "10.2.0.3")}
REALS = {"hars1": "10.2.0.11", "hars2": "10.2.0.12"}
NAMESPACES = ["hasw", "had1", "had2", "hacl", "hars1", "hars2"]
#: where the measured failover figures are written as JSON, if set (docs/ha.md quotes them)
RESULTS = os.environ.get("LVSD_HA_RESULTS", "")

SETUP = r"""
set -e
for n in hasw had1 had2 hacl hars1 hars2; do ip netns add $n; ip -n $n link set lo up; done
ip -n hasw link add br0 type bridge mcast_snooping 0
ip -n hasw link set br0 up
for n in had1 had2 hacl hars1 hars2; do
  ip link add v$n type veth peer name eth0 netns $n
  ip link set v$n netns hasw
  ip -n hasw link set v$n master br0 up
  ip -n $n link set eth0 up
done
ip -n had1 addr add 10.1.0.11/24 dev eth0; ip -n had1 addr add 10.2.0.2/24 dev eth0
ip -n had2 addr add 10.1.0.12/24 dev eth0; ip -n had2 addr add 10.2.0.3/24 dev eth0
ip -n hacl addr add 10.1.0.2/24 dev eth0
ip -n hars1 addr add 10.2.0.11/24 dev eth0; ip -n hars1 route add default via 10.2.0.1
ip -n hars2 addr add 10.2.0.12/24 dev eth0; ip -n hars2 route add default via 10.2.0.1
for n in had1 had2; do
  ip netns exec $n sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.send_redirects=0 \
      net.ipv4.conf.default.send_redirects=0 net.ipv4.conf.eth0.send_redirects=0
  ip netns exec $n ipvsadm -A -t 10.1.0.100:80 -s rr
  ip netns exec $n ipvsadm -a -t 10.1.0.100:80 -r 10.2.0.11:80 -m
  ip netns exec $n ipvsadm -a -t 10.1.0.100:80 -r 10.2.0.12:80 -m
done
for n in hars1 hars2 hacl; do
  ip netns exec $n sysctl -qw net.ipv4.conf.all.accept_redirects=0 net.ipv4.conf.eth0.accept_redirects=0
done
"""

CONF = """
[daemon]
on_stop = "{on_stop}"
hook_timeout = "5s"

[[service]]
name = "web"
vip = "10.1.0.100:80"
forward = "nat"
scheduler = "rr"

  [[service.server]]
  address = "10.2.0.11"

  [[service.server]]
  address = "10.2.0.12"

[ha]
mode = "vrrp"
interface = "eth0"
vrid = 51
priority = {priority}
advert_interval = "{advert}"
vips = ["10.1.0.100/24", "10.2.0.1/24"]
preempt = true

[sync]
interface = "eth0"
syncid = 51
"""

EXTERNAL_CONF = """
[ha]
mode = "external"
role = "backup"

[sync]
interface = "eth0"
syncid = 7
on_fault = "none"
"""


def sh(*args: str, check: bool = True) -> str:
    r = subprocess.run(args, capture_output=True, text=True, timeout=60)
    if check and r.returncode:
        raise AssertionError(f"{' '.join(args)}: exit {r.returncode}: {r.stderr.strip()}")
    return r.stdout


@pytest.fixture(scope="module")
def topology():  # type: ignore[no-untyped-def]
    for n in NAMESPACES:
        subprocess.run(["ip", "netns", "del", n], capture_output=True)
    sh("bash", "-c", SETUP)
    yield
    for n in NAMESPACES:
        subprocess.run(["ip", "netns", "del", n], capture_output=True)


# --- in-process probes ------------------------------------------------------------------------------


def addrs_of(ns: str, ifname: str, family: str = "inet") -> set[str]:
    """Addresses of ``family`` (inet, inet6) on IFNAME in namespace ``ns``, as ``ip -j`` lists them."""
    out = sh("ip", "-n", ns, "-j", "-f", family, "addr", "show", "dev", ifname)
    return {a["local"] for link in json.loads(out or "[]") for a in link.get("addr_info", [])}


def addresses(ns: str) -> set[str]:
    """IPv4 addresses on eth0 of a namespace."""
    return addrs_of(ns, "eth0")


def set_link(ns: str, ifname: str, up: bool) -> None:
    """ip link set IFNAME up/down inside ``ns``."""
    sh("ip", "-n", ns, "link", "set", ifname, "up" if up else "down")


def conn_client_ports(ns: str) -> dict[int, str]:
    """Client port -> state of the TCP connections to the VIP in a director's IPVS table."""
    with in_netns(ns):
        with open("/proc/thread-self/net/ip_vs_conn") as f:
            lines = f.read().splitlines()[1:]
    out = {}
    for line in lines:
        fs = line.split()
        if len(fs) >= 9 and fs[0] == "TCP" and fs[3] == "0A010064":
            out[int(fs[2], 16)] = fs[7]
    return out


async def wait_for(cond: Callable[[], bool], timeout: float, what: str, step: float = 0.02) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(step)


# --- real servers and clients --------------------------------------------------------------------------


async def start_echo_servers() -> list[asyncio.AbstractServer]:
    servers = []
    for ns, addr in REALS.items():
        name = ns[2:].encode()

        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter, name: bytes = name) -> None:
            try:
                while line := await r.readline():
                    w.write(name + b" " + line)
                    await w.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                w.close()

        with in_netns(ns):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((addr, 80))
            s.listen(64)
            s.setblocking(False)
        servers.append(await asyncio.start_server(handle, sock=s))
    return servers


async def connect(timeout: float = 5.0) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int]:
    with in_netns("hacl"):
        s = socket.socket()
        s.setblocking(False)
    await asyncio.wait_for(asyncio.get_running_loop().sock_connect(s, (VIP, 80)), timeout)
    r, w = await asyncio.open_connection(sock=s)
    return r, w, s.getsockname()[1]


async def request(text: str = "hello", timeout: float = 5.0) -> str:
    r, w, _ = await connect(timeout)
    try:
        w.write(text.encode() + b"\n")
        return (await asyncio.wait_for(r.readline(), timeout)).decode().strip()
    finally:
        w.close()


# --- directors ----------------------------------------------------------------------------------------


class Director:
    """One director: its HAManager over a NetlinkBackend opened in its namespace."""

    def __init__(self, ns: str, conf: str) -> None:
        from lvsd.ipvs.netlink import NetlinkBackend

        self.ns = ns
        self.roles: list[tuple[float, str]] = []
        with in_netns(ns):
            self.backend = NetlinkBackend()
        self.config = parse_config(conf, f"<{ns}>")
        self.ha = HAManager(self.config, self.backend, self._on_role, netns=ns)

    def _on_role(self, role: str) -> None:
        self.roles.append((asyncio.get_running_loop().time(), role))

    @property
    def role(self) -> str:
        return self.ha.role

    async def stop(self, on_stop: str = "remove") -> None:
        await self.ha.stop(on_stop)
        self.backend.close()


def vrrp_conf(priority: int, advert: str, on_stop: str = "remove") -> str:
    return CONF.format(priority=priority, advert=advert, on_stop=on_stop)


async def elect(advert: str) -> tuple[Director, Director]:
    d1 = Director("had1", vrrp_conf(150, advert))
    d2 = Director("had2", vrrp_conf(100, advert))
    await d1.ha.start()
    await d2.ha.start()
    mdi = d1.ha.vrrp.params.master_down_interval(d1.ha.vrrp.params.advert_int)  # type: ignore[union-attr]
    await wait_for(lambda: d1.role == "master" and d2.role == "backup", mdi + 5, "had1 master, had2 backup")
    return d1, d2


def record(key: str, value: object) -> None:
    if not RESULTS:
        return
    path = Path(RESULTS)
    data = json.loads(path.read_text()) if path.exists() else {}
    data[key] = value
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


# --- 1, 2, 3: election, sync, failover -------------------------------------------------------------------


class Disturbed(Exception):
    """A run the host's load broke before the cut: the VM stalled longer than the master-down
    interval and the backup took over on its own (at 100 ms adverts: 0.33 s), after which a
    connection may be reset. Not what the test measures, so the run is repeated."""


def disturbed(seen: dict) -> str:
    """Why a run was disturbed before the cut ("" if it was not): a role change of either director."""
    d1, d2 = seen.get("d1"), seen.get("d2")
    if d1 is None or d2 is None:
        return ""
    t_cut = seen.get("t_cut", float("inf"))
    early2 = [r for t, r in d2.roles if t < t_cut and r != "backup"]
    early1 = [r for t, r in d1.roles if t < t_cut and r != "master" and t > seen["t_elected"]]
    if early2 or early1:
        return f"roles changed before the cut (had1 {early1}, had2 {early2}): the VM stalled past master-down"
    return ""


async def failover(advert: str) -> dict:
    """One failover run; a run the host's load disturbed before the cut raises Disturbed."""
    seen: dict = {}
    try:
        return await _failover(advert, seen)
    except (ConnectionError, AssertionError) as e:
        why = disturbed(seen)
        if why:
            raise Disturbed(f"{why}; then {e!r}") from e
        raise


def undisturbed_runs(advert: str, n: int, spare: int = 3) -> tuple[list[dict], list[str]]:
    """``n`` runs the load did not disturb before the cut (at most ``spare`` more attempts)."""
    runs: list[dict] = []
    skipped: list[str] = []
    while len(runs) < n:
        try:
            runs.append(asyncio.run(asyncio.wait_for(failover(advert), 120)))
        except Disturbed as e:
            skipped.append(str(e))
            print(f"\nHA failover at advert {advert}: run disturbed by load, repeated: {e}")
            if len(skipped) > spare:
                raise
    return runs, skipped


STALL_PROBE = """
import time
last = time.monotonic()
while True:
    time.sleep(0.01)
    now = time.monotonic()
    if now - last > 0.03:
        print(last, now, flush=True)
    last = now
"""


async def start_stall_probe() -> asyncio.subprocess.Process:
    """A process of its own that wakes every 10 ms and prints each wake-up later than 30 ms: the
    times the VM (or its host) did not run us. In a separate process, so lvsd's own work on this
    event loop is not counted as a stall."""
    import sys

    return await asyncio.create_subprocess_exec(sys.executable, "-c", STALL_PROBE, stdout=subprocess.PIPE)


async def stalls_of(probe: asyncio.subprocess.Process) -> list[tuple[float, float]]:
    probe.kill()
    out, _ = await probe.communicate()
    return [(float(a) + 0.01, float(b)) for a, b in (line.split() for line in out.decode().splitlines())]


def client_rto(w: asyncio.StreamWriter) -> float:
    """The client socket's current retransmission timeout (TCP_INFO tcpi_rto, microseconds at
    offset 8): under a loaded host the RTT varies and the kernel raises it, which sets the gap."""
    info = w.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    return struct.unpack_from("=I", info, 8)[0] / 1e6


def stalled(stalls: list[tuple[float, float]], a: float, b: float) -> float:
    """Seconds of ``[a, b]`` during which the VM stood still (per the stall probe)."""
    return sum(max(0.0, min(e, b) - max(s, a)) for s, e in stalls)


async def _failover(advert: str, seen: dict) -> dict:
    loop = asyncio.get_running_loop()
    servers = await start_echo_servers()
    d1, d2 = await elect(advert)
    seen.update(d1=d1, d2=d2, t_elected=loop.time())
    pinger = reader = None
    probe: asyncio.subprocess.Process | None = None
    try:
        # (1) one master; the virtual addresses on it only; requests reach both real servers
        assert {VIP, GW} <= addresses("had1")
        assert not {VIP, GW} & addresses("had2")
        answers = {(await request(f"r{i}")).split()[0] for i in range(4)}
        assert answers == {"rs1", "rs2"}, answers
        st1, st2 = d1.ha.status(), d2.ha.status()
        assert [d["state"] for d in st1["sync"]["running"]] == ["master"]
        assert [d["state"] for d in st2["sync"]["running"]] == ["backup"]
        assert st1["sysctls"]["sync_threshold"] == "3 0" and st1["sysctls"]["sync_refresh_period"] == "10"
        assert st2["vrrp"]["counters"].get("received", 0) >= 1
        assert not {"malformed", "dropped_ttl", "dropped"} & set(st2["vrrp"]["counters"])

        # (3) a long-lived connection that talks every 50 ms, and one that only did the handshake
        lr, lw, lport = await connect()
        hr, hw, hport = await connect()
        replies: list[float] = []
        sent = 0

        async def ping() -> None:
            nonlocal sent
            while True:
                lw.write(b"ping %d\n" % sent)
                sent += 1
                await asyncio.sleep(0.05)

        async def read() -> None:
            while line := await lr.readline():
                replies.append(loop.time())
                assert line.startswith(b"rs")

        pinger, reader = asyncio.create_task(ping()), asyncio.create_task(read())
        probe = await start_stall_probe()
        # (2) the master's connections reach the backup's table through the sync daemon
        await wait_for(
            lambda: {lport, hport} <= set(conn_client_ports("had2")),
            30,
            "both connections synced to had2",
            0.2,
        )
        synced = conn_client_ports("had2")
        await wait_for(lambda: len(replies) > 10, 10, "echo replies before the cut")

        # cut the master's link on the bridge: director death
        rto = client_rto(lw)
        t_cut = loop.time()
        seen["t_cut"] = t_cut
        why = disturbed(seen)
        if why:
            raise Disturbed(why)
        last_rx = d2.ha.vrrp.last_advert_at  # type: ignore[union-attr]
        set_link("hasw", "vhad1", False)
        t_cut = (t_cut + loop.time()) / 2
        await wait_for(lambda: d1.role == "fault", 5, "had1 in fault (its link is down)")
        d1_switch = d1.ha.sync_switch_seconds
        await wait_for(lambda: d2.role == "master", 15, "had2 to take over")
        t_master = next(t for t, r in d2.roles if r == "master")  # sync daemons switched too
        t_vip = d2.ha.vrrp.became_master_at  # type: ignore[union-attr]  # VIPs added, GARP sent
        assert t_vip is not None and t_vip <= t_master
        takeover = t_vip - t_cut
        assert {VIP, GW} <= addresses("had2")
        assert not {VIP, GW} & addresses("had1")

        # bytes after the failover get answers, on both connections
        hw.write(b"after failover\n")
        h_answer = (await asyncio.wait_for(hr.readline(), 10)).decode().strip()
        assert h_answer.endswith("after failover"), h_answer
        await wait_for(lambda: any(t > t_master for t in replies), 10, "the long-lived connection to resume")
        before = max(t for t in replies if t <= t_cut)
        after = min(t for t in replies if t > t_cut)
        gap = after - before
        n_before = len(replies)
        await wait_for(lambda: len(replies) >= n_before + 10, 10, "steady replies after failover")
        # had2 runs the master sync daemon now
        assert [d["state"] for d in d2.ha.status()["sync"]["running"]] == ["master"]
        new_conn = (await request("new")).split()[0]
        assert new_conn in ("rs1", "rs2")

        p = d2.ha.vrrp.params  # type: ignore[union-attr]
        bound = p.master_down_interval(p.advert_int)
        last_rx = max(last_rx or 0, d2.ha.vrrp.last_advert_at or 0)  # type: ignore[union-attr]
        stalls = await stalls_of(probe)
        result = {
            "advert_interval": advert,
            "master_down_interval": round(bound, 3),
            "takeover_s": round(takeover, 3),
            "role_switched_s": round(t_master - t_cut, 3),
            "last_advert_before_cut_s": round(t_cut - last_rx, 3),
            "overhead_after_master_down_s": round(t_vip - (last_rx + bound), 3),
            "fault_side_sync_switch_s": round(d1_switch, 3),
            "master_side_sync_switch_s": round(d2.ha.sync_switch_seconds, 3),
            "gap_s": round(gap, 3),
            # time the VM stood still (host load) while the master-down timer ran, and during the gap
            "vm_stalled_in_takeover_s": round(stalled(stalls, min(last_rx, t_cut), t_vip), 3),
            "vm_stalled_in_gap_s": round(stalled(stalls, before, after), 3),
            "client_rto_before_cut_s": round(rto, 3),
            "handshake_only_survived": True,
            "long_lived_survived": True,
            "synced_states_before_cut": {str(k): v for k, v in synced.items() if k in (lport, hport)},
        }
        print(f"\nHA failover at advert {advert}: {result}")
        return result
    finally:
        for t in (pinger, reader):
            if t:
                t.cancel()
        if probe is not None and probe.returncode is None:
            probe.kill()
            await probe.wait()
        set_link("hasw", "vhad1", True)
        await d1.stop()
        await d2.stop()
        for s in servers:
            s.close()


def test_vrrp_election_sync_and_failover_1s(topology) -> None:  # type: ignore[no-untyped-def]
    runs = [asyncio.run(asyncio.wait_for(failover("1s"), 120)) for _ in range(2)]
    record("failover_1s", runs)
    for r in runs:
        # within 3 x advert + skew (3.61 s for priority 100; keepalived here: 3.0-3.4 s), plus
        # scheduling slack under emulation, for the time the VM ran (see the 100 ms test)
        took = r["takeover_s"] - r["vm_stalled_in_takeover_s"]
        assert took <= r["master_down_interval"] + 0.25, r
        # the connection resumes with the client's first TCP retransmission after the takeover; by
        # then its backoff is at most 3.2 s at the minimum rto (keepalived here: 3.5 s, or 7 s when
        # the backoff missed), at most 2 x takeover + rto in general (a loaded host raises the rto)
        tcp_bound = max(took + 3.2 + 0.5, 2 * took + r["client_rto_before_cut_s"] + 0.3)
        assert r["gap_s"] - r["vm_stalled_in_gap_s"] <= tcp_bound, r


def test_vrrp_failover_100ms(topology) -> None:  # type: ignore[no-untyped-def]
    # a run whose backup took over before the cut (the VM stalled past the 0.33 s master-down
    # interval under a loaded host, and a connection was reset) measures the host, not lvsd: it
    # is repeated, counted, and the bounds below hold for the undisturbed runs
    runs, skipped = undisturbed_runs("100ms", 3)
    record("failover_100ms", runs)
    record("failover_100ms_disturbed_runs", len(skipped))
    # target: take over within 500 ms, resume within 1.5 s. Under emulation on a shared host the
    # whole VM stalls at times (0.15 s seen on a quiet host, 0.4-0.7 s with other VMs running),
    # which no code of lvsd's can shorten: a probe process measures those stalls, and the bounds
    # hold for the time the VM ran. The median run must meet the target, every run the protocol
    # bound + 0.25 s. The connection resumes at the client's first retransmission after the
    # takeover: with retransmissions at rto, 3 rto, 7 rto... (the backoff doubles) that is at
    # most 2 x takeover + rto after the loss, and a loaded host raises the rto (its RTT varies):
    # so the gap is held to 1.5 s or that TCP bound, whichever is larger.
    takeovers = sorted(r["takeover_s"] - r["vm_stalled_in_takeover_s"] for r in runs)
    assert takeovers[1] <= 0.5, runs
    for r in runs:
        took = r["takeover_s"] - r["vm_stalled_in_takeover_s"]
        assert took <= r["master_down_interval"] + 0.25, r
        tcp_bound = 2 * took + r["client_rto_before_cut_s"] + 0.3
        assert r["gap_s"] - r["vm_stalled_in_gap_s"] <= max(1.5, tcp_bound), r


# --- IPv6: election, takeover, unsolicited neighbour advertisements ------------------------------------

VIP6 = "2001:db8:1::100"

CONF6 = """
[ha]
mode = "vrrp"
interface = "eth0"
vrid = 61
priority = {priority}
advert_interval = "100ms"
vips = ["2001:db8:1::100/64"]
"""


def addresses6(ns: str) -> set[str]:
    return addrs_of(ns, "eth0", "inet6")


async def ping6(timeout: float) -> bool:
    """Reach the VIP from the client: a TCP connect to a closed port is refused by whoever holds
    it (no ping in the VM); a timeout means the packets go nowhere."""
    with in_netns("hacl"):
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.setblocking(False)
    try:
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(s, (VIP6, 9)), timeout)
    except ConnectionRefusedError:
        return True
    except (asyncio.TimeoutError, OSError):
        return False
    finally:
        s.close()
    return True


async def ipv6_failover() -> dict:
    loop = asyncio.get_running_loop()
    sh("ip", "-n", "hacl", "addr", "add", "2001:db8:1::2/64", "dev", "eth0", "nodad")
    d1 = Director("had1", CONF6.format(priority=150))
    d2 = Director("had2", CONF6.format(priority=100))
    try:
        await d1.ha.start()
        await d2.ha.start()
        await wait_for(lambda: d1.role == "master" and d2.role == "backup", 10, "IPv6 election")
        assert VIP6 in addresses6("had1") and VIP6 not in addresses6("had2")
        assert d1.ha.vrrp.params.primary.startswith("fe80:")  # type: ignore[union-attr]
        await wait_for(lambda: d2.ha.status()["vrrp"]["counters"].get("received", 0) >= 5, 5, "IPv6 adverts")
        c = d2.ha.status()["vrrp"]["counters"]
        assert d2.role == "backup" and not {"malformed", "dropped_ttl", "dropped", "dropped_interface"} & set(
            c
        ), c
        assert await ping6(5)  # the client now caches had1's MAC for the VIP
        t_cut = loop.time()
        set_link("hasw", "vhad1", False)
        await wait_for(lambda: d2.role == "master", 10, "had2 to take over (IPv6)")
        takeover = next(t for t, r in d2.roles if r == "master") - t_cut
        assert VIP6 in addresses6("had2")
        # without the unsolicited NA the client would keep had1's MAC for tens of seconds
        t0 = loop.time()
        assert await ping6(5)
        return {"takeover_s": round(takeover, 3), "first_ping_after_s": round(loop.time() - t0, 3)}
    finally:
        set_link("hasw", "vhad1", True)
        await d1.stop()
        await d2.stop()
        subprocess.run(
            ["ip", "-n", "hacl", "addr", "del", "2001:db8:1::2/64", "dev", "eth0"], capture_output=True
        )


def test_vrrp_ipv6(topology) -> None:  # type: ignore[no-untyped-def]
    r = asyncio.run(asyncio.wait_for(ipv6_failover(), 90))
    record("ipv6_100ms", r)
    assert r["takeover_s"] <= 0.5 and r["first_ping_after_s"] < 1.0, r


# --- a virtual address goes on the interface that holds its subnet ------------------------------------

PLACE_CONF = """
[ha]
mode = "vrrp"
interface = "a0"
vrid = 71
priority = 200
advert_interval = "100ms"
vips = ["10.1.0.100/24", "10.2.0.1/24"]
"""


async def placement() -> dict:
    d = Director("havp", PLACE_CONF)
    try:
        await d.ha.start()
        await wait_for(lambda: d.role == "master", 5, "a lone router to become master")
        front, back = addrs_of("havp", "a0"), addrs_of("havp", "a1")
        assert "10.1.0.100" in front and "10.1.0.100" not in back
        assert "10.2.0.1" in back and "10.2.0.1" not in front
        st = d.ha.status()["vrrp"]
        assert st["vip_interfaces"] == {"10.1.0.100": "a0", "10.2.0.1": "a1"}
        # reload: another address list is applied in place by the sitting master
        await d.ha.reload(parse_config(PLACE_CONF.replace('"10.2.0.1/24"', '"10.1.0.101/24"')))
        assert d.role == "master"
        assert {"10.1.0.100", "10.1.0.101"} <= addrs_of("havp", "a0")
        assert "10.2.0.1" not in addrs_of("havp", "a1")
        # the address adverts come from vanishes: fault (addresses released); it comes back: master
        sh("ip", "-n", "havp", "addr", "del", "10.1.0.5/24", "dev", "a0")
        await wait_for(lambda: d.role == "fault", 5, "fault without a source address")
        assert not {"10.1.0.100", "10.1.0.101"} & addrs_of("havp", "a0")
        sh("ip", "-n", "havp", "addr", "add", "10.1.0.5/24", "dev", "a0")
        await wait_for(lambda: d.role == "master", 5, "master again once the address is back")
        # reload with another VRID: a new instance (the old one resigns first)
        await d.ha.reload(parse_config(PLACE_CONF.replace("vrid = 71", "vrid = 72")))
        assert d.ha.vrrp.params.vrid == 72  # type: ignore[union-attr]
        await wait_for(lambda: d.role == "master", 5, "master on the new VRID")
        assert [r for _, r in d.roles] == [
            "backup",
            "master",
            "fault",
            "backup",
            "master",
            "backup",
            "master",
        ]
        return st
    finally:
        await d.stop()
        assert not {"10.1.0.100", "10.2.0.1"} & (addrs_of("havp", "a0") | addrs_of("havp", "a1"))


def test_vip_goes_where_its_subnet_is() -> None:
    subprocess.run(["ip", "netns", "del", "havp"], capture_output=True)
    sh(
        "bash", "-c",
        "set -e; ip netns add havp; ip -n havp link add a0 type veth peer name a1;"
        "ip -n havp addr add 10.1.0.5/24 dev a0; ip -n havp addr add 10.2.0.5/24 dev a1;"
        "ip -n havp link set a0 up; ip -n havp link set a1 up",
    )  # fmt: skip
    try:
        asyncio.run(asyncio.wait_for(placement(), 60))
    finally:
        subprocess.run(["ip", "netns", "del", "havp"], capture_output=True)


# --- 4: against keepalived ------------------------------------------------------------------------------

KEEPALIVED_CONF = """global_defs {{
    router_id ka-had1
    vrrp_version {version}
}}
vrrp_instance VI_1 {{
    state BACKUP
    interface eth0
    virtual_router_id 51
    priority {priority}
    advert_int 1
    virtual_ipaddress {{
        10.1.0.100/24
        10.2.0.1/24
    }}
}}
"""


async def start_keepalived(
    priority: int, tag: str, version: int = 3
) -> tuple[asyncio.subprocess.Process, Path]:
    conf = Path(f"/tmp/ka-{tag}.conf")
    conf.write_text(KEEPALIVED_CONF.format(priority=priority, version=version))
    logf = Path(f"/tmp/ka-{tag}.log")
    out = open(logf, "w")  # noqa: SIM115 - handed to the child
    proc = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", "had1", "keepalived", "-n", "-l", "-D", "-P", "-f", str(conf),
        "-p", f"/run/ka-{tag}.pid", "-r", f"/run/ka-{tag}-vrrp.pid",
        stdout=out, stderr=subprocess.STDOUT,
    )  # fmt: skip
    out.close()
    return proc, logf


async def stop_keepalived(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()


async def against_keepalived() -> dict:
    loop = asyncio.get_running_loop()
    d2 = Director("had2", vrrp_conf(100, "1s"))
    ka, log1 = await start_keepalived(150, "hi")
    ka2 = None
    try:
        await d2.ha.start()
        # keepalived (150) wins over lvsd (100)
        await wait_for(lambda: {VIP, GW} <= addresses("had1"), 15, "keepalived to take the VIPs")
        await wait_for(lambda: d2.ha.status()["vrrp"]["counters"].get("received", 0) >= 3, 10, "adverts")
        await asyncio.sleep(4)  # more than a master-down interval: lvsd stays backup
        st = d2.ha.status()
        assert d2.role == "backup", st
        assert not {VIP, GW} & addresses("had2")
        c = st["vrrp"]["counters"]
        assert not {"malformed", "dropped_ttl", "dropped", "address_mismatch"} & set(c), c
        # keepalived resigns (priority 0) on SIGTERM: lvsd takes over after its skew time
        t0 = loop.time()
        await stop_keepalived(ka)
        await wait_for(lambda: d2.role == "master", 10, "lvsd to take over from keepalived")
        resign_takeover = next(t for t, r in d2.roles if r == "master" and t >= t0) - t0
        assert resign_takeover <= d2.ha.vrrp.params.skew(100) + 1.0  # type: ignore[union-attr]
        assert {VIP, GW} <= addresses("had2")
        # keepalived (50) against lvsd (100): keepalived accepts lvsd's adverts and stays backup
        ka2, log2 = await start_keepalived(50, "lo")
        await asyncio.sleep(7)
        assert ka2.returncode is None, log2.read_text()
        assert d2.role == "master"
        assert not {VIP, GW} & addresses("had1")
        text2 = log2.read_text()
        assert "Entering BACKUP STATE" in text2, text2
        assert "Entering MASTER STATE" not in text2, text2
        text1 = log1.read_text()
        assert "Entering MASTER STATE" in text1, text1
        return {
            "lvsd_takeover_after_keepalived_resigns_s": round(resign_takeover, 3),
            "lvsd_roles": [r for _, r in d2.roles],
        }
    finally:
        await stop_keepalived(ka)
        if ka2 is not None:
            await stop_keepalived(ka2)
        await d2.stop()


@pytest.mark.skipif(not REQUIRED and shutil.which("keepalived") is None, reason="keepalived not installed")
def test_against_keepalived(topology) -> None:  # type: ignore[no-untyped-def]
    r = asyncio.run(asyncio.wait_for(against_keepalived(), 120))
    record("keepalived_interop", r)


async def against_keepalived_v2() -> dict:
    loop = asyncio.get_running_loop()
    d2 = Director("had2", vrrp_conf(100, "1s").replace("preempt = true", "preempt = true\nversion = 2"))
    await d2.ha.start()
    ka, log1 = await start_keepalived(150, "v2", version=2)
    try:
        await wait_for(lambda: {VIP, GW} <= addresses("had1"), 20, "keepalived (v2) to take the VIPs")
        await wait_for(lambda: d2.role == "backup", 10, "lvsd (v2) to yield to keepalived")
        await wait_for(lambda: d2.ha.status()["vrrp"]["counters"].get("received", 0) >= 3, 10, "v2 adverts")
        await asyncio.sleep(4)
        st = d2.ha.status()["vrrp"]
        assert d2.role == "backup" and st["version"] == 2
        assert not {VIP, GW} & addresses("had2")
        assert not {"malformed", "dropped_ttl", "dropped", "address_mismatch"} & set(st["counters"]), st
        t0 = loop.time()
        await stop_keepalived(ka)
        await wait_for(lambda: d2.role == "master", 10, "lvsd (v2) to take over")
        took = next(t for t, r in d2.roles if r == "master" and t >= t0) - t0
        assert {VIP, GW} <= addresses("had2")
        return {
            "lvsd_takeover_after_keepalived_resigns_s": round(took, 3),
            "lvsd_roles": [r for _, r in d2.roles],
        }
    finally:
        await stop_keepalived(ka)
        await d2.stop()


@pytest.mark.skipif(not REQUIRED and shutil.which("keepalived") is None, reason="keepalived not installed")
def test_against_keepalived_vrrpv2(topology) -> None:  # type: ignore[no-untyped-def]
    r = asyncio.run(asyncio.wait_for(against_keepalived_v2(), 120))
    record("keepalived_interop_v2", r)


# --- 5: external mode -------------------------------------------------------------------------------------


def daemon_lines(ns: str) -> list[str]:
    """ipvsadm -L --daemon in ``ns``, each line cut after the syncid (the rest is kernel defaults)."""
    out = sh("ip", "netns", "exec", ns, "ipvsadm", "-L", "--daemon").splitlines()
    return [x.split(", maxlen=")[0] for x in out if x.strip()]


async def external_mode() -> None:
    d = Director("had1", EXTERNAL_CONF)
    await d.ha.start()
    try:
        assert d.role == "backup"
        assert daemon_lines("had1") == ["backup sync daemon (mcast=eth0, syncid=7"]
        d.ha.set_role("master")
        assert daemon_lines("had1") == ["master sync daemon (mcast=eth0, syncid=7"]
        d.ha.set_role("fault")  # on_fault = "none"
        assert daemon_lines("had1") == []
        d.ha.set_role("backup")
        assert daemon_lines("had1") == ["backup sync daemon (mcast=eth0, syncid=7"]
        assert [r for _, r in d.roles] == ["backup", "master", "fault", "backup"]
    finally:
        await d.stop("remove")
    assert daemon_lines("had1") == []


def test_external_role_switches_sync_daemon(topology) -> None:  # type: ignore[no-untyped-def]
    asyncio.run(asyncio.wait_for(external_mode(), 60))


# --- 5 end to end: the daemon and lvsctl ------------------------------------------------------------------

DAEMON_CONF = """
[daemon]
on_stop = "remove"

[api]
socket = "{sock}"

[ha]
mode = "external"
role = "backup"

[sync]
interface = "eth0"
syncid = 9
on_fault = "none"
"""


def test_lvsctl_role_end_to_end(topology, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """lvsd runs in had2; `lvsctl role` switches its sync daemon; lvsadm shows it; SIGTERM with
    on_stop = "remove" stops it."""
    import sys

    sock = tmp_path / "lvsd.sock"
    conf = tmp_path / "lvsd.toml"
    conf.write_text(DAEMON_CONF.format(sock=sock))
    log = open(tmp_path / "lvsd.log", "w")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        ["ip", "netns", "exec", "had2", sys.executable, "-m", "lvsd.daemon.main", "-f", str(conf)],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    log.close()
    lvsctl = [sys.executable, "-m", "lvsd.cli.lvsctl", "-s", str(sock)]
    try:
        end = time.monotonic() + 240  # lvsd starts in ~3 s on the host, 15x that under emulation
        while not sock.exists():
            assert proc.poll() is None, (tmp_path / "lvsd.log").read_text()
            assert time.monotonic() < end, "lvsd did not open its control socket"
            time.sleep(0.2)
        status = json.loads(sh(*lvsctl, "--json", "status"))
        assert status["ha"]["sysctls"]["sync_threshold"] == "3 0", status
        assert daemon_lines("had2") == ["backup sync daemon (mcast=eth0, syncid=9"]
        sh(*lvsctl, "role", "master")
        assert daemon_lines("had2") == ["master sync daemon (mcast=eth0, syncid=9"]
        lvsadm = sh("ip", "netns", "exec", "had2", sys.executable, "-m", "lvsd.cli.lvsadm", "-L", "--daemon")
        assert lvsadm == sh("ip", "netns", "exec", "had2", "ipvsadm", "-L", "--daemon")
        sh(*lvsctl, "role", "fault")
        assert daemon_lines("had2") == []
        sh(*lvsctl, "role", "backup")
        assert daemon_lines("had2") == ["backup sync daemon (mcast=eth0, syncid=9"]
        bad = subprocess.run([*lvsctl, "role", "primary"], capture_output=True, text=True)
        assert bad.returncode != 0 and "Traceback" not in bad.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, (tmp_path / "lvsd.log").read_text()
    assert daemon_lines("had2") == []


VRRP_DAEMON_CONF = """
[daemon]
on_stop = "keep"

[api]
socket = "{sock}"

[ha]
mode = "vrrp"
interface = "eth0"
vrid = 81
priority = {priority}
advert_interval = "200ms"
vips = ["10.1.0.100/24", "10.2.0.1/24"]
"""


def test_two_daemons_vrrp_handover(topology, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The real daemon in each director: one master, and SIGTERM hands over (priority 0)."""
    import sys

    procs = {}
    for ns, prio in (("had1", 150), ("had2", 100)):
        conf = tmp_path / f"{ns}.toml"
        conf.write_text(VRRP_DAEMON_CONF.format(sock=tmp_path / f"{ns}.sock", priority=prio))
        log = open(tmp_path / f"{ns}.log", "w")  # noqa: SIM115 - handed to the child
        procs[ns] = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "lvsd.daemon.main", "-f", str(conf)],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()

    def vrrp_state(ns: str) -> str:
        out = sh(
            sys.executable, "-m", "lvsd.cli.lvsctl", "-s", str(tmp_path / f"{ns}.sock"), "--json", "status"
        )
        return json.loads(out)["ha"]["vrrp"]["state"]

    try:
        end = time.monotonic() + 240
        while not all((tmp_path / f"{ns}.sock").exists() for ns in procs):
            for ns, p in procs.items():
                assert p.poll() is None, (tmp_path / f"{ns}.log").read_text()
            assert time.monotonic() < end, "the daemons did not open their control sockets"
            time.sleep(0.2)
        end = time.monotonic() + 30
        while not ({VIP, GW} <= addresses("had1") and vrrp_state("had2") == "backup"):
            assert time.monotonic() < end, "no election: " + " | ".join(
                (tmp_path / f"{ns}.log").read_text()[-1500:] for ns in procs
            )
            time.sleep(0.5)
        assert vrrp_state("had1") == "master" and not {VIP, GW} & addresses("had2")
        procs["had1"].send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        while not {VIP, GW} <= addresses("had2"):
            assert time.monotonic() - t0 < 10, "had2 did not take over after had1 resigned"
            time.sleep(0.05)
        assert procs["had1"].wait(60) == 0, (tmp_path / "had1.log").read_text()
        assert not {VIP, GW} & addresses("had1")
        assert vrrp_state("had2") == "master"
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    assert not {VIP, GW} & (addresses("had1") | addresses("had2"))


def test_leaves_no_trace(topology) -> None:  # type: ignore[no-untyped-def]
    for ns in ("had1", "had2"):
        assert not {VIP, GW} & addresses(ns)
        assert daemon_lines(ns) == []
