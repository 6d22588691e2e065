"""Scale-out (``[ha] mode = "bgp"``) on the real kernel with real BIRD 2 and real packets.

One topology is brought up once for every scenario (start-up under emulation is the cost):

    client (sc) -- router (sr: BIRD, ECMP over eBGP + BFD, fib_multipath_hash_policy 1)
                    |-- d1 -- director sd1 (BIRD + lvsd, mh, DR) --+
                    |-- d2 -- director sd2                       --+-- br0 (in sr) -- rs1, rs2, rs3
                    |-- d3 -- director sd3                       --+   (VIP on lo, arp_ignore/announce)

The directors' lvsd keep the VIP on ``lvsd0``; BIRD's ``protocol direct`` exports it. The
scenarios run in file order on that one site: spread, director death (BFD), the negative control
(sloppy_tcp = 0), quorum withdraw, drain, restart with on_stop = "keep". Each prints what it
measured (``-s``); docs/scale-out.md has the figures. Knobs for manual runs:
``LVSD_SCALE_OUT_BFD=100x3`` (the production BFD; default 300x5, which a loaded emulation host
does not make flap), ``LVSD_SCALE_OUT_DEATHS=N`` (N rounds of both cut positions),
``LVSD_SCALE_OUT_LONG=1`` (three rounds, and the death without BFD), ``LVSD_SCALE_OUT_NICE``
(lvsd's nice level, default 10) and ``LVSD_SCALE_OUT_BIRD_FIFO=N`` (BIRDs at SCHED_FIFO N).

A link cut is a tc ``matchall`` filter on both directions of a director's two links, all four
bound to one shared ``gact`` action set up with the topology ("continue": a no-op). The cut flips
that one action to "drop" through a ``tc -batch`` process started beforehand, so the cut is one
netlink request whose moment is known to a few ms (spawning tc, or loading its modules on first
use, cost 0.1-1.5 s under emulation and was counted in the withdraw time before). The router's
port stays up, as with a real cut cable, so only BFD (or the hold timer) notices. The withdraw
time is the kernel route event as ``ip -ts monitor route`` stamped it in the router, on the same
clock (CLOCK_REALTIME of the one VM) as the cut; the router's BIRD log (ms stamps, BFD and BGP
debug on) splits it into BFD detection and the route's way to the kernel.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest
from netns import HttpClient, Lab, LabError, http_get, sh

pytestmark = pytest.mark.skipif(shutil.which("bird") is None, reason="BIRD 2 is not installed (tests/kernel/vm.sh installs it)")

VIP = "10.77.99.1"
N = 3
CONNS = 120
LONG = os.environ.get("LVSD_SCALE_OUT_LONG") == "1"
#: BFD interval (ms) and multiplier. Production: 100 x 3 (0.3 s). Under TCG emulation, with other
#: VMs on the same cores, 100 ms BFD flaps (the BIRDs are starved for longer than 300 ms), so the
#: default here is 300 x 5; LVSD_SCALE_OUT_BFD=100x3 runs the production setting.
BFD_MS, BFD_MULT = (int(x) for x in os.environ.get("LVSD_SCALE_OUT_BFD", "300x5").split("x"))
BFD_DETECT = BFD_MS * BFD_MULT / 1000
#: nice level of the directors' lvsd (LVSD_SCALE_OUT_NICE=0: not niced), so a measurement can tell
#: whether a busy lvsd delays BIRD's BFD in the same VM
LVSD_NICE = os.environ.get("LVSD_SCALE_OUT_NICE", "10")
#: LVSD_SCALE_OUT_BIRD_FIFO=N runs every BIRD under SCHED_FIFO priority N (chrt): whether BFD's
#: flaps under a loaded emulation come from BIRD waiting for a CPU in the VM or from the VM itself
BIRD_FIFO = os.environ.get("LVSD_SCALE_OUT_BIRD_FIFO", "")
HOLD = 9  # hold timer (s), keepalive a third of it: what notices a cut without BFD
START_TIMEOUT = 300.0  # lvsd starts in ~3 s on the host, 15x that under emulation, three at once

DIRECTOR_BIRD = """
log "{log}" {{ info, remote, warning, error, auth, fatal, bug }};
router id 10.77.6{i}.2;
protocol device {{ scan time 1; }}
protocol direct {{ ipv4; interface "lvsd0"; }}
protocol bfd {{ interface "eth0" {{ min rx interval {bfd} ms; min tx interval {bfd} ms; multiplier {mult}; }}; }}
protocol bgp up {{
  local 10.77.6{i}.2 as 65001;
  neighbor 10.77.6{i}.1 as 65000;
  hold time {hold}; keepalive time {ka};
  connect delay time 1; connect retry time 1; error wait time 1, 2;
  bfd on;
  ipv4 {{ import none; export where net ~ [ 10.77.99.0/24{{32,32}} ]; }};
}}
"""

ROUTER_BIRD = """
log "{log}" {{ info, remote, warning, error, auth, fatal, bug, trace }};
router id 10.77.50.1;
protocol device {{ scan time 1; }}
protocol kernel {{ ipv4 {{ import none; export all; }}; merge paths on; }}
protocol bfd {{
  debug {{ states, events }};  # "Session to X changed state from Up to Down": when BFD noticed
  interface "d*" {{ min rx interval {bfd} ms; min tx interval {bfd} ms; multiplier {mult}; }};
}}
template bgp dir {{
  debug {{ states, events }};
  local as 65000;
  hold time {hold}; keepalive time {ka};
  connect delay time 1; connect retry time 1; error wait time 1, 2;
  bfd on;
  ipv4 {{ import all; export none; }};
}}
protocol bgp d1 from dir {{ neighbor 10.77.61.2 as 65001; }}
protocol bgp d2 from dir {{ neighbor 10.77.62.2 as 65001; }}
protocol bgp d3 from dir {{ neighbor 10.77.63.2 as 65001; }}
"""

BIRD_TIMES = {"bfd": BFD_MS, "mult": BFD_MULT, "hold": HOLD, "ka": HOLD // 3}

LVSD_CONF = """
[daemon]
on_stop = "keep"
resync = "5s"

[api]
socket = "{dir}/lvsd.sock"

[ha]
mode = "bgp"
withdraw_delay = "500ms"
withdraw_grace = "0s"
drain_file = "{dir}/drain"
bird_socket = "{dir}/bird.ctl"

[[service]]
name = "web"
vip = "10.77.99.1:80"
scheduler = "mh"
check = {{ type = "tcp", interval = "1s", timeout = "500ms", rise = 1, fall = 2 }}
[[service.server]]
address = "10.77.70.11"
[[service.server]]
address = "10.77.70.12"
[[service.server]]
address = "10.77.70.13"
"""


# --- watching the router's route --------------------------------------------------------------------


class RouteWatch:
    """``ip -ts monitor route`` in the router, read by a thread: every state of the VIP's route (its
    set of gateways) with the wall-clock time ``ip`` received the kernel's event (not when Python
    read the line, which a busy test process delays), so waits and 'never lost' checks cost no
    polling process under emulation."""

    def __init__(self, lab: Lab) -> None:
        self.proc = lab.popen("ip", "-ts", "-o", "monitor", "route", ns="sr", stdout=subprocess.PIPE, text=True, bufsize=1)
        self.states: list[tuple[float, frozenset[str]]] = []
        self.cond = threading.Condition()
        time.sleep(0.3)  # the monitor subscribes before the first read below
        self._set(gateways_now())
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _set(self, gws: frozenset[str], t: float | None = None) -> None:
        with self.cond:
            if not self.states or self.states[-1][1] != gws:
                self.states.append((time.time() if t is None else t, gws))
            self.cond.notify_all()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:  # -o: one line per route, multipath nexthops included
            stamp, _, line = line.partition("] ")  # -ts: "[2026-12-03T20:46:23.267969] ..."
            t = datetime.fromisoformat(stamp.lstrip("[")).timestamp()  # ip prints local time
            words = line.split()
            deleted = words[:1] == ["Deleted"]
            if deleted:
                words = words[1:]
            if not words or words[0].split("/")[0] != VIP:
                continue
            self._set(frozenset() if deleted else frozenset(re.findall(r"via (\S+)", line)), t)

    def now(self) -> frozenset[str]:
        with self.cond:
            return self.states[-1][1]

    def wait(self, cond: Callable[[frozenset[str]], bool], timeout: float, what: str) -> float:
        """The wall-clock time the route first met ``cond`` (waiting up to ``timeout``)."""
        end = time.monotonic() + timeout
        with self.cond:
            while True:
                for t, g in self.states:
                    if cond(g) and t >= self._since:
                        return t
                left = end - time.monotonic()
                assert left > 0, f"timed out waiting for {what}; route states: {self.states[-5:]}"
                self.cond.wait(min(left, 0.5))

    def mark(self) -> None:
        """Only states seen from now on count for ``wait``."""
        with self.cond:
            self._since = time.time()
            self.states.append((self._since, self.states[-1][1]))

    _since = 0.0


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


#: The cut's gate in each director namespace: one shared gact action (index 1), "continue" (a no-op)
#: until a cut flips it to "drop", bound to matchall filters on both directions of both links. Set
#: up with the topology, so a cut loads no module and is one netlink request.
GATE = "actions add action continue index 1\n" + "".join(
    f"qdisc add dev {dev} clsact\n" + "".join(f"filter add dev {dev} {d} pref 100 matchall action continue index 1\n" for d in ("ingress", "egress"))
    for dev in ("eth0", "eth1")
)


def _bird_stamp(line: str) -> float | None:
    """The wall-clock time of a BIRD log line ("2026-12-03 20:44:04.155 <TRACE> ..."), or None."""
    try:
        return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S.%f").timestamp()
    except ValueError:
        return None


def gateways_now() -> frozenset[str]:
    out = sh("ip", "-n", "sr", "route", "show", f"{VIP}/32")
    return frozenset(re.findall(r"via (\S+)", out))


def gw(i: int) -> str:
    return f"10.77.6{i}.2"


def director_of(gateway: str) -> int:
    return int(gateway.split(".")[2][1])


# --- the site ----------------------------------------------------------------------------------------


class Site:
    """The topology, its BIRDs and lvsds, and helpers the scenarios share."""

    def __init__(self, lab: Lab, tmp: Path) -> None:
        self.lab, self.tmp = lab, tmp
        self.lvsd: dict[int, subprocess.Popen] = {}
        self.cuts: list[tuple[int, float]] = []  # (director, wall-clock time): tells cuts from flaps
        self.route: RouteWatch

    def build(self) -> None:
        lab = self.lab
        sr = lab.netns("sr")
        sc = lab.netns("sc")
        lab.veth("c0", sr, "eth0", sc)
        lab.addr("c0", "10.77.50.1/24", sr)
        lab.addr("eth0", "10.77.50.2/24", sc)
        lab.route("default", "10.77.50.1", sc)
        sr.sysctl("net.ipv4.ip_forward", "1")
        sr.sysctl("net.ipv4.fib_multipath_hash_policy", "1")
        lab.bridge("br0", sr)
        lab.addr("br0", "10.77.70.1/24", sr)
        for i in range(1, N + 1):
            rs = lab.netns(f"srs{i}")
            lab.veth(f"r{i}", sr, "eth0", rs, master="br0")
            lab.addr("eth0", f"10.77.70.1{i}/24", rs)
            lab.addr("lo", f"{VIP}/32", rs)
            lab.route("default", "10.77.70.1", rs)
            for k, v in (("arp_ignore", "1"), ("arp_announce", "2")):
                rs.sysctl(f"net.ipv4.conf.all.{k}", v)
            lab.http_server(rs, "0.0.0.0", 80, name=f"rs{i}")
        for i in range(1, N + 1):
            d = lab.netns(f"sd{i}")
            lab.veth(f"d{i}", sr, "eth0", d)
            lab.addr(f"d{i}", f"10.77.6{i}.1/24", sr)
            lab.addr("eth0", f"10.77.6{i}.2/24", d)
            lab.route("default", f"10.77.6{i}.1", d)
            lab.veth(f"b{i}", sr, "eth1", d, master="br0")
            lab.addr("eth1", f"10.77.70.2{i}/24", d)
            for k, v in (("arp_ignore", "1"), ("arp_announce", "2")):
                d.sysctl(f"net.ipv4.conf.all.{k}", v)
            d.sysctl("net.ipv4.vs.conntrack", "0")
            sh("tc", "-n", f"sd{i}", "-batch", "-", input=GATE)
        self.bird("sr", ROUTER_BIRD.format(log=self.tmp / "bird-sr.log", **BIRD_TIMES))
        for i in range(1, N + 1):
            ddir = self.tmp / f"d{i}"
            ddir.mkdir()
            self.bird(f"sd{i}", DIRECTOR_BIRD.format(i=i, log=ddir / "bird.log", **BIRD_TIMES), ddir / "bird.ctl")
            (ddir / "lvsd.toml").write_text(LVSD_CONF.format(dir=ddir))
        t0 = time.monotonic()
        for i in range(1, N + 1):
            self.start_lvsd(i)
        for i in range(1, N + 1):
            self.wait_lvsd(i)
        self.start_seconds = time.monotonic() - t0
        self.route = RouteWatch(lab)
        self.route.wait(lambda g: len(g) == N, 120, "the router's three-way multipath route")
        time.sleep(3)  # sessions that flap under emulation show up here, not in the first scenario
        self.route.wait(lambda g: len(g) == N, 60, "the three-way route to hold")

    def bird(self, ns: str, conf: str, sock: Path | None = None) -> None:
        sock = sock or self.tmp / f"bird-{ns}.ctl"
        path = self.tmp / f"bird-{ns}.conf"
        path.write_text(conf)
        sh("bird", "-p", "-c", str(path))  # parse only: a config error fails here, readably
        prio = ["chrt", "-f", BIRD_FIFO] if BIRD_FIFO else []
        self.lab.popen(*prio, "bird", "-f", "-c", str(path), "-s", str(sock), ns=ns)

    def start_lvsd(self, i: int) -> None:
        ddir = self.tmp / f"d{i}"
        with contextlib.suppress(OSError):
            (ddir / "lvsd.sock").unlink()
        log = open(ddir / "lvsd.log", "a")  # noqa: SIM115 - handed to the child
        self.lvsd[i] = self.lab.popen(  # nice: a starting lvsd must not starve BIRD's BFD under emulation
            "nice", "-n", LVSD_NICE, sys.executable, "-m", "lvsd.daemon.main", "-f", str(ddir / "lvsd.toml"),
            ns=f"sd{i}", stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()

    def wait_lvsd(self, i: int) -> dict:
        ddir = self.tmp / f"d{i}"
        end = time.monotonic() + START_TIMEOUT
        while True:
            assert self.lvsd[i].poll() is None, (ddir / "lvsd.log").read_text()[-3000:]
            assert time.monotonic() < end, "lvsd did not announce: " + (ddir / "lvsd.log").read_text()[-3000:]
            if (ddir / "lvsd.sock").exists():
                try:
                    st = self.status(i)
                except (LabError, ValueError):
                    st = None
                if st and any(v["announced"] for v in st["ha"]["announce"]["vips"]):
                    return st
            time.sleep(0.5)

    def lvsctl(self, i: int, *args: str) -> str:
        return sh(sys.executable, "-m", "lvsd.cli.lvsctl", "-s", str(self.tmp / f"d{i}" / "lvsd.sock"), *args, timeout=120)

    def status(self, i: int) -> dict:
        return json.loads(self.lvsctl(i, "--json", "status"))

    def conns(self, i: int) -> int:
        """IPVS connection entries on director i."""
        out = sh("ip", "netns", "exec", f"sd{i}", "cat", "/proc/net/ip_vs_conn")
        return max(0, len(out.splitlines()) - 1)

    def cut(self, i: int, on: bool = True) -> None:
        """Drop everything on director i's links, both ways (the router's port stays up), or let
        it through again."""
        if on:
            self.cuts.append((i, time.time()))
        sh("tc", "-n", f"sd{i}", "actions", "change", "action", "drop" if on else "continue", "index", "1")

    def timed_cut(self, i: int) -> tuple[float, float]:
        """Cut director i and return the wall-clock bounds of the moment the cut took effect: just
        before the request went to a tc already running and waiting on its stdin, and when tc's
        answer (the gate now "drop") was read back."""
        tc = subprocess.Popen(  # stdbuf: tc's output is block-buffered on a pipe, we read it line by line
            ["stdbuf", "-oL", "tc", "-n", f"sd{i}", "-batch", "-"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
        )  # fmt: skip
        assert tc.stdin is not None and tc.stdout is not None
        get = "actions get action gact index 1\n"

        def gate() -> str:
            state = ""
            for line in tc.stdout:  # type: ignore[union-attr]
                if "gact action" in line:
                    state = line.split()[-1]
                if line.split()[:2] == ["index", "1"]:
                    return state
            raise LabError(f"tc -n sd{i} -batch: no answer ({tc.wait()})")

        try:
            tc.stdin.write(get)  # tc is up and reading once it answers this
            assert gate() == "continue"
            t_lo = time.time()
            self.cuts.append((i, t_lo))
            tc.stdin.write("actions change action drop index 1\n" + get)
            assert gate() == "drop"
            t_hi = time.time()
        finally:
            tc.stdin.close()
            tc.wait(10)
        return t_lo, t_hi

    def bfd_down(self, i: int, since: float) -> float | None:
        """When the router's BIRD logged its BFD session to director i going down after
        ``since`` (wall clock, ms resolution), or None."""
        for line in (self.tmp / "bird-sr.log").read_text().splitlines():
            if f"Session to {gw(i)} changed state from Up to Down" in line:
                t = _bird_stamp(line)
                if t is not None and t >= since - 0.002:
                    return t
        return None

    def flaps(self) -> list[str]:
        """The router's BFD sessions that went down without a cut of their director in the 10 s
        before: under emulation, the VM stalled for longer than the detection time."""
        out = []
        for line in (self.tmp / "bird-sr.log").read_text().splitlines():
            m = re.search(r"Session to 10\.77\.6(\d)\.2 changed state from Up to Down", line)
            t = _bird_stamp(line)
            if m and t is not None and not any(i == int(m[1]) and 0 <= t - tc < 10 for i, tc in self.cuts):
                out.append(f"d{m[1]} at {line[11:23]}")
        return out

    def bfd_sessions(self) -> str:
        """The router's ``birdc show bfd sessions`` (the negotiated intervals)."""
        return sh("ip", "netns", "exec", "sr", "birdc", "-s", str(self.tmp / "bird-sr.ctl"), "show", "bfd", "sessions")

    def settle(self, i: int) -> None:
        """After a cut of director i: wait until its checks see every server up again and the
        router holds all three nexthops. (Cut, its checks failed; uncut, BGP can come back while
        its servers are still down there: within withdraw_delay it announces a VIP it cannot
        serve, and the kernel refuses new connections (ICMP port unreachable) until they are up.)"""
        end = time.monotonic() + 60
        while True:
            st = self.status(i)
            vips = st["ha"]["announce"]["vips"]
            if st["health"].get("down", 0) == 0 and st["health"].get("unknown", 0) == 0 and all(v["reason"] == "quorum" for v in vips):
                break
            assert time.monotonic() < end, f"director {i} did not recover: {st['health']} {vips}"
            time.sleep(0.3)
        self.route.wait(lambda g: len(g) == N, 60, "the director back in the route")

    def sloppy(self, value: str) -> None:
        for i in range(1, N + 1):
            sh("ip", "netns", "exec", f"sd{i}", "sysctl", "-qw", f"net.ipv4.vs.sloppy_tcp={value}")

    def open_clients(self, n: int = CONNS) -> list[tuple[HttpClient, str]]:
        out = []
        for _ in range(n):
            c = HttpClient("sc", VIP, 80, timeout=5)
            out.append((c, c.get()))
        return out

    @staticmethod
    def survivors(clients: list[tuple[HttpClient, str]]) -> tuple[int, list[str]]:
        """How many connections still answer, from the same real server (bytes after the failure)."""
        ok, bad = 0, []
        for c, first in clients:
            try:
                body = c.get()
                if body == first:
                    ok += 1
                else:
                    bad.append(f"{c.local_port}: {first} -> {body}")
            except (OSError, ConnectionError) as e:
                bad.append(f"{c.local_port}: {type(e).__name__} {e}")
            finally:
                c.close()
        return ok, bad


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("scale-out")
    with Lab() as lab:
        s = Site(lab, tmp)
        try:
            s.build()
            print(f"\nscale-out: three lvsd started and announced in {s.start_seconds:.1f}s")
            yield s
        finally:
            if hasattr(s, "route"):
                t0 = s.route.states[0][0]
                print("router route states (s, gateways):", [(round(t - t0, 2), sorted(g)) for t, g in s.route.states])
            log = tmp / "bird-sr.log"
            if log.exists():
                flaps = s.flaps()
                print(f"BFD {BFD_MS} ms x {BFD_MULT}: {len(s.cuts)} cuts; {len(flaps)} sessions down without a cut {flaps}")
                sys.stdout.write("--- router BIRD log tail ---\n" + "\n".join(log.read_text().splitlines()[-40:]) + "\n")
            for i in range(1, N + 1):
                log = tmp / f"d{i}" / "lvsd.log"
                if log.exists():
                    sys.stdout.write(f"--- lvsd d{i} log tail ---\n{log.read_text()[-1500:]}\n")


# --- the scenarios, in order -----------------------------------------------------------------------


def test_1_all_announce_and_new_connections_spread(site: Site) -> None:
    """Three-way multipath on the router; 300 new connections spread over the directors and the
    real servers."""
    assert len(site.route.now()) == N
    before = {i: site.conns(i) for i in range(1, N + 1)}
    bodies, failed = [], []
    for _ in range(300):
        try:
            bodies.append(http_get("sc", VIP, 80, timeout=5).body)
        except OSError as e:
            failed.append(f"{type(e).__name__}: {e}")
    assert not failed, f"{len(failed)}/300 new connections failed, e.g. {failed[:3]}; route states {site.route.states}"
    per_rs = {b: bodies.count(b) for b in set(bodies)}
    per_dir = {i: site.conns(i) - before[i] for i in range(1, N + 1)}
    print(f"\nspread: real servers {sorted(per_rs.items())}, directors {per_dir}")
    assert set(per_rs) == {"rs1", "rs2", "rs3"}
    assert all(n > 0 for n in per_dir.values()), per_dir
    rss = [_rss_kib(site.lvsd[i].pid) for i in range(1, N + 1)]
    print(f"bgp-mode lvsd: RSS {rss} KiB; three started and announced in {site.start_seconds:.1f}s")
    st = site.status(1)["ha"]["announce"]
    assert st["interface"] == "lvsd0" and st["sysctls"] == {"sloppy_tcp": "1", "sloppy_sctp": "1"}
    assert st["bgp_sessions"]["established"] == 1, st["bgp_sessions"]


def _summary(key: str, rows: list[dict]) -> str:
    vals = [r[key] for r in rows if r.get(key) is not None]
    if not vals:
        return f"{key}: -"
    return f"{key}: min {min(vals):.3f} median {statistics.median(vals):.3f} max {max(vals):.3f} (n={len(vals)})"


def _death(site: Site, position: str) -> dict:
    """Cut the director at ``position`` (first or middle nexthop) with CONNS connections in
    flight; measure the withdraw time, the survivors, and when new connections work again."""
    site.route.mark()  # a session that flapped under a loaded emulation host is back first
    site.route.wait(lambda g: len(g) == N, 60, "the three-way route before the death")
    clients = site.open_clients()
    order = sorted(site.route.now())
    victim = director_of(order[0] if position == "first" else order[len(order) // 2])
    spread = {i: site.conns(i) for i in range(1, N + 1)}
    load = Path("/proc/loadavg").read_text().split()[0]
    site.route.mark()
    try:  # a failed cut is undone too
        t0, t0_hi = site.timed_cut(victim)
        # timed on the victim leaving the route alone: if another session flapped meanwhile
        # (a loaded emulation host), the route reaches the other two only when it is back
        t_gone = site.route.wait(lambda g: gw(victim) not in g, 30, "the router to withdraw")
        site.route.wait(lambda g: gw(victim) not in g and len(g) == N - 1, 30, "the two others in the route")
        t_new = None
        while t_new is None and time.time() - t0 < 30:
            try:
                http_get("sc", VIP, 80, timeout=1)
                t_new = time.time()  # when the answer was read: an upper bound
            except OSError:
                pass
        ok, bad = site.survivors(clients)
    finally:
        site.cut(victim, on=False)
    t_bfd = site.bfd_down(victim, t0)
    site.settle(victim)
    res = {"victim": victim, "withdraw_s": round(t_gone - t0, 3), "new_ok_s": round((t_new or 0) - t0, 3), "survived": ok,
           "bfd_down_s": None if t_bfd is None else round(t_bfd - t0, 3), "cut_uncertainty_s": round(t0_hi - t0, 3),
           "vm_load": load}  # fmt: skip
    print(f"\ndeath ({position} nexthop, d{victim}): {res}, conns per director {spread}; lost: {bad[:5]}")
    return res


def test_2_director_death_loses_no_connection(site: Site) -> None:
    """Cut one director (first nexthop, then a middle one): BFD withdraws it within 0.5 s (plus
    emulation slack), new connections work again within 1 s (slack too), every connection survives."""
    runs = int(os.environ.get("LVSD_SCALE_OUT_DEATHS", "3" if LONG else "1"))
    print(f"\nBFD {BFD_MS} ms x {BFD_MULT}, lvsd nice {LVSD_NICE}, BIRD SCHED_FIFO {BIRD_FIFO or '-'}; the router's sessions:\n{site.bfd_sessions()}")
    rows = []
    for _ in range(runs):
        for position in ("first", "middle"):
            res = _death(site, position)
            rows.append(res)
            assert res["survived"] == CONNS, res
            # BFD, not the hold timer, noticed (the figure itself is printed: under emulation a
            # loaded host adds seconds, so the bound only tells BFD from the 9 s hold timer)
            assert res["withdraw_s"] < HOLD - 2, res
            assert 0 < res["new_ok_s"] < HOLD, res
    print(f"\ndeaths with BFD {BFD_MS} x {BFD_MULT}: " + "; ".join(_summary(k, rows) for k in ("withdraw_s", "bfd_down_s", "new_ok_s", "survived")))


def test_6_negative_control_without_sloppy_tcp_loses_connections(site: Site) -> None:
    """The same death with sloppy_tcp = 0: the directors that get the moved flows drop their
    mid-flow packets, so connections break: the test can fail."""
    site.sloppy("0")
    try:
        res = _death(site, "first")
    finally:
        site.sloppy("1")
    print(f"\nnegative control (sloppy_tcp = 0): {res['survived']}/{CONNS} survived")
    assert res["survived"] < CONNS, res


def test_3_quorum_withdraw_on_one_director(site: Site) -> None:
    """Every real server fails its checks from director 2 only: it withdraws within fall x
    interval + withdraw_delay + 1 s (plus emulation slack), the others keep serving, it comes back."""
    d = "sd2"
    blackholes = "".join(f"route {{op}} blackhole 10.77.70.{r}/32\n" for r in (11, 12, 13))
    site.route.mark()
    sh("ip", "-n", d, "-batch", "-", input=blackholes.format(op="add"))
    t0 = time.time()  # once all are blocked (one ip for the three: a spawn costs 0.1 s or more under emulation)
    try:
        t_gone = site.route.wait(lambda g: gw(2) not in g and len(g) == N - 1, 60, "d2 to withdraw")
        bodies = {http_get("sc", VIP, 80, timeout=5).body for _ in range(30)}
        st = site.status(2)["ha"]["announce"]["vips"][0]
        assert st["announced"] is False and st["reason"] == "below-quorum", st
    finally:
        site.route.mark()  # "back" is the first three-way route after this, not the one before
        sh("ip", "-n", d, "-batch", "-", input=blackholes.format(op="del"))
        t_rec = time.time()
    t_back = site.route.wait(lambda g: len(g) == N, 60, "d2 to announce again")
    bound = 2 * 1 + 0.5 + 1  # fall x interval + withdraw_delay + 1 s
    print(f"\nquorum withdraw: {t_gone - t0:.2f}s (bound {bound}s on hardware), back {t_back - t_rec:.2f}s after "
          f"the servers were reachable again, served by {sorted(bodies)}")  # fmt: skip
    site.settle(2)  # BGP can return before d2's checks see its servers again: the next test needs them
    assert bodies == {"rs1", "rs2", "rs3"}
    assert t_gone - t0 < bound * 4, "withdrawn far later than fall x interval + withdraw_delay + 1 s"


def test_4_drain_director(site: Site) -> None:
    """lvsctl drain-director: the router stops using it, no connection breaks; undrain brings it back."""
    clients = site.open_clients(60)
    site.route.mark()
    out = site.lvsctl(3, "drain-director")
    assert "drained" in out
    site.route.wait(lambda g: gw(3) not in g and len(g) == N - 1, 30, "d3 drained out of the route")
    ok, bad = site.survivors(clients)
    status = site.lvsctl(3, "status")
    site.lvsctl(3, "undrain-director")
    site.route.wait(lambda g: len(g) == N, 30, "d3 back after undrain")
    print(f"\ndrain: {ok}/60 connections survived; lost {bad[:5]}")
    assert "DRAINED" in status
    assert ok == 60, bad


def _keep_alive(clients: list[tuple[HttpClient, str]], stop: threading.Event, broken: list[str]) -> None:
    """A request on every connection every 10 s until ``stop``, recording the ones that break or
    change server: the test's servers close a connection idle for 30 s, and a restart under a
    loaded emulation (start, then its first checks and announce) can take longer than that."""
    dead: set[int] = set()
    while not stop.wait(10.0):
        for k, (c, first) in enumerate(clients):
            if k in dead or stop.is_set():
                continue
            try:
                if c.get() != first:
                    broken.append(f"{c.local_port}: another server")
                    dead.add(k)
            except (OSError, ConnectionError) as e:
                broken.append(f"{c.local_port}: {type(e).__name__}")
                dead.add(k)


def test_5_restart_with_on_stop_keep_never_leaves_the_route(site: Site) -> None:
    """Restart lvsd on director 1 (on_stop = "keep"): the route never loses it, no connection breaks."""
    clients = site.open_clients(60)
    site.route.mark()
    addrs = site.lab.popen("ip", "-o", "monitor", "address", ns="sd1", stdout=subprocess.PIPE, text=True)
    time.sleep(0.3)
    p = site.lvsd[1]
    p.terminate()
    p.wait(60)
    assert p.returncode == 0
    t0 = time.monotonic()
    broken: list[str] = []
    stop = threading.Event()
    pinger = threading.Thread(target=_keep_alive, args=(clients, stop, broken), daemon=True)
    pinger.start()
    try:
        site.start_lvsd(1)
        site.wait_lvsd(1)
        print(f"\nrestart: lvsd up and answering in {time.monotonic() - t0:.1f}s")
        time.sleep(2)  # a withdraw would show within this
    finally:
        stop.set()
        pinger.join(120)
    seen = [g for t, g in site.route.states if t >= site.route._since]
    ok, bad = site.survivors(clients)
    addrs.terminate()
    events = addrs.communicate(timeout=10)[0]
    deleted = [ln for ln in events.splitlines() if ln.startswith("Deleted") and f"{VIP}/32" in ln]
    print(f"\nrestart (keep): VIP deletions on d1's lvsd0 {deleted}; router route sizes during it "
          f"{[len(g) for g in seen]}, {ok}/60 connections survived")  # fmt: skip
    assert not deleted, "lvsd took the VIP off lvsd0 across a keep-restart"
    if all(len(g) == N for g in seen):  # no BGP session flapped under the emulation's load
        assert ok == 60 and not broken, (bad, broken)


def test_7_health_divergence_window(site: Site) -> None:
    """rs1 fails its checks on director 1 only (its SYNs to rs1 dropped), so d1's mh table lacks
    rs1 while d2's and d3's have it; director 2 dies in that window and its flows move to d1 and
    d3. Counts the connections lost (moved flows that d1 now maps to another server); the figure
    goes into docs/scale-out.md. Connections on rs1 itself are not counted against the window."""
    clients = site.open_clients()
    syn_to_rs1 = ["protocol", "ip", "u32", "match", "ip", "dst", "10.77.70.11/32", "match", "ip", "protocol", "6", "0xff",
                  "match", "u8", "0x02", "0x02", "at", "33", "action", "drop"]  # fmt: skip
    try:  # on the gate's clsact, before the gate (pref 1 < 100); non-SYNs go on to it
        sh("tc", "-n", "sd1", "filter", "add", "dev", "eth1", "egress", "pref", "1", *syn_to_rs1)
        end = time.monotonic() + 60
        while site.status(1)["health"].get("down", 0) < 1:
            assert time.monotonic() < end, "rs1 never went down on d1"
            time.sleep(0.3)
        assert site.status(3)["health"].get("down", 0) == 0
        site.route.mark()
        site.cut(2)
        try:
            site.route.wait(lambda g: gw(2) not in g, 30, "d2 withdrawn")
            ok, bad = site.survivors(clients)
        finally:
            site.cut(2, on=False)
    finally:
        sh("tc", "-n", "sd1", "filter", "del", "dev", "eth1", "egress", "pref", "1")
    site.settle(2)
    site.settle(1)
    on_rs1 = sum(1 for _, first in clients if first == "rs1")
    print(f"\nhealth divergence (rs1 down on d1 only, d2 dies): {ok}/{CONNS} survived, "
          f"{CONNS - ok} lost ({on_rs1} were on rs1); lost: {bad[:8]}")  # fmt: skip
    assert ok > 0, bad  # a measurement: docs/scale-out.md has the figure and the mitigations


@pytest.mark.skipif(not LONG, reason="the hold-timer figure: LVSD_SCALE_OUT_LONG=1")
def test_8_death_without_bfd_waits_for_the_hold_timer(site: Site) -> None:
    """The same death with BFD off on the router: only the hold timer (3 s) notices the cut."""
    conf = site.tmp / "bird-sr.conf"
    text = conf.read_text()
    conf.write_text(text.replace("  bfd on;\n", "  bfd off;\n"))
    sock = str(site.tmp / "bird-sr.ctl")
    try:
        sh("ip", "netns", "exec", "sr", "birdc", "-s", sock, "configure")
        time.sleep(3)
        site.route.wait(lambda g: len(g) == N, 60, "three paths without BFD")
        res = _death(site, "first")
    finally:
        conf.write_text(text)
        sh("ip", "netns", "exec", "sr", "birdc", "-s", sock, "configure")
    site.route.wait(lambda g: len(g) == N, 60, "three paths with BFD again")
    print(f"\nwithout BFD (hold time {HOLD} s): {res}")
    assert res["withdraw_s"] > BFD_DETECT, res  # BFD is off: the hold timer is what noticed
